"""Which runtime serves a model's forward pass (FUSION_RUNTIME), decided once per artifact when it loads.

- `torch`: eager PyTorch, with the CPU rewrites of app.model.cpu_inference where they apply.
- `onnxruntime`: each encoder and the fusion head exported to ONNX and run by ONNX Runtime on the CPU
  (app.model.onnx_parts); exports are cached (app.model.export_cache) and checked like fresh ones.
- `auto`: on CPU, both are built and timed (batch 1 and the largest batch); the faster one is served.

A rewritten model is served only where its logits agree with the model as trained (within TOLERANCE) on every
subset of its modalities, on random and on realistic inputs, in batches of several sizes and text lengths. A part
that does not is served by torch; where none is left, the whole model is, with one warning.
"""
from __future__ import annotations

import logging
import math
import re
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from app.engine.api import RuntimeReport
from app.engine.check_inputs import CheckInputs
from app.inputs.preprocess import Preprocessor
from app.model import onnx_parts
from app.model.artifact import Artifact
from app.model.batch import Batch, Sample, collate
from app.model.cpu_inference import optimize_for_cpu
from app.model.export_cache import ExportCache, cache_key

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnxruntime")
# Largest difference of any logit from the model as trained that a rewritten model may show.
TOLERANCE = 1e-4
TIMING_ROUNDS = 7
WARM_RUNS = 3
# auto times batch 1 and the largest batch up to this (a batch of 1024 would take seconds per round on CPU).
MAX_TIMING_BATCH = 64


@dataclass(frozen=True)
class RuntimeOptions:
    """`requested`: one of RUNTIMES; `cache_dir`: where exports go when the artifact's folder is read-only (None:
    a per-user folder under the system's temporary folder); `timing_batch`: the largest batch `auto` times."""

    requested: str = "torch"
    cpu_rewrites: bool = True
    cache_dir: Path | None = None
    timing_batch: int = 64


@dataclass
class ServedRuntime:
    model: nn.Module
    report: RuntimeReport


def choose_runtime(artifact: Artifact, device: torch.device, options: RuntimeOptions) -> ServedRuntime:
    """The model to serve for `artifact` (already on `device`, in eval mode) and what runs it."""
    if options.requested not in RUNTIMES:
        raise ValueError(f"unknown runtime {options.requested!r}; one of {', '.join(RUNTIMES)}")
    eager = artifact.model
    checks = CheckInputs.build(Preprocessor(artifact.spec))
    batches = checks.batches
    torch_model = eager
    if options.cpu_rewrites and device.type == "cpu":
        torch_model = optimize_for_cpu(eager, batches[-1])
    requested = options.requested
    if requested == "torch":
        return ServedRuntime(torch_model, RuntimeReport(requested=requested))
    if device.type != "cpu":
        note = "ONNX Runtime serves CPU models only; on a GPU, torch does"
        if requested == "onnxruntime":
            log.warning("%s: FUSION_RUNTIME=onnxruntime, but %s", artifact.spec.name, note)
        return ServedRuntime(torch_model, RuntimeReport(requested=requested, note=note))
    try:
        versions = onnx_parts.versions()
    except ImportError as exc:
        note = f"ONNX Runtime is not installed ({exc.name} missing); torch serves"
        (log.warning if requested == "onnxruntime" else log.info)("%s: %s", artifact.spec.name, note)
        return ServedRuntime(torch_model, RuntimeReport(requested=requested, note=note))
    built = _build_onnxruntime(artifact, batches, options.cache_dir, versions)
    if built.model is None:
        log.warning("%s: ONNX Runtime not served, torch serves instead: %s", artifact.spec.name, built.note)
        return ServedRuntime(torch_model, RuntimeReport(requested=requested, note=built.note))
    report = RuntimeReport(name="onnxruntime", requested=requested, onnx_parts=tuple(built.parts),
                           parity=built.parity, note=built.note)
    if requested == "onnxruntime":
        return ServedRuntime(built.model, report)
    sizes = sorted({1, min(max(1, options.timing_batch), MAX_TIMING_BATCH)})
    times = time_models({"torch": torch_model, "onnxruntime": built.model}, checks.full, sizes)
    speedup = {size: times["torch"][size] / times["onnxruntime"][size] for size in sizes}
    mean = math.exp(statistics.fmean(math.log(s) for s in speedup.values()))
    detail = ", ".join(f"x{s:.2f} at batch {b}" for b, s in speedup.items())
    log.info("%s: ONNX Runtime against eager torch: %s", artifact.spec.name, detail)
    if mean <= 1.0:
        return ServedRuntime(torch_model, RuntimeReport(
            requested=requested, speedup=speedup,
            note=f"auto: eager torch was as fast or faster than ONNX Runtime ({detail})"))
    note = f"auto: the faster at load ({detail})" + (f"; {built.note}" if built.note else "")
    return ServedRuntime(built.model, RuntimeReport(
        name="onnxruntime", requested=requested, onnx_parts=tuple(built.parts), parity=built.parity,
        speedup=speedup, note=note))


@dataclass
class _Built:
    model: nn.Module | None
    parts: list[str]
    parity: float
    note: str


