"""The fusion-type and single-modality comparison (`train --compare-fusions`, `fusion-serve compare`): every
other fusion type and one model per modality, trained from scratch with the same settings and data."""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from app.model.artifact import CARD_FILE, METRICS_FILE, load_artifact, write_file
from app.model.errors import ArtifactError
from app.model.spec import FUSION_TYPES, ArtifactSpec
from app.training import evaluation as ev
from app.training import report
from app.training.fitting import Data, datasets, train_one
from app.training.manifest import read_manifest
from app.training.options import TrainConfig

log = logging.getLogger(__name__)


def compare_fusions(cfg: TrainConfig, data: Data, own_fusion: str, own_row: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Train every other fusion type with the same settings and data; the table rows for the card."""
    table = {own_fusion: own_row}
    for fusion in FUSION_TYPES:
        if fusion == own_fusion:
            continue
        log.info("comparison: training fusion=%s", fusion)
        r = train_one(replace(cfg, fusion=fusion), data)
        table[fusion] = comparison_row(r.metrics, r.spec, r.model.parameter_count(), len(r.history))
    return {f: table[f] for f in FUSION_TYPES if f in table}


def single_modality_baselines(cfg: TrainConfig, data: Data) -> dict[str, dict[str, Any]]:
    """A dedicated model per modality (same settings, only that encoder): what each input achieves on its own."""
    out = {}
    for m in data.spec.ordered_modalities:
        log.info("comparison: training a %s-only model", m)
        spec = data.spec.model_copy(
            update={"modalities": (m,), "temperature": 1.0, "subset_temperatures": {},
                    **{o: None for o in data.spec.ordered_modalities if o != m}}
        )
        only = datasets(cfg, data.manifest, ArtifactSpec.model_validate(spec.model_dump()))
        result = train_one(cfg, only)
        out[m] = {"accuracy": result.metrics["accuracy"], "macro_f1": result.metrics["macro_f1"],
                  "ece_after_calibration": result.metrics["ece_after_calibration"]}
    return out


def comparison_row(m: dict[str, Any], spec: ArtifactSpec, parameters: int, epochs: int) -> dict[str, Any]:
    """One fusion type's row: accuracy, calibration, and accuracy with each modality missing."""
    mods = spec.ordered_modalities
    missing = {}
    for gone in mods:
        rest = tuple(x for x in mods if x != gone)
        if rest:
            missing[gone] = m["subsets"][ev.subset_name(rest)]["accuracy"]
    return {
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "ece_before_calibration": m["ece_before_calibration"],
        "ece_after_calibration": m["ece_after_calibration"],
        "accuracy_without": missing,
        "parameters": parameters,
        "epochs": epochs,
    }


def comparisons(cfg: TrainConfig, data: Data, spec: ArtifactSpec, metrics: dict[str, Any], params: int) -> dict:
    own = comparison_row(metrics, spec, params, len(metrics["history"]))
    return {
        "fusion_comparison": compare_fusions(cfg, data, spec.fusion.type, own),
        "single_modality_models": single_modality_baselines(cfg, data),
    }


def compare(manifest: Path, folder: Path, threads: int = 0) -> Path:
    """Add the fusion-type and single-modality comparison to an artifact made by `train`: every other fusion type
    and one model per modality, trained with the artifact's own settings on `manifest`. Weights stay untouched."""
    artifact = load_artifact(folder)
    training = artifact.metrics.get("training")
    if not isinstance(training, dict):
        raise ArtifactError(f"{folder / METRICS_FILE}: no training settings; compare needs an artifact made by train")
    known = set(TrainConfig.__dataclass_fields__) - {"init_from"}  # the comparison models train from scratch
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in training.items() if k in known}
    cfg = TrainConfig(**{**settings, "manifest": manifest, "out": folder, "compare_fusions": True})
    if threads or cfg.threads:
        torch.set_num_threads(threads or cfg.threads)
    data = datasets(cfg, read_manifest(manifest, labels=artifact.spec.labels, seed=cfg.seed), artifact.spec)
    metrics = artifact.metrics | comparisons(cfg, data, artifact.spec, artifact.metrics,
                                              artifact.model.parameter_count())
    write_file(folder / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    write_file(folder / CARD_FILE, report.card(artifact.spec, metrics))
    log.info("added the comparison of %d fusion types and %d single-modality models to %s",
             len(metrics["fusion_comparison"]), len(metrics["single_modality_models"]), folder)
    return folder
