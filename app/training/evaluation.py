"""Evaluation: logits per modality subset, accuracy, macro-F1, ECE, confusion matrix, temperature scaling."""
from __future__ import annotations

import itertools
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix, f1_score

from app.model.batch import Sample, collate
from app.model.classifier import FusionClassifier
from app.model.spec import MODALITIES, subset_key
from app.training.dataset import Examples, drop_modalities


def subsets(modalities: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every non-empty subset, smallest first, in canonical order."""
    ordered = tuple(m for m in MODALITIES if m in modalities)
    return [c for r in range(1, len(ordered) + 1) for c in itertools.combinations(ordered, r)]


def subset_name(keep: tuple[str, ...]) -> str:
    return subset_key(keep)


@dataclass(frozen=True)
class Logits:
    logits: torch.Tensor
    targets: torch.Tensor


Batches = Iterable[tuple[list[Sample], torch.Tensor]]


@torch.inference_mode()
def predict_subsets(
    model: FusionClassifier, batches: Batches, keys: list[tuple[str, ...]], device: torch.device | None = None,
    amp: bool = False,
) -> dict[tuple[str, ...], Logits]:
    """Logits for each modality subset in `keys` (only those inputs given), over the examples that have all of them;
    the examples are read once, batch by batch."""
    model.eval()
    device = device or torch.device("cpu")
    logits: dict[tuple[str, ...], list[torch.Tensor]] = {k: [] for k in keys}
    targets: dict[tuple[str, ...], list[torch.Tensor]] = {k: [] for k in keys}
    for samples, y in batches:
        for keep in keys:
            idx = [i for i, s in enumerate(samples) if all(getattr(s, m) is not None for m in keep)]
            if not idx:
                continue
            batch = collate([drop_modalities(samples[i], keep) for i in idx]).to(device)
            # No autocast context at all without amp: a disabled one would switch off a caller's (bench/precision.py).
            mixed = torch.autocast(device.type, dtype=torch.bfloat16) if amp and device.type == "cuda" else nullcontext()
            with mixed:
                logits[keep].append(model(batch).float().cpu())
            targets[keep].append(y[torch.as_tensor(idx, dtype=torch.long)])
    n = len(model.spec.labels)
    return {
        k: Logits(logits=torch.cat(logits[k]) if logits[k] else torch.empty(0, n),
                  targets=torch.cat(targets[k]) if targets[k] else torch.empty(0, dtype=torch.long))
        for k in keys
    }


def predict_logits(model: FusionClassifier, examples: Examples, keep: tuple[str, ...], batch_size: int = 256) -> Logits:
    """Logits with only the modalities in `keep`, over the in-memory examples that have all of them."""
    return predict_subsets(model, examples.batches(batch_size), [keep])[keep]


def accuracy(lg: Logits) -> float:
    return float((lg.logits.argmax(1) == lg.targets).float().mean()) if len(lg.targets) else float("nan")


def macro_f1(lg: Logits, n_classes: int) -> float:
    return float(
        f1_score(lg.targets.numpy(), lg.logits.argmax(1).numpy(), average="macro", labels=list(range(n_classes)),
                 zero_division=0)
    )


Temperature = float | torch.Tensor  # a scalar, or one per example shaped [N, 1]


def nll(lg: Logits, temperature: Temperature = 1.0) -> float:
    return float(F.cross_entropy(lg.logits / temperature, lg.targets))


def calibration_bins(lg: Logits, temperature: Temperature = 1.0, n_bins: int = 15) -> list[dict[str, float]]:
    """Reliability diagram data: per confidence bin, its count, mean confidence and accuracy."""
    probs = torch.softmax(lg.logits / temperature, dim=1)
    conf, pred = probs.max(dim=1)
    correct = (pred == lg.targets).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi)
        n = int(sel.sum())
        bins.append({
            "lower": float(lo),
            "upper": float(hi),
            "count": n,
            "confidence": float(conf[sel].mean()) if n else 0.0,
            "accuracy": float(correct[sel].mean()) if n else 0.0,
        })
    return bins


def ece(lg: Logits, temperature: Temperature = 1.0, n_bins: int = 15) -> float:
    """Expected calibration error: bin-weighted |accuracy - confidence| over equal-width confidence bins."""
    total = len(lg.targets)
    if not total:
        return float("nan")
    return sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in calibration_bins(lg, temperature, n_bins))


def fit_temperature(lg: Logits) -> float:
    """Temperature scaling: the T > 0 minimising the NLL of logits / T (optimised over log T)."""
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")
    # Normal tensors: the logits and targets were made in inference mode, which autograd cannot use.
    logits, targets = lg.logits.clone(), lg.targets.clone()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def confusion(lg: Logits, n_classes: int) -> list[list[int]]:
    return confusion_matrix(lg.targets.numpy(), lg.logits.argmax(1).numpy(), labels=list(range(n_classes))).tolist()


def concat(parts: list[Logits]) -> Logits:
    return Logits(logits=torch.cat([p.logits for p in parts]), targets=torch.cat([p.targets for p in parts]))
