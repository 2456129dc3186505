"""The models being served and the request pipeline they share:
raw parts -> decode/validate -> preprocess -> batcher -> predictor -> probabilities.

Decoding and preprocessing run either on a thread pool before a request is queued, or (where the process has 2
CPUs or fewer) in the inference thread, for the whole batch just before its forward pass; see
`make_preprocess_pool`.

Nothing here knows about HTTP.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from app.batching import Announcement, BatchConfig, BatchObserver, BatchResult, DynamicBatcher
from app.collate import Sample
from app.config import Settings
from app.inputs import DecodeLimits, decode_audio, decode_image, decode_text
from app.errors import ArtifactError, MissingInput, ModalityNotSupported, ModelNotFound
from app.inference import Predictor, resolve_device
from app.model.artifact import MODEL_NAME_RE, is_artifact_dir, load_artifact
from app.model.spec import MODALITIES, ArtifactSpec, Modality
from app.preprocessing import Preprocessor

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RawInputs:
    """One request's undecoded parts; None where the modality was not sent."""

    image: bytes | None = None
    text: bytes | str | None = None
    audio: bytes | None = None

    @property
    def modalities(self) -> tuple[Modality, ...]:
        return tuple(m for m in MODALITIES if getattr(self, m) is not None)


@dataclass(frozen=True, slots=True)
class Job:
    """One request in the batcher's queue: its preprocessed sample, or its raw inputs (with their limits) to be
    decoded and preprocessed in the inference thread."""

    sample: Sample | None = None
    raw: RawInputs | None = None
    limits: DecodeLimits | None = None


@dataclass(frozen=True, slots=True)
class Scored:
    """One request's output from a batch: its probabilities, the time its decoding took there (0 when it came
    preprocessed), and the time of the batch's forward pass."""

    probabilities: np.ndarray
    preprocess_ms: float
    forward_ms: float


@dataclass(frozen=True, slots=True)
class Prediction:
    """Calibrated probabilities (in label order) and how the request was served."""

    probabilities: np.ndarray
    modalities: tuple[Modality, ...]
    preprocess_ms: float
    queue_ms: float
    compute_ms: float
    batch_size: int

    @classmethod
    def of(cls, result: BatchResult[Scored], modalities: tuple[Modality, ...], preprocess_ms: float = 0.0) -> Prediction:
        """`preprocess_ms`: the time the request spent being decoded before it was queued, if it was."""
        scored = result.value
        return cls(
            probabilities=scored.probabilities,
            modalities=modalities,
            preprocess_ms=preprocess_ms + scored.preprocess_ms,
            queue_ms=result.queue_ms,
            compute_ms=scored.forward_ms,
            batch_size=result.batch_size,
        )


