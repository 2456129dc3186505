"""`fusion-serve train`: manifest -> trained, calibrated, evaluated artifact folder the service serves as is.

The loop and evaluation live in `fitting`, the fusion-type comparison in `comparison`, fine-tuning from an
artifact (`--init-from`) in `init_from`, the flags in `options`.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from app.model.artifact import save_artifact
from app.training import init_from, report
from app.training.comparison import compare, comparisons
from app.training.fitting import load_data, train_one
from app.training.options import TrainConfig, add_arguments, config_from_args
from app.training.runtime import load_image_weights

__all__ = ["TrainConfig", "add_arguments", "compare", "config_from_args", "load_image_weights", "run", "run_compare",
           "train"]

log = logging.getLogger(__name__)


def train(cfg: TrainConfig) -> Path:
    """Train, calibrate, evaluate, optionally compare fusion types, and write the artifact folder."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    source = init_from.read(cfg.init_from) if cfg.init_from is not None else None
    data = load_data(cfg, source=source)
    log.info("data: %d train / %d val / %d test / %d held-out examples, labels %s, modalities %s", len(data.train),
             len(data.val), len(data.test) if data.test else 0, len(data.heldout) if data.heldout else 0,
             ", ".join(data.manifest.labels), ", ".join(data.spec.ordered_modalities))
    result = train_one(cfg, data, source)
    training = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items() if k not in ("manifest", "out")}
    if source is not None:
        training["init_from"] = source.record()
    metrics = {
        **result.metrics,
        "history": result.history,
        "training": training,
        "data": _data_info(cfg.manifest),
        "train_seconds": time.perf_counter() - t0,
        "parameters": result.model.parameter_count(),
    }
    if cfg.compare_fusions:
        metrics |= comparisons(cfg, data, result.spec, metrics, result.model.parameter_count())
    report.write_plots(cfg.out, result.spec, metrics)
    card = report.card(result.spec, metrics)
    save_artifact(cfg.out, result.spec, result.model, card, metrics=metrics)
    log.info("wrote %s: test accuracy %.3f, ECE over all subsets %.3f -> %.3f", cfg.out, metrics["accuracy"],
             metrics["ece_all_subsets_before"], metrics["ece_all_subsets_after"])
    return cfg.out


def _data_info(manifest: Path) -> dict[str, Any]:
    info = manifest.parent / "dataset.json"
    if info.is_file():
        try:
            return {"manifest": manifest.name, "generator": json.loads(info.read_text(encoding="utf-8"))}
        except json.JSONDecodeError:
            pass
    return {"manifest": manifest.name}


def run(args: argparse.Namespace) -> Path:
    return train(config_from_args(args))


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", type=Path, required=True, help="the manifest the artifact was trained on")
    parser.add_argument("--artifact", type=Path, required=True, help="artifact folder made by train")
    parser.add_argument("--threads", type=int, default=0)


def run_compare(args: argparse.Namespace) -> Path:
    return compare(args.manifest, args.artifact, args.threads)
