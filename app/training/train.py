"""`fusion-serve train`: manifest -> trained, calibrated, evaluated artifact folder the service serves as is."""
from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from app.inputs.preprocess import Preprocessor
from app.model.artifact import (
    CARD_FILE,
    METRICS_FILE,
    load_artifact,
    save_artifact,
    write_file,
)
from app.model.batch import collate
from app.model.classifier import FusionClassifier
from app.model.errors import ArtifactError
from app.model.spec import (
    FUSION_TYPES,
    ArtifactSpec,
    AudioSpec,
    FusionSpec,
    ImageSpec,
    TextSpec,
    TokenizerSpec,
)
from app.model.tokenizer import build_vocab
from app.training import evaluation as ev
from app.training import report
from app.training.dataset import (
    Examples,
    batches,
    load_examples,
    modality_dropout,
    restrict,
)
from app.training.manifest import Manifest, read_manifest

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Every training option; the CLI flags map one-to-one onto these fields."""

    manifest: Path
    out: Path
    name: str = "digits"
    version: str = "1"
    description: str = ""
    seed: int = 0
    modalities: tuple[str, ...] | None = None
    labels: tuple[str, ...] | None = None
    # optimisation
    epochs: int = 20
    patience: int = 4
    max_steps: int | None = None
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    modality_dropout: float = 0.35
    threads: int = 0
    workers: int = 2
    # image
    image_encoder: str = "cnn"
    image_size: int = 28
    image_channels: int = 1
    image_width: int = 16
    # text
    text_encoder: str = "transformer"
    tokenizer: str = "bytes"
    max_tokens: int = 64
    text_dim: int = 64
    text_layers: int = 2
    text_heads: int = 4
    # audio
    audio_encoder: str = "tcnn"
    sample_rate: int = 16000
    clip_seconds: float = 1.5
    n_fft: int = 400
    hop_length: int = 240
    n_mels: int = 40
    audio_width: int = 16
    # fusion
    fusion: str = "attention"
    fusion_dim: int = 64
    fusion_hidden: int = 128
    fusion_heads: int = 4
    fusion_layers: int = 1
    dropout: float = 0.1
    compare_fusions: bool = False


@dataclass
class TrainResult:
    spec: ArtifactSpec
    model: FusionClassifier
    metrics: dict[str, Any]
    history: list[dict[str, float]]


def build_spec(cfg: TrainConfig, manifest: Manifest, texts: list[str]) -> ArtifactSpec:
    mods = cfg.modalities or manifest.modalities
    tokenizer = build_vocab(texts) if cfg.tokenizer == "words" else TokenizerSpec(type="bytes")
    return ArtifactSpec(
        name=cfg.name,
        version=cfg.version,
        description=cfg.description,
        labels=manifest.labels,
        modalities=tuple(mods),
        image=ImageSpec(
            encoder=cfg.image_encoder,  # type: ignore[arg-type]
            size=cfg.image_size,
            channels=cfg.image_channels,  # type: ignore[arg-type]
            mean=(0.5,) * cfg.image_channels,
            std=(0.5,) * cfg.image_channels,
            width=cfg.image_width,
        )
        if "image" in mods
        else None,
        text=TextSpec(
            encoder=cfg.text_encoder,  # type: ignore[arg-type]
            tokenizer=tokenizer,
            max_tokens=cfg.max_tokens,
            embed_dim=cfg.text_dim,
            layers=cfg.text_layers,
            heads=cfg.text_heads,
        )
        if "text" in mods
        else None,
        audio=AudioSpec(
            encoder=cfg.audio_encoder,  # type: ignore[arg-type]
            sample_rate=cfg.sample_rate,
            clip_seconds=cfg.clip_seconds,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            n_mels=cfg.n_mels,
            width=cfg.audio_width,
        )
        if "audio" in mods
        else None,
        fusion=FusionSpec(
            type=cfg.fusion,  # type: ignore[arg-type]
            dim=cfg.fusion_dim,
            hidden=cfg.fusion_hidden,
            heads=cfg.fusion_heads,
            layers=cfg.fusion_layers,
            dropout=cfg.dropout,
        ),
    )


@dataclass
class Data:
    manifest: Manifest
    spec: ArtifactSpec
    train: Examples
    val: Examples
    test: Examples | None


def load_data(cfg: TrainConfig) -> Data:
    """Read the manifest, build the spec (tokenizer included) and preprocess every split once."""
    manifest = read_manifest(cfg.manifest, labels=cfg.labels, seed=cfg.seed)
    train_rows = manifest.split("train")
    spec = build_spec(cfg, manifest, [r.text for r in train_rows if r.text])
    pre = Preprocessor(spec)
    test_rows = manifest.split("test")
    return Data(
        manifest=manifest,
        spec=spec,
        train=load_examples(train_rows, manifest.labels, pre, "train", cfg.workers),
        val=load_examples(manifest.split("val"), manifest.labels, pre, "val", cfg.workers),
        test=load_examples(test_rows, manifest.labels, pre, "test", cfg.workers) if test_rows else None,
    )


def _selection_score(model: FusionClassifier, val: Examples, spec: ArtifactSpec) -> tuple[float, dict[str, float]]:
    """Mean validation accuracy over every modality subset: the model must stay good when inputs are missing."""
    accs = {ev.subset_name(k): ev.accuracy(ev.predict_logits(model, val, k)) for k in ev.subsets(spec.modalities)}
    valid = [a for a in accs.values() if a == a]
    return float(np.mean(valid)), accs


def fit(cfg: TrainConfig, data: Data, spec: ArtifactSpec) -> tuple[FusionClassifier, list[dict[str, float]]]:
    """Train with AdamW + cosine schedule, modality dropout and early stopping; returns the best model."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = FusionClassifier(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-len(data.train) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, steps_per_epoch * cfg.epochs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total, 1), pct_start=0.15)
    best_score, best_state, stale, step = -1.0, copy.deepcopy(model.state_dict()), 0, 0
    history: list[dict[str, float]] = []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        bar = tqdm(batches(data.train, cfg.batch_size, shuffle=True, rng=rng), desc=f"{spec.fusion.type} epoch {epoch}",
                   unit="batch", leave=False)
        for samples, y in bar:
            logits = model(collate(modality_dropout(samples, cfg.modality_dropout, rng)))
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
            if step >= total:
                break
        score, accs = _selection_score(model, data.val, spec)
        val_full = ev.predict_logits(model, data.val, spec.ordered_modalities)
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "val_loss": ev.nll(val_full) if len(val_full.targets) else float("nan"),
            "val_accuracy": ev.accuracy(val_full),
            "val_mean_subset_accuracy": score,
            "seconds": time.perf_counter() - t0,
        }
        history.append(row)
        log.info(
            "%s epoch %d: train loss %.3f acc %.3f | val acc %.3f, mean over subsets %.3f (%.0f s)",
            spec.fusion.type, epoch, row["train_loss"], row["train_accuracy"], row["val_accuracy"], score, row["seconds"],
        )
        if score > best_score:
            best_score, best_state, stale = score, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
        if stale >= cfg.patience or step >= total:
            break
    model.load_state_dict(best_state)
    model.eval()
    return model, history


