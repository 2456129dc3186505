"""The in-process limit: decode + preprocess + collate + forward of the real request, no HTTP, one thread.

For each batch size B it times B decodes/preprocesses and one forward pass of the batch, exactly the work the
service does per batch, with the same torch thread count the server uses. The best samples/s is "the limit".
It also times batch 1 with the core idle for 1 ms before each request, as it is between a lone client's requests
(the response's round trip): on a shared virtual machine a core that idles comes back to cold caches.

    python bench/inprocess.py --models-dir models --model digits --threads 1 --out bench/results/inprocess.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from app.config import Settings
from app.engine.config import EngineConfig
from app.engine.pipeline import prepare_sample
from app.engine.predictor import Predictor, resolve_device
from app.inputs.limits import DecodeLimits
from app.inputs.parts import RawInputs
from app.inputs.preprocess import Preprocessor
from app.model.artifact import load_artifact

ASSETS = Path(__file__).parent / "assets"
IDLE_GAP_S = 0.001


def sample_inputs() -> RawInputs:
    return RawInputs(
        image=(ASSETS / "digit.png").read_bytes(),
        text=(ASSETS / "caption.txt").read_text(encoding="utf-8").strip(),
        audio=(ASSETS / "digit.wav").read_bytes(),
    )


def measure(model_dir: Path, threads: int, device: str, sizes: list[int], seconds: float, repeats: int) -> dict:
    if threads:
        torch.set_num_threads(threads)
    artifact = load_artifact(model_dir)
    predictor = Predictor(artifact, resolve_device(device))
    pre = Preprocessor(artifact.spec)
    raw, limits = sample_inputs(), EngineConfig.from_settings(Settings()).limits

    def prepare(raw: RawInputs, limits: DecodeLimits):  # noqa: ANN202 - the service's own decode+preprocess
        return prepare_sample(pre, raw, limits)

    predictor.warmup(max(sizes))
    rows = []
    for b in sizes:
        runs = []
        for _ in range(repeats):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                predictor.predict([prepare(raw, limits) for _ in range(b)])
                n += b
            runs.append(n / (time.perf_counter() - t0))
        t_prep = time.perf_counter()
        for _ in range(50):
            prepare(raw, limits)
        prep_ms = (time.perf_counter() - t_prep) / 50 * 1e3
        samples = [prepare(raw, limits)] * b
        t_fwd = time.perf_counter()
        for _ in range(max(3, 100 // b)):
            predictor.predict(samples)
        fwd_ms = (time.perf_counter() - t_fwd) / max(3, 100 // b) * 1e3
        rows.append({
            "batch_size": b,
            "samples_per_s": statistics.median(runs),
            "spread": [min(runs), max(runs)],
            "prep_ms_per_sample": prep_ms,
            "forward_ms_per_batch": fwd_ms,
            "batch_ms": b * prep_ms + fwd_ms,
        })
        print(f"B={b:3d}: {rows[-1]['samples_per_s']:8.1f} samples/s  (prep {prep_ms:.2f} ms/sample, "
              f"forward {fwd_ms:.2f} ms/batch)", flush=True)
    gapped = []
    if 1 in sizes:
        for _ in range(200):
            time.sleep(IDLE_GAP_S)
            t0 = time.perf_counter()
            predictor.predict([prepare(raw, limits)])
            gapped.append((time.perf_counter() - t0) * 1e3)
    best = max(rows, key=lambda r: r["samples_per_s"])
    return {
        "model": model_dir.name,
        "threads": torch.get_num_threads(),
        "device": str(predictor.device),
        "rows": rows,
        "limit_samples_per_s": best["samples_per_s"],
        "best_batch_size": best["batch_size"],
        "batch1_ms": next(r["batch_ms"] for r in rows if r["batch_size"] == 1) if 1 in sizes else None,
        "batch1_after_idle_ms": statistics.median(gapped) if gapped else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", type=Path, default=Path("models"))
    ap.add_argument("--model", default="digits")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="1,2,4,8,16,32,64")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    result = measure(args.models_dir / args.model, args.threads, args.device,
                     [int(s) for s in args.sizes.split(",")], args.seconds, args.repeats)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))


if __name__ == "__main__":
    main()
