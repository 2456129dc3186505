"""Same answers from every runtime: a generated data set (`fusion-serve make-data`) through the service's own decoding
and preprocessing, every modality subset of every row, in batches of 64, on the model as served before issue 20
(eager torch with the `torch.stft` front end: "main") and on each runtime; reports, per subset, how often the top
label differs from main's, the largest probability difference, and each runtime's accuracy.

    fusion-serve make-data --out /tmp/parity-data --size 600 --seed 7
    python bench/parity.py --data /tmp/parity-data --out bench/results/parity.md
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from app.engine.config import EngineConfig  # noqa: E402
from app.engine.pipeline import prepare_sample  # noqa: E402
from app.inputs.parts import RawInputs  # noqa: E402
from app.inputs.preprocess import Preprocessor  # noqa: E402
from app.model.batch import Sample  # noqa: E402
from bench.inprocess import build  # noqa: E402

BATCH = 64


def rows(data: Path) -> list[dict]:
    return [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines() if line.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--model", default="digits")
    ap.add_argument("--runtimes", default="torch,onnxruntime")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    runtimes = ["main", *args.runtimes.split(",")]
    predictors = {r: build(args.models_dir / args.model, "cpu", r, args.cache_dir) for r in runtimes}
    spec = predictors["main"].spec
    pre, limits = Preprocessor(spec), EngineConfig.from_settings(Settings()).limits
    labels = list(spec.labels)
    data = rows(args.data)
    full = [prepare_sample(pre, RawInputs(image=(args.data / r["image"]).read_bytes(), text=r["text"],
                                          audio=(args.data / r["audio"]).read_bytes()), limits) for r in data]
    truth = np.array([labels.index(r["label"]) for r in data])
    modalities = spec.ordered_modalities
    subsets = [s for n in range(1, len(modalities) + 1) for s in itertools.combinations(modalities, n)]
    lines = [
        f"# Same answers from every runtime ({args.model}, {len(data)} generated rows x {len(subsets)} input subsets)",
        "",
        f"Data: `fusion-serve make-data` ({args.data.name}, {len(data)} rows), decoded and preprocessed as the service "
        f"does, in batches of {BATCH}. Reference: \"main\" (eager torch, the `torch.stft` front end of before "
        "issue 20). Runtimes as served: " + ", ".join(
            f"{r} ({predictors[r].runtime.name}, parts {list(predictors[r].runtime.onnx_parts) or '-'}, load-time "
            f"parity {predictors[r].runtime.parity})" for r in runtimes[1:]) + ".",
        "",
        "| subset | runtime | top label differs from main | max probability difference | accuracy (main) |",
        "|---|---|---:|---:|---:|",
    ]
    worst = {r: (0, 0.0) for r in runtimes[1:]}
    total = 0
    for subset in subsets:
        samples = [Sample(**{m: getattr(s, m) if m in subset else None for m in ("image", "text", "audio")})
                   for s in full]
        probs = {}
        for r, p in predictors.items():
            out: list[np.ndarray] = []
            for i in range(0, len(samples), BATCH):
                out += [s.probabilities for s in p.predict(samples[i:i + BATCH])]
            probs[r] = np.stack(out)
        total += len(samples)
        ref = probs["main"]
        for r in runtimes[1:]:
            differs = int((probs[r].argmax(1) != ref.argmax(1)).sum())
            diff = float(np.abs(probs[r] - ref).max())
            worst[r] = (worst[r][0] + differs, max(worst[r][1], diff))
            acc_r = float((probs[r].argmax(1) == truth).mean())
            acc_m = float((ref.argmax(1) == truth).mean())
            lines.append(f"| {'+'.join(subset)} | {r} | {differs} of {len(samples)} | {diff:.2e} | "
                         f"{acc_r:.4f} ({acc_m:.4f}) |")
    lines += ["", "Over all subsets: " + "; ".join(
        f"{r}: top label differs on {n} of {total}, probabilities within {d:.2e}" for r, (n, d) in worst.items()) + "."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
