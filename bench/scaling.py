"""Scaling on one host: `python bench/scaling.py` (needs Debian's `wrk`; ~15 minutes; `--quick` for a smoke run).

Unpinned, default settings unless a row says otherwise, load generator on the same cores (as on a real host):
1. The reference: two 1-thread in-process limits run at the same time, one per core (bench/inprocess.py), summed.
2. The service with 1 and 2 workers, each with its own models (per_worker) and feeding a model owner (owner), at
   each concurrency: req/s, p50/p99, server CPU per request (all its processes), mean batch.
3. A lone client: the default service against a plain FastAPI endpoint (bench/plain_fastapi.py) and the
   in-process batch-1 time.
4. Large uploads among small ones: small requests at concurrency 8, alone and with 12-megapixel phone photos
   arriving at 2 per second (open loop): the small requests' p99 and throughput.

Results: bench/results/scaling.md (+ scaling.json).
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw
from run import (
    BENCH,
    RESULTS,
    ROOT,
    WORK,
    Server,
    _cpu_s,
    build_request,
    machine_info,
    median_row,
    wrk,
)

CONFIGS = {  # label: environment
    "1 worker": {"FUSION_WORKERS": "1", "FUSION_MODEL_PLACEMENT": "per_worker"},
    "2 workers, per_worker (default)": {"FUSION_WORKERS": "2", "FUSION_MODEL_PLACEMENT": "per_worker"},
    "1 worker + owner": {"FUSION_WORKERS": "1", "FUSION_MODEL_PLACEMENT": "owner"},
    "2 workers + owner": {"FUSION_WORKERS": "2", "FUSION_MODEL_PLACEMENT": "owner"},
}
DEFAULT = "2 workers, per_worker (default)"
UNPINNED = {"FUSION_TORCH_THREADS": "0"}  # each process sizes its threads as deployed


def two_limits(args: argparse.Namespace) -> dict:
    """Two 1-thread in-process limits at once, one per core, and their sum."""
    procs, outs = [], []
    for core in ("0", "1"):
        out = WORK / f"inprocess-{core}.json"
        outs.append(out)
        procs.append(subprocess.Popen(
            ["taskset", "-c", core, sys.executable, str(BENCH / "inprocess.py"), "--models-dir", str(args.models_dir),
             "--model", args.model, "--threads", "1", "--seconds", "2", "--sizes", "1,32,64",
             "--repeats", str(args.repeats), "--out", str(out)], stdout=subprocess.DEVNULL))
    for p in procs:
        p.wait()
    results = [json.loads(o.read_text()) for o in outs]
    return {"each": [r["limit_samples_per_s"] for r in results], "sum": sum(r["limit_samples_per_s"] for r in results),
            "batch1_ms": min(r["batch1_ms"] for r in results),
            "batch1_after_idle_ms": min(r["batch1_after_idle_ms"] for r in results)}


def photo_body(url: str) -> tuple[Path, str]:
    """A 12-megapixel phone photo (4000x3000 JPEG, a dark digit on paper-toned light with sensor noise)."""
    rng = np.random.default_rng(0)
    im = Image.new("RGB", (4000, 3000), (214, 206, 190))
    ImageDraw.Draw(im).text((1500, 900), "7", fill=(40, 40, 50), font_size=1200)
    noisy = np.clip(np.asarray(im, dtype=np.int16) + rng.normal(0, 6, (3000, 4000, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, "JPEG", quality=85)
    req = httpx.Request("POST", f"{url}/v1/predict", files={"image": ("photo.jpg", buf.getvalue(), "image/jpeg")})
    body = WORK / "photo.bin"
    body.write_bytes(req.read())
    return body, req.headers["content-type"]


# The photo sender starts this long before the small requests are measured: its interpreter's start-up (and numpy's
# import) would otherwise land on the same cores in the measured window and be charged to the photos.
PHOTO_LEAD_S = 2.0


def photo_mix(server: Server, body: Path, ctype: str, photo: Path, photo_ctype: str, seconds: int) -> dict:
    """Small requests at concurrency 8 alone, then again while phone photos arrive at 2 per second (open loop,
    already under way when the measurement starts): both wrk rows and the photos' own statuses and latency."""
    alone = wrk(server, body, ctype, 8, seconds, pin=None)
    stream = subprocess.Popen(
        [sys.executable, str(BENCH / "openloop.py"), "--url", f"{server.url}/v1/predict", "--body", str(photo),
         "--content-type", photo_ctype, "--rate", "2", "--duration", str(seconds + PHOTO_LEAD_S)],
        stdout=subprocess.PIPE, text=True)
    time.sleep(PHOTO_LEAD_S)
    mixed = wrk(server, body, ctype, 8, seconds, pin=None)
    return {"alone": alone, "with_photos": mixed, "photos": json.loads(stream.communicate()[0])}


