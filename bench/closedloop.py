"""Closed-loop HTTP/1.1 load generator in Python, for machines without wrk: C keep-alive connections, each posting
the same prebuilt request as soon as the previous answer arrived, spread over P processes (asyncio in each).

    python bench/closedloop.py --url http://127.0.0.1:8000/v1/predict --body body.bin \
        --content-type 'multipart/form-data; boundary=...' --connections 64 --duration 10 --processes 4
Prints one JSON object: requests, rps, status counts, errors, latency percentiles (ms).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time
from urllib.parse import urlsplit

import numpy as np


async def _connection(host: str, port: int, request: bytes, deadline: float, latencies: list[float],
                      statuses: dict[int, int], errors: list[str]) -> None:
    reader = writer = None
    while time.perf_counter() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")  # type: ignore[union-attr]
            status = int(head.split(b" ", 2)[1])
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                elif name.strip().lower() == b"connection" and value.strip().lower() == b"close":
                    close = True
            await reader.readexactly(length)  # type: ignore[union-attr]
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
            if close:
                writer.close()
                reader = writer = None
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            errors.append(type(exc).__name__)
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


def _worker(args: tuple[str, int, bytes, int, float, float]) -> dict:
    host, port, request, connections, start_at, duration = args
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []

    async def main() -> None:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        deadline = time.perf_counter() + duration
        await asyncio.gather(*(_connection(host, port, request, deadline, latencies, statuses, errors)
                               for _ in range(connections)))

    asyncio.run(main())
    return {"latencies": latencies, "statuses": statuses, "errors": errors}


def run(url: str, body: bytes, content_type: str, connections: int, duration: float, processes: int) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    processes = max(1, min(processes, connections))
    shares = [connections // processes + (1 if i < connections % processes else 0) for i in range(processes)]
    start_at = time.time() + 0.5  # every process starts together
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.map(_worker, [(host, port, request, n, start_at, duration) for n in shares])
    latencies = np.array([x for r in results for x in r["latencies"]]) * 1e3
    statuses: dict[str, int] = {}
    for r in results:
        for status, n in r["statuses"].items():
            statuses[str(status)] = statuses.get(str(status), 0) + n
    errors = sum(len(r["errors"]) for r in results)
    ok = statuses.get("200", 0)
    pct = (lambda q: float(np.percentile(latencies, q))) if len(latencies) else (lambda q: float("nan"))
    return {
        "connections": connections,
        "requests": int(len(latencies)),
        "rps": ok / duration,
        "statuses": statuses,
        "errors": errors + sum(n for s, n in statuses.items() if s != "200"),
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--body", required=True)
    ap.add_argument("--content-type", required=True)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--processes", type=int, default=1)
    args = ap.parse_args()
    with open(args.body, "rb") as f:
        body = f.read()
    print(json.dumps(run(args.url, body, args.content_type, args.connections, args.duration, args.processes)))


if __name__ == "__main__":
    main()
