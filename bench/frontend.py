"""The log-mel front end: the fast one (app/model/audio_features.py) against the `torch.stft` reference
(bench/reference_logmel.py), one thread: their largest difference on real clips (a generated data set's, decoded and
preprocessed as the service does) and on noise, and their speed at several batch sizes, taking turns, in CPU time
of this thread (steadier than wall time on a shared machine) and in wall time.

    python bench/frontend.py --data /tmp/parity-data --out bench/results/frontend.md
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.inputs.audio import decode_audio  # noqa: E402
from app.inputs.limits import DecodeLimits  # noqa: E402
from app.config import Settings  # noqa: E402
from app.inputs.preprocess import Preprocessor  # noqa: E402
from app.model.artifact import load_spec  # noqa: E402
from app.model.audio_features import LogMel  # noqa: E402
from bench.reference_logmel import StftLogMel  # noqa: E402


def clips(data: Path | None, spec_dir: Path) -> torch.Tensor:
    spec = load_spec(spec_dir)
    pre = Preprocessor(spec)
    paths = [ROOT / "bench" / "assets" / "digit.wav"]
    if data is not None:
        paths += [data / json.loads(line)["audio"] for line in (data / "manifest.jsonl").read_text().splitlines()]
    return torch.stack([pre(audio=decode_audio(p.read_bytes(), DecodeLimits.from_settings(Settings()))).audio for p in paths])  # type: ignore[misc]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="a make-data folder whose clips to compare on")
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--model", default="digits")
    ap.add_argument("--sizes", default="1,4,16,64")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    spec = load_spec(args.models_dir / args.model)
    fast = LogMel.from_spec(spec.audio)  # type: ignore[arg-type]
    reference = StftLogMel(fast)
    real = clips(args.data, args.models_dir / args.model)
    noise = torch.randn(256, real.shape[1], generator=torch.Generator().manual_seed(0)) * 0.3
    with torch.inference_mode():
        err_real = max(float((fast(real[i:i + 64]) - reference(real[i:i + 64])).abs().max())
                       for i in range(0, len(real), 64))
        err_noise = float((fast(noise) - reference(noise)).abs().max())
    lines = [
        f"# Log-mel front end: fast vs the `torch.stft` reference ({args.model}: {spec.audio.n_fft}-point FFT, hop "  # type: ignore[union-attr]
        f"{spec.audio.hop_length}, {spec.audio.n_mels} mel bins, {spec.audio.clip_seconds} s at "  # type: ignore[union-attr]
        f"{spec.audio.sample_rate} Hz)",  # type: ignore[union-attr]
        "",
        f"Largest difference of any standardised log-mel value: **{err_real:.2e}** over {len(real)} real clips "
        f"(bench/assets + {args.data.name if args.data else 'no'} generated data), {err_noise:.2e} over 256 noise "
        "clips (tolerance 1e-4).",
        "",
        f"Speed, one thread, the two taking turns over {args.rounds} rounds (median, min..max), on the real clips:",
        "",
        "| batch | reference ms (CPU) | fast ms (CPU) | speed-up (CPU time) | spread of per-round speed-up | "
        "speed-up (wall) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    with torch.inference_mode():
        for b in [int(s) for s in args.sizes.split(",")]:
            wave = real[:b] if b <= len(real) else real.repeat(b // len(real) + 1, 1)[:b]
            n = max(2, 64 // b)
            cpu: dict[str, list[float]] = {"ref": [], "fast": []}
            wall: dict[str, list[float]] = {"ref": [], "fast": []}
            for module in (reference, fast):
                module(wave)
            for _ in range(args.rounds):
                for name, module in (("ref", reference), ("fast", fast)):
                    c0, t0 = time.thread_time(), time.perf_counter()
                    for _ in range(n):
                        module(wave)
                    cpu[name].append((time.thread_time() - c0) / n * 1e3)
                    wall[name].append((time.perf_counter() - t0) / n * 1e3)
            ratios = [r / f for r, f in zip(cpu["ref"], cpu["fast"])]
            ref_ms, fast_ms = statistics.median(cpu["ref"]), statistics.median(cpu["fast"])
            lines.append(f"| {b} | {ref_ms:.3f} | {fast_ms:.3f} | x{ref_ms / fast_ms:.2f} | "
                         f"x{min(ratios):.2f}..x{max(ratios):.2f} | "
                         f"x{statistics.median(wall['ref']) / statistics.median(wall['fast']):.2f} |")
            print(lines[-1], flush=True)
    lines += ["", f"Load average at the end: {' '.join(open('/proc/loadavg').read().split()[:3])} (2 cores)."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:4]))


if __name__ == "__main__":
    main()