def plain_rps(args: argparse.Namespace, body: Path, ctype: str) -> dict:
    proc = subprocess.Popen([sys.executable, str(BENCH / "plain_fastapi.py"), "--port", str(args.port + 1),
                             "--models-dir", str(args.models_dir), "--model", args.model], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    plain = Attached(f"http://127.0.0.1:{args.port + 1}", proc)
    try:
        runs = [wrk(plain, body, ctype, 1, args.seconds, pin=None) for _ in range(args.repeats)]  # type: ignore[arg-type]
        return median_row(runs)
    finally:
        proc.terminate()
        proc.wait(30)


class Attached:
    """A server started elsewhere, as wrk() sees one (no batch histogram: it does not batch)."""

    def __init__(self, url: str, proc: subprocess.Popen[bytes]) -> None:
        self.url, self.proc = url, proc
        end = time.monotonic() + 120
        while time.monotonic() < end:
            try:
                httpx.get(f"{url}/docs", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("plain FastAPI did not start")

    def batch_hist(self) -> dict[str, float]:
        return {"sum": 0.0, "count": 0.0}

    def cpu_s(self) -> float:
        return _cpu_s(self.proc.pid)

    def rss_mib(self, key: str = "VmRSS") -> float:
        return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--model", default="digits")
    ap.add_argument("--concurrency", default="1,8,32,64,128")
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--port", type=int, default=8150)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.repeats, args.concurrency = 4, 1, "1,32"
    RESULTS.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    result: dict = {"machine": machine_info()}
    print("two in-process limits ...", flush=True)
    result["limits"] = two_limits(args)
    print(result["limits"], flush=True)
    body, ctype = build_request("http://127.0.0.1")
    photo, photo_ctype = photo_body("http://127.0.0.1")
    result["service"] = {}
    for label, env in CONFIGS.items():
        server = Server(args.port, args.models_dir, args.model, {**UNPINNED, **env}, pin=None)
        try:
            rows = []
            for c in (int(x) for x in args.concurrency.split(",")):
                row = median_row([wrk(server, body, ctype, c, args.seconds, pin=None) for _ in range(args.repeats)])
                rows.append(row)
                print(f"{label} c={c}: {row['rps']:.1f} req/s p50 {row['p50_ms']:.1f} p99 {row['p99_ms']:.1f} "
                      f"cpu {row['cpu_ms_per_request']:.2f} ms/req batch {row['mean_batch']:.1f}", flush=True)
            entry: dict = {"ready_s": server.ready_s, "closed": rows}
            mix = []
            for _ in range(args.repeats):
                mix.append(photo_mix(server, body, ctype, photo, photo_ctype, args.seconds))
            entry["photo_mix"] = mix
            print(f"{label} photos: small p99 {[round(m['alone']['p99_ms'], 1) for m in mix]} -> "
                  f"{[round(m['with_photos']['p99_ms'], 1) for m in mix]} ms", flush=True)
            result["service"][label] = entry
        finally:
            server.stop()
    print("plain FastAPI, concurrency 1 ...", flush=True)
    result["plain_fastapi_c1"] = plain_rps(args, body, ctype)
    (RESULTS / "scaling.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "scaling.md").write_text(report(result))
    print(f"wrote {RESULTS / 'scaling.md'}")


def report(r: dict) -> str:
    m, lim = r["machine"], r["limits"]
    lines = [
        "# Scaling on one host", "",
        f"{m['date']} · {m['cpu']} · {m['cores']} cores · torch {m['torch']} · "
        f"load before {' '.join(m['load_before'])}",
        "", "Unpinned; wrk on the same cores. Each point: the median of the runs (spread = min..max req/s).", "",
        f"Reference: two 1-thread in-process limits run at once, one per core: {lim['each'][0]:.0f} + "
        f"{lim['each'][1]:.0f} = **{lim['sum']:.0f} samples/s**; batch 1 in-process {lim['batch1_ms']:.2f} ms "
        f"({lim['batch1_after_idle_ms']:.2f} ms after an idle millisecond).", "",
        "| configuration | concurrency | req/s | spread | share of the two limits | p50 ms | p99 ms | CPU ms/req | "
        "mean batch |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, entry in r["service"].items():
        for x in entry["closed"]:
            lines.append(f"| {label} | {x['concurrency']} | {x['rps']:.1f} | {x['spread'][0]:.0f}..{x['spread'][1]:.0f}"
                         f" | {x['rps'] / lim['sum']:.2f} | {x['p50_ms']:.1f} | {x['p99_ms']:.1f} | "
                         f"{x['cpu_ms_per_request']:.2f} | {x['mean_batch']:.1f} |")
    plain = r["plain_fastapi_c1"]
    lines += ["", f"Plain FastAPI endpoint (bench/plain_fastapi.py, one process, batch 1), concurrency 1: "
              f"{plain['rps']:.1f} req/s, p50 {plain['p50_ms']:.2f} ms.", "",
              "Large uploads: small requests at concurrency 8, alone and with 12-megapixel JPEG photos at 2/s "
              "(p99 of the small requests, each repeat):", "",
              "| configuration | small p99 alone ms | small p99 with photos ms | rise | small req/s alone -> with | "
              "photos answered |", "|---|---|---|---:|---|---|"]
    for label, entry in r["service"].items():
        mix = entry["photo_mix"]
        alone = [x["alone"]["p99_ms"] for x in mix]
        both = [x["with_photos"]["p99_ms"] for x in mix]
        rise = sorted(b / a for a, b in zip(alone, both))[len(mix) // 2]
        rates = ", ".join("{:.0f} -> {:.0f}".format(x["alone"]["rps"], x["with_photos"]["rps"]) for x in mix)
        answered = ", ".join(str(x["photos"]["statuses"]) for x in mix)
        alone_s, both_s = ", ".join(f"{v:.1f}" for v in alone), ", ".join(f"{v:.1f}" for v in both)
        lines.append(f"| {label} | {alone_s} | {both_s} | x{rise:.2f} | {rates} | {answered} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
