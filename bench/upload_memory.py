"""Memory held per upload in flight, and the server's peak RSS under a flood of large uploads (issue 23).

`python bench/upload_memory.py --source PATH [--source PATH ...] [--rounds N] [--out STEM]`: each PATH is a checkout whose `app`
is served (e.g. `git archive` of an older commit, and this one), as a real `fusion-serve serve` process on the
shipped model, one after the other on the same machine.

1. In flight: `--in-flight` concurrent uploads of one large JPEG (Pillow noise, 4000x3000 at quality 96: about
   14.6 MiB), with the first forward pass held for `--hold-s` so that they all wait in the queue together. The rise
   of the server's peak RSS (VmHWM, reset before the load) over its idle RSS, divided by the uploads: the memory
   each upload holds while in flight (its share of one image being decoded included).
2. Flood (only where the checkout has FUSION_MAX_INFLIGHT_BYTES): `--flood` concurrent uploads of the same JPEG to a
   server with `--budget`; the answers by status (every one must be 200 or 503 with Retry-After) and the peak RSS
   over idle, against the budget.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

BENCH = Path(__file__).resolve().parent
WORK = BENCH / "work"
MIB = 2**20

# The real CLI, with every forward pass after the first `argv[1]` seconds long (so that uploads queue up).
SERVE = """
import sys, time
from app.engine import predictor
from app.cli import main
predict, held = predictor.Predictor.predict, [False]
def slow(self, samples, explain=()):
    if not held[0]:
        held[0] = True
        time.sleep(float(sys.argv[1]))
    return predict(self, samples, explain)
