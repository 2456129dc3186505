"""`fusion-serve train`'s core: the data a run reads, the training loop, calibration and evaluation."""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from app.inputs.preprocess import Preprocessor
from app.model.batch import collate
from app.model.classifier import FusionClassifier
from app.model.spec import ArtifactSpec
from app.training import augment, init_from
from app.training import evaluation as ev
from app.training.augment import Augmentation
from app.training.dataset import ManifestDataset, loader, modality_dropout
from app.training.manifest import Manifest, read_manifest
from app.training.options import TrainConfig
from app.training.runtime import load_image_weights, resolve_device, write_checkpoint
from app.training.train_spec import build_spec

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    spec: ArtifactSpec
    model: FusionClassifier
    metrics: dict[str, Any]
    history: list[dict[str, float]]


@dataclass
class Data:
    """The manifest's splits as datasets read from disk (train augmented), and the spec they are preprocessed for."""

    manifest: Manifest
    spec: ArtifactSpec
    train: ManifestDataset
    val: ManifestDataset
    test: ManifestDataset | None
    heldout: ManifestDataset | None


def load_data(cfg: TrainConfig, spec: ArtifactSpec | None = None, source: init_from.Source | None = None) -> Data:
    """Read the manifest and build the spec (tokenizer included; a fine-tuned model keeps its `source`'s);
    examples are decoded when batches need them."""
    if source is not None:
        init_from.check(cfg, source)
    manifest = read_manifest(cfg.manifest, labels=cfg.labels, seed=cfg.seed)
    train_rows = manifest.split("train")
    spec = spec or build_spec(cfg, manifest, [r.text for r in train_rows if r.text])
    if source is not None:
        spec = init_from.adopt(spec, source)
        init_from.load(FusionClassifier(spec), cfg, source)  # the weights must fit before any data is read
    return datasets(cfg, manifest, spec)


def datasets(cfg: TrainConfig, manifest: Manifest, spec: ArtifactSpec) -> Data:
    """Every split of `manifest` preprocessed for `spec` (the train split augmented as configured)."""
    pre = Preprocessor(spec)
    aug = augment.from_settings(cfg.augmentation, cfg.augment)

    def split(name: str, augmentation: Augmentation | None = None) -> ManifestDataset | None:
        rows = manifest.split(name)
        return ManifestDataset(rows, manifest.labels, pre, augmentation, cfg.seed) if rows else None

    train_set, val_set = split("train", aug), split("val")
    assert train_set is not None and val_set is not None  # read_manifest insists on both
    return Data(manifest=manifest, spec=spec, train=train_set, val=val_set, test=split("test"),
                heldout=split("heldout"))


class _Run:
    """What the training loop shares with evaluation: device, precision and data loading."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.amp = cfg.amp and self.device.type == "cuda"

    def predict(self, model: FusionClassifier, dataset: ManifestDataset, keys: list[tuple[str, ...]]) -> dict:
        batches = loader(dataset, 256, self.cfg.workers)
        return ev.predict_subsets(model, batches, keys, self.device, self.amp)


def _selection_score(run: _Run, model: FusionClassifier, val: ManifestDataset, spec: ArtifactSpec
                     ) -> tuple[float, dict[str, ev.Logits]]:
    """Mean validation accuracy over every modality subset: the model must stay good when inputs are missing."""
    logits = run.predict(model, val, ev.subsets(spec.modalities))
    valid = [a for a in (ev.accuracy(lg) for lg in logits.values()) if a == a]
    return float(np.mean(valid)), logits


def fit(cfg: TrainConfig, data: Data, spec: ArtifactSpec, source: init_from.Source | None = None
        ) -> tuple[FusionClassifier, list[dict[str, float]]]:
    """Train with AdamW + one-cycle schedule, modality dropout, gradient accumulation and early stopping on the
    validation split, from `source`'s weights when given; returns the best model (on the CPU, in eval mode)."""
    run = _Run(cfg)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = FusionClassifier(spec)
    if source is not None:
        init_from.load(model, cfg, source)
    if cfg.image_weights is not None and spec.image is not None:
        load_image_weights(model, Path(cfg.image_weights))
    model.to(run.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batches_per_epoch = -(-len(data.train) // cfg.batch_size)
    steps_per_epoch = -(-batches_per_epoch // cfg.accumulate_steps)
    total = steps_per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, steps_per_epoch * cfg.epochs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total, 1), pct_start=0.15)
    best_score, best_state, stale, step = -1.0, copy.deepcopy(model.state_dict()), 0, 0
    history: list[dict[str, float]] = []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        bar = tqdm(loader(data.train, cfg.batch_size, cfg.workers, shuffle=True, epoch=epoch),
                   total=batches_per_epoch, desc=f"{spec.fusion.type} epoch {epoch}", unit="batch", leave=False)
        opt.zero_grad(set_to_none=True)
        for micro, (samples, y) in enumerate(bar, start=1):
            batch = collate(modality_dropout(samples, cfg.modality_dropout, rng)).to(run.device)
            y = y.to(run.device)
            with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.amp):
                logits = model(batch)
                loss = F.cross_entropy(logits.float(), y)
            (loss / cfg.accumulate_steps).backward()
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
            if micro % cfg.accumulate_steps and micro != batches_per_epoch:
                continue
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step >= total:
                break
        score, val = _selection_score(run, model, data.val, spec)
        val_full = val[spec.ordered_modalities]
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
            if cfg.checkpoint is not None:
                write_checkpoint(Path(cfg.checkpoint), spec, best_state, history)
        else:
            stale += 1
        if stale >= cfg.patience or step >= total:
            break
    model.load_state_dict(best_state)
    return model.cpu().eval(), history


