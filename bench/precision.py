"""Accuracy of a model computed in bfloat16 and float16 against float32: the delta an artifact's `dtype` costs.

The service computes in an artifact's `dtype` (`config.json`) on CUDA only; this script measures what that costs
on the model's own test split, modality subset by subset: accuracy, how many predictions change, and how far the
calibrated probabilities move. Without a GPU it emulates the reduced precision with CPU autocast (the same
rounding of inputs and weights; accumulation order can differ from CUDA kernels, so treat small differences as
indicative).

    python bench/precision.py --models-dir models --model digits --data data/digits/manifest.jsonl
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from app.engine.predictor import resolve_device
from app.inputs.preprocess import Preprocessor
from app.model.artifact import load_artifact
from app.training.dataset import load_examples
from app.training.evaluation import predict_logits, subset_name, subsets
from app.training.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def measure(models_dir: Path, model: str, manifest: Path, device_name: str, threads: int) -> dict:
    if threads:
        torch.set_num_threads(threads)
    artifact = load_artifact(models_dir / model)
    spec = artifact.spec
    device = resolve_device(device_name)
    net = artifact.model.to(device).eval()
    rows = read_manifest(manifest, labels=spec.labels).split("test")
    if not rows:
        raise SystemExit(f"{manifest} has no test split")
    examples = load_examples(rows, spec.labels, Preprocessor(spec))
    result: dict = {"model": model, "device": str(device), "examples": len(examples), "subsets": {}}
    for keep in subsets(spec.ordered_modalities):
        name = subset_name(keep)
        temperature = spec.temperature_for(keep)
        per_dtype: dict[str, dict] = {}
        reference = None
        for dtype_name, dtype in DTYPES.items():
            started = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                lg = predict_logits(net, examples, keep)
            probs = torch.softmax(lg.logits.float().cpu() / temperature, dim=-1)
            accuracy = float((probs.argmax(1) == lg.targets).float().mean())
            row = {"accuracy": accuracy, "seconds": time.perf_counter() - started}
            if reference is None:
                reference = probs
            else:
                delta = (probs - reference).abs()
                row |= {
                    "changed_predictions": int((probs.argmax(1) != reference.argmax(1)).sum()),
                    "max_abs_prob_delta": float(delta.max()),
                    "mean_abs_prob_delta": float(delta.mean()),
                }
            per_dtype[dtype_name] = row
        result["subsets"][name] = {"examples": len(lg.targets), **per_dtype}
        print(name, {k: round(v["accuracy"], 4) for k, v in per_dtype.items()}, flush=True)
    return result


def to_markdown(r: dict, when: str) -> str:
    lines = [
        "# Reduced precision: accuracy against float32",
        "",
        f"{when} · model `{r['model']}` · {r['examples']} test examples · device `{r['device']}`"
        + (" (CPU autocast emulating the CUDA dtypes)" if r["device"] == "cpu" else ""),
        "",
        (
            "| inputs | examples | float32 acc | bfloat16 acc | changed | max / mean abs Δp | float16 acc | changed | "
            "max / mean abs Δp |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in r["subsets"].items():
        f32, bf16, f16 = s["float32"], s["bfloat16"], s["float16"]
        lines.append(
            f"| {name} | {s['examples']} | {f32['accuracy']:.4f} | {bf16['accuracy']:.4f} | "
            f"{bf16['changed_predictions']} | {bf16['max_abs_prob_delta']:.4f} / {bf16['mean_abs_prob_delta']:.5f} | "
            f"{f16['accuracy']:.4f} | {f16['changed_predictions']} | "
            f"{f16['max_abs_prob_delta']:.4f} / {f16['mean_abs_prob_delta']:.5f} |"
        )
    lines += ["", "Δp: calibrated class probabilities against float32's; changed: predictions whose top class differs.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--model", default="digits")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "digits" / "manifest.jsonl",
                    help="manifest with the test split (the default model's: `fusion-serve make-data`, seed 0)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "precision.md")
    args = ap.parse_args()
    r = measure(args.models_dir, args.model, args.data, args.device, args.threads)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    args.out.write_text(to_markdown(r, when), encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
