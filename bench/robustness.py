"""Accuracy and calibration of a served artifact on a manifest's splits, modality subset by subset.

Measures a model as shipped (its own config.json preprocessing and calibration temperatures) on the in-distribution
test split and on `make-data`'s held-out split (made differently from the training data), so two artifacts (the
model before and after a retraining) can be compared on the same data:

    python bench/robustness.py --artifact models/digits --data data/digits/manifest.jsonl --out bench/results/x.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.inputs.preprocess import Preprocessor  # noqa: E402
from app.model.artifact import load_artifact  # noqa: E402
from app.training import evaluation as ev  # noqa: E402
from app.training.dataset import ManifestDataset, loader  # noqa: E402
from app.training.manifest import read_manifest  # noqa: E402


def measure(artifact_dir: Path, manifest: Path, splits: tuple[str, ...] = ("test", "heldout"), workers: int = 1
            ) -> dict:
    artifact = load_artifact(artifact_dir)
    spec = artifact.spec
    rows = read_manifest(manifest, labels=spec.labels)
    keys = ev.subsets(spec.modalities)
    out: dict = {"artifact": str(artifact_dir), "manifest": str(manifest), "splits": {}}
    for split in splits:
        dataset = ManifestDataset(rows.split(split), spec.labels, Preprocessor(spec))
        if not len(dataset):
            continue
        started = time.perf_counter()
        logits = ev.predict_subsets(artifact.model, loader(dataset, 256, workers), keys)
        out["splits"][split] = {
            "examples": len(dataset),
            "seconds": time.perf_counter() - started,
            "subsets": {
                ev.subset_name(k): {
                    "accuracy": ev.accuracy(lg),
                    "ece": ev.ece(lg, spec.temperature_for(k)),
                    "ece_uncalibrated": ev.ece(lg),
                    "count": len(lg.targets),
                }
                for k, lg in logits.items()
            },
        }
    return out


def to_markdown(result: dict) -> str:
    lines = []
    for split, r in result["splits"].items():
        lines += [f"### {result['artifact']} on the {split} split ({r['examples']} examples)", "",
                  "| inputs | accuracy | ECE (calibrated) |", "|---|---:|---:|"]
        for name, x in sorted(r["subsets"].items(), key=lambda kv: (kv[0].count("+"), kv[0])):
            lines.append(f"| {name.replace('+', ' + ')} | {100 * x['accuracy']:.1f}% | {100 * x['ece']:.1f}% |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="manifest.jsonl (make-data's)")
    parser.add_argument("--splits", default="test,heldout")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure(args.artifact, args.data, tuple(args.splits.split(",")), args.workers)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(to_markdown(result))


if __name__ == "__main__":
    main()