def evaluate(model: FusionClassifier, data: Data, spec: ArtifactSpec) -> tuple[ArtifactSpec, dict[str, Any]]:
    """Fit calibration temperatures on the validation split (one per modality subset, since a prediction from
    fewer inputs is less certain, plus a pooled fallback), then measure the test split before and after."""
    keys = ev.subsets(spec.modalities)
    val = {k: ev.predict_logits(model, data.val, k) for k in keys}
    pooled = ev.fit_temperature(ev.concat(list(val.values())))
    temps = {ev.subset_name(k): ev.fit_temperature(lg) for k, lg in val.items() if len(lg.targets)}
    calibrated = spec.model_copy(update={"temperature": pooled, "subset_temperatures": temps})
    split = data.test if data.test is not None and len(data.test) else data.val
    n = len(spec.labels)
    test = {k: ev.predict_logits(model, split, k) for k in keys}
    per_subset = {
        ev.subset_name(k): {
            "accuracy": ev.accuracy(lg),
            "macro_f1": ev.macro_f1(lg, n),
            "ece_before": ev.ece(lg),
            "ece_after": ev.ece(lg, calibrated.temperature_for(k)),
            "temperature": calibrated.temperature_for(k),
            "count": len(lg.targets),
        }
        for k, lg in test.items()
    }
    full_key = spec.ordered_modalities
    full, t_full = test[full_key], calibrated.temperature_for(full_key)
    all_subsets = ev.concat(list(test.values()))
    t_each = torch.cat([torch.full((len(lg.targets),), calibrated.temperature_for(k)) for k, lg in test.items()])
    metrics = {
        "split": "test" if split is data.test else "val",
        "examples": len(split),
        "accuracy": ev.accuracy(full),
        "macro_f1": ev.macro_f1(full, n),
        "nll_before_calibration": ev.nll(full),
        "nll_after_calibration": ev.nll(full, t_full),
        "ece_before_calibration": ev.ece(full),
        "ece_after_calibration": ev.ece(full, t_full),
        "ece_all_subsets_before": ev.ece(all_subsets),
        "ece_all_subsets_after": ev.ece(all_subsets, t_each[:, None]),
        "temperature": pooled,
        "subset_temperatures": temps,
        "subsets": per_subset,
        "confusion_matrix": ev.confusion(full, n),
        "reliability_before": ev.calibration_bins(all_subsets),
        "reliability_after": ev.calibration_bins(all_subsets, t_each[:, None]),
    }
    return calibrated, metrics


