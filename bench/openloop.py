"""Open-loop HTTP/1.1 load generator: requests start on a Poisson schedule whatever the server's state.

Latency is measured from each request's *scheduled* start, so a server that falls behind is charged for the wait
(no coordinated omission). Requests reuse keep-alive connections from a pool; when every connection is busy a new
one is opened, up to --max-connections.

    python bench/openloop.py --url http://127.0.0.1:8000/v1/predict --body body.bin \
        --content-type 'multipart/form-data; boundary=...' --rate 200 --duration 20
Prints one JSON object: sent, status counts, errors, achieved rate, latency percentiles (ms).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit

import numpy as np

# Idle pooled connections older than this are not reused: the server closes idle keep-alive connections after
# FUSION_KEEP_ALIVE_S (5 s by default), and writing a request into one it has just closed is an error no server
# could avoid (HTTP clients retire them the same way).
MAX_IDLE_S = 3.0


class Pool:
    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.idle_since: dict[int, float] = {}
        self.open = 0
        self.cond = asyncio.Condition()

    async def get(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with self.cond:
            while True:
                while not self.idle and self.open >= self.limit:
                    await self.cond.wait()
                if not self.idle:
                    break
                conn = self.idle.pop()
                since = self.idle_since.pop(id(conn[1]), 0.0)
                if time.perf_counter() - since < MAX_IDLE_S and not conn[0].at_eof():
                    return conn
                conn[1].close()  # stale: the server may have closed it
                self.open -= 1
            self.open += 1
        try:
            return await asyncio.open_connection(self.host, self.port)
        except OSError:
            async with self.cond:
                self.open -= 1
                self.cond.notify()
            raise

    async def put(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
        async with self.cond:
            if conn is None:
                self.open -= 1
            else:
                self.idle.append(conn)
                self.idle_since[id(conn[1])] = time.perf_counter()
            self.cond.notify()


async def one(pool: Pool, request: bytes, scheduled: float, results: list, statuses: dict) -> None:
    conn = None
    try:
        conn = await pool.get()
        reader, writer = conn
        writer.write(request)
        status_line = await reader.readline()
        status = int(status_line.split()[1])
        length, close = 0, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        await reader.readexactly(length)
        results.append(time.perf_counter() - scheduled)
        statuses[status] = statuses.get(status, 0) + 1
        if close:
            writer.close()
            conn = None
    except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
        statuses["error"] = statuses.get("error", 0) + 1
        if conn is not None:
            conn[1].close()
        conn = None
    finally:
        await pool.put(conn)


async def run(url: str, body: bytes, content_type: str, rate: float, duration: float, max_conn: int, seed: int) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    method = "POST" if body else "GET"
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if body:
        head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    request = (head + "\r\n").encode() + body
    pool = Pool(host, port, max_conn)
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, size=int(rate * duration * 1.5) + 10)
    results: list[float] = []
    statuses: dict = {}
    tasks = []
    start = time.perf_counter()
    t = start
    for gap in gaps:
        t += gap
        if t - start > duration:
            break
        delay = t - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(pool, request, t, results, statuses)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    lat = np.array(results) * 1e3 if results else np.array([float("nan")])
    return {
        "target_rate": rate,
        "sent": len(tasks),
        "achieved_rate": len(tasks) / duration,
        "completed_rate": len(results) / elapsed,
        "statuses": {str(k): v for k, v in statuses.items()},
        "connections_opened": pool.open,
        "latency_ms": {q: float(np.percentile(lat, p)) for q, p in (("p50", 50), ("p90", 90), ("p99", 99))}
        | {"max": float(lat.max()), "mean": float(lat.mean())},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--body", default=None, help="file with the request body (POST); none: GET")
    ap.add_argument("--content-type", default="application/octet-stream")
    ap.add_argument("--rate", type=float, required=True, help="mean requests per second (Poisson arrivals)")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--max-connections", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    body = open(args.body, "rb").read() if args.body else b""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    out = asyncio.run(run(args.url, body, args.content_type, args.rate, args.duration, args.max_connections, args.seed))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