def _build_onnxruntime(artifact: Artifact, batches: list[Batch], cache_dir: Path | None,
                       versions: Mapping[str, str]) -> _Built:
    """Export (or read from the cache) every part, keep those whose model answers as the eager one does. One
    process at a time per model and cache (the others then read what it cached)."""
    cache = ExportCache.for_artifact(artifact.path, cache_dir)
    digest = onnx_parts.weights_digest(artifact.model)
    with cache.locked(digest[:16]):
        return _export_and_check(artifact, batches, cache, digest, versions)


def _export_and_check(artifact: Artifact, batches: list[Batch], cache: ExportCache, digest: str,
                      versions: Mapping[str, str]) -> _Built:
    eager, threads = artifact.model, torch.get_num_threads()
    parts = {p.name: p for p in onnx_parts.parts_of(eager)}
    files = {name: f"{name}-{cache_key(digest, name, dict(versions))}.onnx" for name in parts}
    sessions: dict[str, object] = {}
    fresh: dict[str, bytes] = {}
    problems: list[str] = []

    def export(name: str) -> None:
        t0 = time.perf_counter()
        try:
            data = onnx_parts.export(parts[name])
            sessions[name] = onnx_parts.session(data, threads)
        except Exception as exc:  # noqa: BLE001 - any failure leaves this part to torch
            sessions.pop(name, None)
            problems.append(f"{name} did not export ({_summary(exc)})")
            return
        fresh[name] = data
        log.info("%s: exported %s for ONNX Runtime in %.1f s", artifact.spec.name, name, time.perf_counter() - t0)

    for name in parts:
        cached = cache.read(files[name])
        if cached is not None:
            try:
                sessions[name] = onnx_parts.session(cached[0], threads)
                log.info("%s: %s read from %s", artifact.spec.name, name, cached[1])
                continue
            except Exception as exc:  # noqa: BLE001 - a damaged file: export again
                log.info("%s: cached %s unusable (%s); exporting it again", artifact.spec.name, name, exc)
        export(name)

    def parity(names: list[str]) -> float:
        model = onnx_parts.with_sessions(eager, {n: sessions[n] for n in names})
        return max_logit_difference(eager, model, batches)

    served = sorted(sessions)
    difference = parity(served) if served else math.inf
    if difference > TOLERANCE and served:
        # Find the parts at fault, each alone; a cached one is exported afresh before it is given up on (a cached
        # file that disagrees is never trusted: damaged, or made by something else than this model's export).
        for name in list(served):
            alone = parity([name])
            if alone > TOLERANCE and name not in fresh:
                export(name)
                alone = parity([name]) if name in sessions else math.inf
            if alone > TOLERANCE:
                served.remove(name)
                if name in sessions:
                    problems.append(f"{name} disagreed with the model by {alone:.2g} (over {TOLERANCE:g})")
        difference = parity(served) if served else math.inf
        if difference > TOLERANCE and served:
            problems.append(f"together the parts disagreed with the model by {difference:.2g}")
            served = []
    for name in served:
        if name in fresh and cache.write(files[name], fresh[name]) is None:
            log.info("%s: no writable cache folder for the %s export", artifact.spec.name, name)
    note = "; ".join(problems)
    if not served:
        return _Built(None, [], difference, note or "no part could be exported")
    if problems:
        log.warning("%s: ONNX Runtime serves %s; torch serves the rest: %s",
                    artifact.spec.name, ", ".join(served), note)
    return _Built(onnx_parts.with_sessions(eager, {n: sessions[n] for n in served}), served, difference, note)


def max_logit_difference(reference: Callable[[Batch], torch.Tensor], candidate: Callable[[Batch], torch.Tensor],
                         batches: list[Batch]) -> float:
    """The largest |difference| of any logit between two models over `batches` (inf where one is not finite)."""
    worst = 0.0
    with torch.inference_mode():
        for batch in batches:
            a, b = reference(batch).float(), candidate(batch).float()
            if a.shape != b.shape or not bool(torch.isfinite(b).all()):
                return math.inf
            worst = max(worst, float((a - b).abs().max()))
    return worst


def time_models(models: Mapping[str, Callable[[Batch], torch.Tensor]], samples: list[Sample],
                sizes: list[int]) -> dict[str, dict[int, float]]:
    """Seconds per forward pass of each model at each batch size (`samples` repeated): the models take turns, so
    that a change in the machine's speed affects all alike, and the fastest of the rounds counts (on a shared
    machine, the others include time the process was not running)."""
    times: dict[str, dict[int, list[float]]] = {name: {s: [] for s in sizes} for name in models}
    with torch.inference_mode():
        for size in sizes:
            batch = collate([samples[i % len(samples)] for i in range(size)])
            for _ in range(WARM_RUNS):  # a runtime's first runs at a new shape plan its memory
                for model in models.values():
                    model(batch)
            for _ in range(TIMING_ROUNDS):
                for name, model in models.items():
                    t0 = time.perf_counter()
                    model(batch)
                    times[name][size].append(time.perf_counter() - t0)
    return {name: {s: min(v) for s, v in per.items()} for name, per in times.items()}


def _summary(exc: BaseException) -> str:
    """One line for an export failure: torch.onnx wraps the cause in pages of advice, its summary is what counts."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    marker = "## Exception summary"
    if marker in text:
        text = text.split(marker, 1)[1].strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first[:240]}"