def train_one(cfg: TrainConfig, data: Data) -> TrainResult:
    spec = replace_fusion(data.spec, cfg)
    model, history = fit(cfg, data, spec)
    spec, metrics = evaluate(model, data, spec)
    return TrainResult(spec=spec, model=model, metrics=metrics, history=history)


def replace_fusion(spec: ArtifactSpec, cfg: TrainConfig) -> ArtifactSpec:
    return spec.model_copy(update={"fusion": spec.fusion.model_copy(update={"type": cfg.fusion})})


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
            update={"modalities": (m,), **{o: None for o in data.spec.ordered_modalities if o != m}}
        )
        only = replace(
            data,
            spec=ArtifactSpec.model_validate(spec.model_dump()),
            train=restrict(data.train, (m,)),
            val=restrict(data.val, (m,)),
            test=restrict(data.test, (m,)) if data.test is not None else None,
        )
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


def train(cfg: TrainConfig) -> Path:
    """Train, calibrate, evaluate, optionally compare fusion types, and write the artifact folder."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    data = load_data(cfg)
    log.info("data: %d train / %d val / %d test examples, labels %s, modalities %s", len(data.train), len(data.val),
             len(data.test) if data.test else 0, ", ".join(data.manifest.labels), ", ".join(data.spec.ordered_modalities))
    result = train_one(cfg, data)
    metrics = {
        **result.metrics,
        "history": result.history,
        "training": {k: v for k, v in asdict(cfg).items() if k not in ("manifest", "out")},
        "data": _data_info(cfg.manifest),
        "train_seconds": time.perf_counter() - t0,
        "parameters": result.model.parameter_count(),
    }
    if cfg.compare_fusions:
        metrics |= _comparisons(cfg, data, result.spec, metrics, result.model.parameter_count())
    report.write_plots(cfg.out, result.spec, metrics)
    card = report.card(result.spec, metrics)
    save_artifact(cfg.out, result.spec, result.model, card, metrics=metrics)
    log.info("wrote %s: test accuracy %.3f, ECE over all subsets %.3f -> %.3f", cfg.out, metrics["accuracy"],
             metrics["ece_all_subsets_before"], metrics["ece_all_subsets_after"])
    return cfg.out


def _comparisons(cfg: TrainConfig, data: Data, spec: ArtifactSpec, metrics: dict[str, Any], params: int) -> dict:
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
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in training.items()}
    cfg = TrainConfig(**{**settings, "manifest": manifest, "out": folder, "compare_fusions": True})
    if threads or cfg.threads:
        torch.set_num_threads(threads or cfg.threads)
    data = load_data(cfg)
    metrics = artifact.metrics | _comparisons(cfg, data, artifact.spec, artifact.metrics,
                                              artifact.model.parameter_count())
    write_file(folder / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    write_file(folder / CARD_FILE, report.card(artifact.spec, metrics))
    log.info("added the comparison of %d fusion types and %d single-modality models to %s",
             len(metrics["fusion_comparison"]), len(metrics["single_modality_models"]), folder)
    return folder


def _data_info(manifest: Path) -> dict[str, Any]:
    info = manifest.parent / "dataset.json"
    if info.is_file():
        try:
            return {"manifest": manifest.name, "generator": json.loads(info.read_text(encoding="utf-8"))}
        except json.JSONDecodeError:
            pass
    return {"manifest": manifest.name}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI flags: one per TrainConfig field."""
    d = TrainConfig(manifest=Path("."), out=Path("."))
    parser.add_argument("--manifest", type=Path, required=True, help="JSONL manifest (see README)")
    parser.add_argument("--out", type=Path, required=True, help="artifact folder to write, e.g. models/mymodel")
    parser.add_argument("--name", default=None, help="model name (default: the out folder's name)")
    parser.add_argument("--version", default=d.version)
    parser.add_argument("--description", default=d.description)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--modalities", default=None, help="comma list; default: those in the manifest")
    parser.add_argument("--labels", default=None, help="comma list fixing the label set and order")
    g = parser.add_argument_group("optimisation")
    for name in ("epochs", "patience", "batch_size", "threads", "workers"):
        g.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    g.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    for name in ("lr", "weight_decay", "modality_dropout"):
        g.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    g = parser.add_argument_group("image encoder")
    g.add_argument("--image-encoder", choices=["cnn", "resnet18", "resnet50", "mobilenet_v3_small"], default=d.image_encoder)
    g.add_argument("--image-size", type=int, default=d.image_size)
    g.add_argument("--image-channels", type=int, choices=[1, 3], default=d.image_channels)
    g.add_argument("--image-width", type=int, default=d.image_width)
    g = parser.add_argument_group("text encoder")
    g.add_argument("--text-encoder", choices=["transformer", "lstm", "gru"], default=d.text_encoder)
    g.add_argument("--tokenizer", choices=["bytes", "words"], default=d.tokenizer)
    for name in ("max_tokens", "text_dim", "text_layers", "text_heads"):
        g.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    g = parser.add_argument_group("audio encoder")
    g.add_argument("--audio-encoder", choices=["tcnn", "cnn"], default=d.audio_encoder)
    for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "audio_width"):
        g.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    g.add_argument("--clip-seconds", type=float, default=d.clip_seconds)
    g = parser.add_argument_group("fusion")
    g.add_argument("--fusion", choices=list(FUSION_TYPES), default=d.fusion)
    for name in ("fusion_dim", "fusion_hidden", "fusion_heads", "fusion_layers"):
        g.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    g.add_argument("--dropout", type=float, default=d.dropout)
    g.add_argument("--compare-fusions", action="store_true",
                   help="also train every other fusion type on the same data and tabulate them in the card")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and v is not None}
    values["name"] = args.name or Path(args.out).name
    for key in ("modalities", "labels"):
        if isinstance(values.get(key), str):
            values[key] = tuple(x.strip() for x in values[key].split(",") if x.strip())
    return TrainConfig(**values)


def run(args: argparse.Namespace) -> Path:
    return train(config_from_args(args))


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", type=Path, required=True, help="the manifest the artifact was trained on")
    parser.add_argument("--artifact", type=Path, required=True, help="artifact folder made by train")
    parser.add_argument("--threads", type=int, default=0)


def run_compare(args: argparse.Namespace) -> Path:
    return compare(args.manifest, args.artifact, args.threads)