predictor.Predictor.predict = slow
sys.exit(main(["serve"]))
"""


def large_jpeg() -> bytes:
    path = WORK / "noise-4000x3000-q96.jpg"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buf, format="JPEG", quality=96)
        path.write_bytes(buf.getvalue())
    return path.read_bytes()


def multipart(image: bytes) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/v1/predict", files={"image": ("big.jpg", image, "image/jpeg")})
    return request.read(), request.headers["content-type"]


class Served:
    """A `fusion-serve serve` process of one checkout, ready."""

    def __init__(self, source: Path, hold_s: float, env: dict[str, str]) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.log = WORK / f"upload-memory-{port}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("FUSION_")}
        full_env.update({"FUSION_MODELS_DIR": str(BENCH.parent / "models"), "FUSION_HOST": "127.0.0.1",
                         "FUSION_PORT": str(port), "FUSION_WARMUP": "false", "PYTHONDONTWRITEBYTECODE": "1", **env})
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", SERVE, str(hold_s)], cwd=source, env=full_env,
                                         stdout=log, stderr=subprocess.STDOUT)
        end = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"the server did not become ready: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def status(self, key: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(key)

    def reset_peak(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def post_all(url: str, body: bytes, content_type: str, n: int) -> list[httpx.Response | str]:
    """`n` concurrent uploads of `body`, each streamed in 256 KiB pieces (so the client buffers little)."""

    async def pieces():  # noqa: ANN202
        view = memoryview(body)
        for i in range(0, len(body), 256 * 1024):
            yield bytes(view[i : i + 256 * 1024])

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        async def one() -> httpx.Response | str:
            try:
                return await client.post("/v1/predict", content=pieces(), headers={
                    "content-type": content_type, "content-length": str(len(body))})
            except httpx.HTTPError as exc:
                return type(exc).__name__

        return await asyncio.gather(*(one() for _ in range(n)))


def outcome(r: httpx.Response | str) -> str:
    if isinstance(r, str):
        return r
    if r.status_code == 503:
        return "503" if int(r.headers.get("retry-after", "0")) >= 1 else "503 without Retry-After"
    return str(r.status_code)


def in_flight(source: Path, body: bytes, content_type: str, n: int, hold_s: float) -> dict:
    server = Served(source, hold_s, {})
    try:
        time.sleep(1)
        idle = server.status("VmRSS")
        server.reset_peak()
        t0 = time.perf_counter()
        results = asyncio.run(post_all(server.url, body, content_type, n))
        seconds = time.perf_counter() - t0
        peak = server.status("VmHWM")
        time.sleep(2)
        after = server.status("VmRSS")
    finally:
        server.stop()
    counts = Counter(outcome(r) for r in results)
    return {"uploads": n, "body_mib": len(body) / MIB, "answers": dict(counts), "seconds": round(seconds, 1),
            "idle_rss_mib": idle / MIB, "peak_rss_mib": peak / MIB, "rss_after_mib": after / MIB,
            "mib_per_upload": (peak - idle) / MIB / n}


def flood(source: Path, body: bytes, content_type: str, n: int, budget: str) -> dict:
    server = Served(source, 0.0, {"FUSION_MAX_INFLIGHT_BYTES": budget})
    try:
        limits = httpx.get(f"{server.url}/v1/models").json()["models"][0]["limits"]
        time.sleep(1)
        idle = server.status("VmRSS")
        server.reset_peak()
        t0 = time.perf_counter()
        results = asyncio.run(post_all(server.url, body, content_type, n))
        seconds = time.perf_counter() - t0
        peak = server.status("VmHWM")
        held = httpx.get(f"{server.url}/metrics").text
    finally:
        server.stop()
    counts = Counter(outcome(r) for r in results)
    in_use = next(float(line.split()[1]) for line in held.splitlines() if line.startswith("fusion_inflight_bytes "))
    return {"uploads": n, "budget_mib": limits["max_inflight_bytes"] / MIB,
            "reserve_mib": limits["inflight_bytes_reserve"] / MIB, "answers": dict(counts),
            "seconds": round(seconds, 1), "idle_rss_mib": idle / MIB, "peak_rss_mib": peak / MIB,
            "peak_over_idle_mib": (peak - idle) / MIB, "bytes_held_after": in_use}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, action="append", required=True, help="a checkout to serve")
    ap.add_argument("--in-flight", type=int, default=48)
    ap.add_argument("--hold-s", type=float, default=3.0)
    ap.add_argument("--flood", type=int, default=200)
    ap.add_argument("--budget", default="256MiB")
    ap.add_argument("--rounds", type=int, default=2, help="each source in turn, this many times")
    ap.add_argument("--out", type=Path, help="writes OUT.json and OUT.md")
    args = ap.parse_args()
    body, content_type = multipart(large_jpeg())
    machine = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cores": os.cpu_count(),
               "load_before": open("/proc/loadavg").read().split()[:3]}
    runs: dict[str, list[dict]] = {str(s.resolve()): [] for s in args.source}
    for rnd in range(args.rounds):
        for source in (s.resolve() for s in args.source):
            row = {"in_flight": in_flight(source, body, content_type, args.in_flight, args.hold_s)}
            print(f"round {rnd} {source} in flight:", json.dumps(row["in_flight"]), flush=True)
            if "max_inflight_bytes" in (source / "app" / "config.py").read_text():
                row["flood"] = flood(source, body, content_type, args.flood, args.budget)
                print(f"round {rnd} {source} flood:", json.dumps(row["flood"]), flush=True)
            runs[str(source)].append(row)
    if args.out:
        args.out.with_suffix(".json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                             "machine": machine, "runs": runs}, indent=2))
        args.out.with_suffix(".md").write_text(report(args, machine, runs, len(body)))


def report(args: argparse.Namespace, machine: dict, runs: dict[str, list[dict]], body: int) -> str:
    lines = [
        "# Memory of uploads in flight (issue 23)", "",
        f"`python bench/upload_memory.py {' '.join(f'--source {s}' for s in args.source)} --rounds {args.rounds}`"
        f" on {machine['date']}, {machine['cores']} cores, load average {' '.join(machine['load_before'])} "
        "(a shared machine). The upload: a 4000x3000 noise JPEG at quality 96, "
        f"{body / MIB:.1f} MiB as a multipart body; the shipped model; `FUSION_WARMUP=false`.", "",
        f"## {args.in_flight} uploads in flight together (queued behind a forward pass held {args.hold_s:g} s)", "",
        "| checkout | round | answers | idle RSS MiB | peak RSS MiB | RSS 2 s after MiB | MiB per upload in flight |",
        "|---|---|---|---|---|---|---|",
    ]
    for source, rows in runs.items():
        for i, row in enumerate(rows):
            r = row["in_flight"]
            lines.append(f"| {source} | {i} | {r['answers']} | {r['idle_rss_mib']:.0f} | {r['peak_rss_mib']:.0f} | "
                         f"{r['rss_after_mib']:.0f} | {r['mib_per_upload']:.1f} |")
    floods = [(source, i, row["flood"]) for source, rows in runs.items() for i, row in enumerate(rows) if "flood" in row]
    if floods:
        lines += ["", f"## {args.flood} concurrent uploads, FUSION_MAX_INFLIGHT_BYTES={args.budget}", "",
                  "| checkout | round | budget MiB (reserve) | answers | seconds | idle RSS MiB | peak RSS MiB | "
                  "peak over idle MiB | bytes held after |", "|---|---|---|---|---|---|---|---|---|"]
        for source, i, r in floods:
            lines.append(f"| {source} | {i} | {r['budget_mib']:.0f} ({r['reserve_mib']:.0f}) | {r['answers']} | "
                         f"{r['seconds']} | {r['idle_rss_mib']:.0f} | {r['peak_rss_mib']:.0f} | "
                         f"{r['peak_over_idle_mib']:.0f} | {r['bytes_held_after']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