def _subset_table(logits: dict[tuple[str, ...], ev.Logits], spec: ArtifactSpec) -> dict[str, dict[str, Any]]:
    n = len(spec.labels)
    return {
        ev.subset_name(k): {
            "accuracy": ev.accuracy(lg),
            "macro_f1": ev.macro_f1(lg, n),
            "ece_before": ev.ece(lg),
            "ece_after": ev.ece(lg, spec.temperature_for(k)),
            "temperature": spec.temperature_for(k),
            "count": len(lg.targets),
        }
        for k, lg in logits.items()
    }


def evaluate(model: FusionClassifier, data: Data, spec: ArtifactSpec, cfg: TrainConfig | None = None
             ) -> tuple[ArtifactSpec, dict[str, Any]]:
    """Fit calibration temperatures on the validation split (one per modality subset, since a prediction from
    fewer inputs is less certain, plus a pooled fallback), then measure the test split before and after, and the
    held-out split when the manifest has one."""
    run = _Run(cfg or TrainConfig(manifest=Path("."), out=Path("."), device="cpu"))
    model = model.to(run.device)
    keys = ev.subsets(spec.modalities)
    val = run.predict(model, data.val, keys)
    pooled = ev.fit_temperature(ev.concat(list(val.values())))
    temps = {ev.subset_name(k): ev.fit_temperature(lg) for k, lg in val.items() if len(lg.targets)}
    calibrated = spec.model_copy(update={"temperature": pooled, "subset_temperatures": temps})
    split = data.test if data.test is not None and len(data.test) else data.val
    n = len(spec.labels)
    test = val if split is data.val else run.predict(model, split, keys)
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
        "subsets": _subset_table(test, calibrated),
        "confusion_matrix": ev.confusion(full, n),
        "reliability_before": ev.calibration_bins(all_subsets),
        "reliability_after": ev.calibration_bins(all_subsets, t_each[:, None]),
    }
    if data.heldout is not None and len(data.heldout):
        metrics["heldout"] = heldout_metrics(run, model, data.heldout, calibrated)
    model.cpu()
    return calibrated, metrics


def heldout_metrics(run: _Run, model: FusionClassifier, heldout: ManifestDataset, spec: ArtifactSpec) -> dict[str, Any]:
    """Accuracy, macro-F1 and calibration per modality subset on the held-out split."""
    logits = run.predict(model, heldout, ev.subsets(spec.modalities))
    full = logits[spec.ordered_modalities]
    return {"examples": len(heldout), "accuracy": ev.accuracy(full), "subsets": _subset_table(logits, spec)}


def train_one(cfg: TrainConfig, data: Data, source: init_from.Source | None = None) -> TrainResult:
    spec = replace_fusion(data.spec, cfg)
    model, history = fit(cfg, data, spec, source)
    spec, metrics = evaluate(model, data, spec, cfg)
    return TrainResult(spec=spec, model=model, metrics=metrics, history=history)


def replace_fusion(spec: ArtifactSpec, cfg: TrainConfig) -> ArtifactSpec:
    return spec.model_copy(update={"fusion": spec.fusion.model_copy(update={"type": cfg.fusion})})
