"""What the HTTP stack itself costs per request, against the whole service: `python bench/http_floor.py`.

Three servers take the benchmark request (the same multipart body as bench/run.py), each pinned to core 0 with wrk
on core 1, taking turns for `--rounds` rounds:
1. `raw`: a bare ASGI app on uvicorn (httptools, uvloop) that reads the body and returns a fixed JSON document;
2. `fastapi`: the same as a FastAPI route with the predict route's own parameters (`request`, `top_k`, `explain`),
   no middleware;
3. `fusion-serve`: the service, one worker, one torch thread; its CPU split into the event loop (HTTP, multipart,
   middleware, the response) and the other threads (decoding, preprocessing and the model, batched).

From these, the most any Python service on this stack could reach of the in-process limit, per core: the model's
own time per request over that time plus the stack's floor. Results: bench/results/http_floor.md (+ .json).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from run import (
    CLIENT_CORE,
    RESULTS,
    SERVER_CORE,
    WORK,
    Server,
    build_request,
    machine_info,
    pinned,
    wrk,
)
from scaling import Attached

ANSWER = (b'{"model":"digits","version":"2","probabilities":{"0":0.0004,"1":0.012,"2":0.0001,"3":0.0017,"4":0.0003,'
          b'"5":0.0001,"6":0.0003,"7":0.9839,"8":0.0002,"9":0.0009}}')


def raw_app():
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]})
        await send({"type": "http.response.body", "body": ANSWER})

    return app


def fastapi_app():
    from fastapi import FastAPI, Request, Response

    app = FastAPI()

    @app.post("/v1/predict")
    async def predict(request: Request, top_k: int = 5, explain: bool = False) -> Response:
        async for _ in request.stream():
            pass
        return Response(ANSWER, media_type="application/json")

    return app


def thread_cpu_s(pid: int, tid: int) -> float:
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(server: object, body: Path, ctype: str, c: int, seconds: int, loop_of: int | None) -> dict:
    """One wrk run; with `loop_of` (a pid), also the CPU its main thread (the event loop) spent per request."""
    before = thread_cpu_s(loop_of, loop_of) if loop_of else 0.0
    row = wrk(server, body, ctype, c, seconds)  # type: ignore[arg-type]
    if loop_of:
        row["loop_cpu_ms_per_request"] = (thread_cpu_s(loop_of, loop_of) - before) * 1e3 / max(row["requests"], 1)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", choices=["raw", "fastapi"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=8170)
    ap.add_argument("--models-dir", type=Path, default=Path(__file__).resolve().parents[1] / "models")
    ap.add_argument("--model", default="digits")
    ap.add_argument("--concurrency", default="1,32")
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.serve:
        import uvicorn

        app = raw_app() if args.serve == "raw" else fastapi_app()
        uvicorn.run(app, host="127.0.0.1", port=args.port, http="httptools", access_log=False, log_level="warning")
        return
    WORK.mkdir(parents=True, exist_ok=True)
    body, ctype = build_request("http://127.0.0.1")
    servers: dict[str, object] = {}
    procs = []
    for i, kind in enumerate(("raw", "fastapi")):
        port = args.port + 1 + i
        proc = subprocess.Popen([*pinned(SERVER_CORE), sys.executable, __file__, "--serve", kind, "--port", str(port)])
        procs.append(proc)
        servers[kind] = Attached(f"http://127.0.0.1:{port}", proc)  # type: ignore[arg-type]
    service = Server(args.port, args.models_dir, args.model, {"FUSION_WORKERS": "1"})
    servers["fusion-serve"] = service
    concurrency = [int(x) for x in args.concurrency.split(",")]
    # Keyed by str(concurrency), as JSON keeps them: the report reads the results written here the same way.
    runs: dict[str, dict[str, list[dict]]] = {name: {str(c): [] for c in concurrency} for name in servers}
    try:
        for r in range(args.rounds):
            for c in concurrency:
                for name, server in servers.items():
                    loop_of = service.proc.pid if server is service else None
                    row = measure(server, body, ctype, c, args.seconds, loop_of)
                    runs[name][str(c)].append(row)
                    print(f"round {r} c={c} {name}: {row['rps']:.0f} req/s, {row['cpu_ms_per_request']:.3f} ms CPU "
                          f"per request" + (f" (event loop {row['loop_cpu_ms_per_request']:.3f})" if loop_of else ""),
                          flush=True)
    finally:
        service.stop()
        for proc in procs:
            proc.terminate()
            proc.wait(30)
    result = {"machine": machine_info(), "server_core": SERVER_CORE, "client_core": CLIENT_CORE, "runs": runs}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "http_floor.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "http_floor.md").write_text(report(result, concurrency))
    print((RESULTS / "http_floor.md").read_text())


def _median(rows: list[dict], key: str) -> tuple[float, float, float]:
    values = [row[key] for row in rows]
    return statistics.median(values), min(values), max(values)


def report(result: dict, concurrency: list[int]) -> str:
    m, runs = result["machine"], result["runs"]
    lines = [
        "# The HTTP stack's floor", "",
        f"{m['date']} · {m['cpu']} · {m['cores']} cores · torch {m['torch']} · load before {' '.join(m['load_before'])}",
        "",
        ("Each server pinned to one core, wrk on the other; the benchmark request (bench/assets: image, caption, "
         "clip). Median of the rounds (spread min..max)."),
        "",
        "| concurrency | server | req/s | CPU ms/request | of it, event loop |", "|---:|---|---:|---:|---:|",
    ]
    for c in concurrency:
        for name, by_c in runs.items():
            rows = by_c[str(c)]
            rps, cpu = _median(rows, "rps"), _median(rows, "cpu_ms_per_request")
            loop = (f"{statistics.median(r['loop_cpu_ms_per_request'] for r in rows):.3f}"
                    if "loop_cpu_ms_per_request" in rows[0] else "")
            lines.append(f"| {c} | {name} | {rps[0]:.0f} | {cpu[0]:.3f} ({cpu[1]:.3f}..{cpu[2]:.3f}) | {loop} |")
    lines += ["", "## The most the stack allows", ""]
    for c in concurrency:
        service = runs["fusion-serve"][str(c)]
        total = statistics.median(r["cpu_ms_per_request"] for r in service)
        loop = statistics.median(r["loop_cpu_ms_per_request"] for r in service)
        model = total - loop
        for floor in ("raw", "fastapi"):
            rows = runs[floor][str(c)]
            cost = statistics.median(r["cpu_ms_per_request"] for r in rows)
            lines.append(f"- concurrency {c}: the model's threads {model:.3f} ms per request; with nothing but the "
                         f"{floor} floor ({cost:.3f} ms) around them, a core would give at most "
                         f"**{model / (model + cost):.2f}** of the in-process rate (the service: "
                         f"{model / total:.2f}).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