async def run_cpu(pool: Executor | None, fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` on the pool's threads, or right here on the event loop when there is no pool."""
    if pool is None:
        return fn(*args)
    return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


def make_preprocess_pool(workers: int) -> ThreadPoolExecutor | None:
    """The decode/preprocess threads: `workers` of them; 0 for none; -1 for automatic: none where the process may
    use 2 CPUs or fewer. Without a pool, each batch's requests are decoded in the inference thread just before
    the forward pass: the event loop keeps only the HTTP work, and on one or two cores that beats handing each
    upload to another thread (context switches, GIL hand-offs, and caches made cold for both decoding and the
    forward pass by the HTTP work interleaved between them)."""
    if workers < 0:
        cpus = len(os.sched_getaffinity(0))
        workers = 0 if cpus <= 2 else min(4, cpus - 2)
    return ThreadPoolExecutor(workers, thread_name_prefix="preprocess") if workers else None


def prepare_sample(preprocessor: Preprocessor, raw: RawInputs, limits: DecodeLimits) -> Sample:
    """Decode and preprocess one request (CPU work, run off the event loop). Raises InvalidInput subclasses."""
    return preprocessor(
        image=None if raw.image is None else decode_image(raw.image, limits),
        text=None if raw.text is None else decode_text(raw.text, limits),
        audio=None if raw.audio is None else decode_audio(raw.audio, limits),
    )


def run_jobs(predictor: Predictor, preprocessor: Preprocessor, jobs: list[Job]) -> list[Scored | Exception]:
    """The batcher's handler (in the inference thread): decode the jobs that came raw, then one forward pass over
    every sample. A job whose decoding fails gets its error in its place (a 4xx for that request alone)."""
    outputs: list[Scored | Exception | None] = [None] * len(jobs)
    samples: list[Sample] = []
    placed: list[tuple[int, float]] = []  # (job index, its decoding ms) for each sample
    for i, job in enumerate(jobs):
        if job.sample is not None:
            samples.append(job.sample)
            placed.append((i, 0.0))
            continue
        assert job.raw is not None and job.limits is not None
        t0 = time.perf_counter()
        try:
            samples.append(prepare_sample(preprocessor, job.raw, job.limits))
        except Exception as exc:  # any failure here is this request's alone: InvalidInput (4xx), else a 500
            outputs[i] = exc
            continue
        placed.append((i, (time.perf_counter() - t0) * 1e3))
    if samples:
        t0 = time.perf_counter()
        probabilities = predictor.predict(samples)
        forward_ms = (time.perf_counter() - t0) * 1e3
        for (i, preprocess_ms), probs in zip(placed, probabilities):
            outputs[i] = Scored(probs, preprocess_ms, forward_ms)
    return outputs  # type: ignore[return-value]  # every slot is filled


@dataclass
class ServedModel:
    """One artifact, loaded and ready: its predictor, preprocessor and batcher."""

    name: str
    path: Path
    spec: ArtifactSpec
    predictor: Predictor
    preprocessor: Preprocessor
    batcher: DynamicBatcher[Job, Scored]
    metrics: dict[str, Any] = field(default_factory=dict)
    parameter_count: int = 0

    def check_modalities(self, raw: RawInputs) -> None:
        if not raw.modalities:
            raise MissingInput(
                f"no input given; send at least one of the fields {', '.join(self.spec.ordered_modalities)}"
            )
        unsupported = [m for m in raw.modalities if m not in self.spec.modalities]
        if unsupported:
            raise ModalityNotSupported(
                f"model '{self.name}' does not accept {', '.join(unsupported)}; "
                f"it accepts {', '.join(self.spec.ordered_modalities)}"
            )

    async def predict(
        self, raw: RawInputs, limits: DecodeLimits, pool: Executor | None, announcement: Announcement | None = None
    ) -> Prediction:
        """The whole pipeline for one request. `announcement`: from `batcher.announce()`, if the caller announced
        the request while its upload was arriving; it ends when the request is queued or refused (the caller
        withdraws it if the request fails before that)."""
        self.check_modalities(raw)
        if pool is None:  # decoded in the inference thread, with its batch
            job = Job(raw=raw, limits=limits)
            return Prediction.of(await self.batcher.submit(job, announcement), raw.modalities)
        self.batcher.admit()  # under overload, refuse before spending CPU on decoding
        t0 = time.perf_counter()
        sample = await run_cpu(pool, prepare_sample, self.preprocessor, raw, limits)
        preprocess_ms = (time.perf_counter() - t0) * 1e3
        result = await self.batcher.submit(Job(sample=sample), announcement)
        return Prediction.of(result, raw.modalities, preprocess_ms)


class ModelRegistry:
    """Every artifact folder under `models_dir`, each with its own batcher; one of them is the default."""

    def __init__(self, settings: Settings, observer_factory: Any = None) -> None:
        self.settings = settings
        self.models: dict[str, ServedModel] = {}
        self.default_name: str | None = None
        self.device = resolve_device(settings.device)
        self._observer_factory = observer_factory

    def load(self) -> None:
        """Load every artifact (raises ArtifactError naming the file at fault) and pick the default."""
        root = self.settings.models_dir
        if not root.is_dir():
            raise ArtifactError(f"{root}: models directory not found (set FUSION_MODELS_DIR)")
        folders = sorted(p for p in root.iterdir() if is_artifact_dir(p))
        if not folders:
            raise ArtifactError(f"{root}: no model artifacts found (each model is a folder with a config.json)")
        for folder in folders:
            self.models[folder.name] = self._load_one(folder)
        wanted = self.settings.default_model
        if wanted is not None:
            if wanted not in self.models:
                raise ArtifactError(
                    f"FUSION_DEFAULT_MODEL={wanted!r} is not among the models in {root}: {', '.join(self.models)}"
                )
            self.default_name = wanted
        elif len(self.models) == 1:
            self.default_name = next(iter(self.models))
        else:
            raise ArtifactError(
                f"{root} holds several models ({', '.join(self.models)}); set FUSION_DEFAULT_MODEL to choose one"
            )

    def _load_one(self, folder: Path) -> ServedModel:
        artifact = load_artifact(folder)
        predictor = Predictor(artifact, self.device, cpu_rewrites=self.settings.cpu_rewrites)
        s = self.settings
        config = BatchConfig(
            max_batch_size=s.max_batch_size,
            max_wait_s=s.max_wait_ms / 1e3,
            max_queue_size=s.max_queue_size,
            timeout_s=s.request_timeout_s,
        )
        observer: BatchObserver | None = self._observer_factory(folder.name) if self._observer_factory else None
        log.info("loaded model %s v%s from %s on %s", folder.name, artifact.spec.version, folder, self.device)
        preprocessor = Preprocessor(artifact.spec)
        return ServedModel(
            name=folder.name,
            path=folder,
            spec=artifact.spec,
            predictor=predictor,
            preprocessor=preprocessor,
            batcher=DynamicBatcher(
                functools.partial(run_jobs, predictor, preprocessor), config, name=folder.name, observer=observer
            ),
            metrics=artifact.metrics,
            parameter_count=artifact.model.parameter_count(),
        )

    def warmup(self) -> None:
        for model in self.models.values():
            t0 = time.perf_counter()
            model.predictor.warmup(self.settings.max_batch_size)
            log.info("warmed up %s in %.2f s", model.name, time.perf_counter() - t0)

    def start(self) -> None:
        for model in self.models.values():
            model.batcher.start()

    async def stop(self) -> None:
        await asyncio.gather(*(m.batcher.stop() for m in self.models.values()))

    def get(self, name: str | None = None) -> ServedModel:
        """The named model, or the default one; ModelNotFound otherwise."""
        key = self.default_name if name is None else name
        if key is None or not MODEL_NAME_RE.match(key) or key not in self.models:
            raise ModelNotFound(f"no model named {name!r}; GET /v1/models lists the {len(self.models)} served")
        return self.models[key]


def configure_torch(settings: Settings) -> None:
    """Thread count for the CPU forward pass (before any model runs)."""
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
