"""The work one batch does: decode and preprocess the samples that came raw, then one forward pass.

Where decoding runs is one decision (`DecodePools`): on a thread pool before a sample is queued, or (where the
process has 2 CPUs or fewer) in the inference thread, for the whole batch just before its forward pass; a large
sample (a phone photo, a long recording) is then decoded before it is queued, on a thread of its own at a lower
priority, so that the small samples batched with it do not wait for its decoding, nor slow much while it runs.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from app.engine import explain
from app.engine.explain import Explanation
from app.engine.predictor import Predictor
from app.host import available_cpus, decode_threads, lower_this_thread_priority
from app.inputs.audio import decode_audio
from app.inputs.budget import ByteBudget
from app.inputs.footprint import decoded_footprint
from app.inputs.image import decode_image
from app.inputs.limits import DecodeLimits
from app.inputs.parts import RawInputs
from app.inputs.preprocess import Preprocessor
from app.inputs.text import decode_text
from app.model.batch import Sample

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Job:
    """One sample in the batcher's queue: preprocessed already, or raw, to be decoded in the inference thread
    (within `budget`, when there is one); `explain`: also run it on every subset of its modalities
    (app.engine.explain)."""

    sample: Sample | None = None
    raw: RawInputs | None = None
    budget: ByteBudget | None = None
    explain: bool = False

    @property
    def rows(self) -> int:
        """What the job weighs in a batch: explained, it runs once more per other non-empty subset of its m
        modalities, 2^m - 1 rows in all; else 1."""
        if not self.explain:
            return 1
        held = self.sample if self.sample is not None else self.raw
        assert held is not None
        return (1 << len(held.modalities)) - 1


@dataclass(frozen=True, slots=True)
class Scored:
    """One sample's output from a batch: its probabilities, the time its decoding took there (0 when it came
    preprocessed), the time of the batch's forward pass, and its explanation when it asked for one."""

    probabilities: np.ndarray
    preprocess_ms: float
    forward_ms: float
    explanation: Explanation | None = None


def prepare_sample(
    preprocessor: Preprocessor, raw: RawInputs, limits: DecodeLimits, budget: ByteBudget | None = None
) -> Sample:
    """Decode (checking `limits`) and preprocess one sample, holding its decoded footprint (estimated from the
    files' headers) on `budget` meanwhile. Raises InvalidInput subclasses for the caller's input, Overloaded when
    the budget has no room for it now."""
    with budget.decoding(decoded_footprint(raw, limits)) if budget is not None else contextlib.nullcontext():
        return preprocessor(
            image=None if raw.image is None else decode_image(raw.image, limits, preprocessor.image_decode_side),
            text=None if raw.text is None else decode_text(raw.text, limits),
            audio=None if raw.audio is None else decode_audio(raw.audio, limits),
        )


def run_jobs(
    predictor: Predictor, preprocessor: Preprocessor, limits: DecodeLimits, jobs: list[Job]
) -> list[Scored | Exception]:
    """The batcher's handler (in the inference thread): decode the jobs that came raw, then one forward pass over
    every sample. A job whose decoding fails gets its error in its place (a 4xx for that sample alone)."""
    outputs: list[Scored | Exception | None] = [None] * len(jobs)
    samples: list[Sample] = []
    placed: list[tuple[int, float]] = []  # (job index, its decoding ms) for each sample
    for i, job in enumerate(jobs):
        if job.sample is not None:
            samples.append(job.sample)
            placed.append((i, 0.0))
            continue
        assert job.raw is not None
        t0 = time.perf_counter()
        try:
            samples.append(prepare_sample(preprocessor, job.raw, limits, job.budget))
        except Exception as exc:  # any failure here is this sample's alone: InvalidInput (4xx), else a 500
            outputs[i] = exc
            continue
        placed.append((i, (time.perf_counter() - t0) * 1e3))
    if samples:
        t0 = time.perf_counter()
        flags = [jobs[i].explain for i, _ in placed]
        scores = predictor.predict(samples, flags) if any(flags) else predictor.predict(samples)
        forward_ms = (time.perf_counter() - t0) * 1e3
        for (i, preprocess_ms), sample, s in zip(placed, samples, scores):
            explanation = None
            if s.subsets is not None:
                explanation = explain.build(s.probabilities, s.subsets, explain.mask_code(sample.modalities),
                                            predictor.spec.ordered_modalities, s.fusion or {})
            outputs[i] = Scored(s.probabilities, preprocess_ms, forward_ms, explanation)
    return outputs  # type: ignore[return-value]  # every slot is filled


# A sample whose uploads add up to this many bytes or more counts as large (see the module docstring): a
# 12-megapixel JPEG is ~4 MB and takes milliseconds to decode even at a reduced scale; the usual small picture,
# caption and clip are tens of kilobytes.
LARGE_SAMPLE_BYTES = 1 << 20


def sample_bytes(raw: RawInputs) -> int:
    """The size of a sample's uploads, bytes (a caption's characters count as bytes)."""
    return sum(len(part) for part in (raw.image, raw.text, raw.audio) if part is not None)


@dataclass(frozen=True)
class DecodePools:
    """Where a process decodes and preprocesses samples before they are queued: `general`, every sample, where
    there is a decode pool; else a small sample in the inference thread with its batch (or on the event loop, where
    that thread is in another process or a call holds several samples) and a large one on the `large` thread."""

    general: ThreadPoolExecutor | None
    large: ThreadPoolExecutor | None

    @classmethod
    def make(cls, workers: int) -> DecodePools:
        """`workers` decode threads; 0 for none; -1 for automatic: none where the process may use 2 CPUs or fewer.
        Without them, each batch's samples are decoded in the inference thread just before the forward pass: the
        event loop keeps only the HTTP work, and on one or two cores that beats handing each upload to another
        thread (context switches, GIL hand-offs, and caches made cold for both decoding and the forward pass by the
        HTTP work interleaved between them); large samples still get one thread of their own."""
        if workers < 0:
            workers = decode_threads(available_cpus())
        if workers:
            return cls(ThreadPoolExecutor(workers, thread_name_prefix="preprocess"), None)
        # The large-sample thread runs at a lower priority, so that a photo's decoding takes the CPU in small slices
        # the batches around it hardly notice (app.host.LARGE_DECODE_NICENESS).
        return cls(None, ThreadPoolExecutor(1, thread_name_prefix="preprocess-large",
                                            initializer=lower_this_thread_priority))

    def in_batch(self, raw: RawInputs) -> bool:
        """Whether `raw` may be left to the inference thread (where that thread is in this process)."""
        return self.general is None and sample_bytes(raw) < LARGE_SAMPLE_BYTES

    def executor(self, raw: RawInputs) -> Executor | None:
        """The threads that decode `raw` before it is queued; None: right here, on the event loop."""
        if self.general is not None:
            return self.general
        return self.large if sample_bytes(raw) >= LARGE_SAMPLE_BYTES else None

    def slots(self, models: int) -> int:
        """How many samples may be decoded at once: one per decode thread; without them, one per model (each
        model's inference thread decodes its batches), one on the event loop (a call of several samples) and the
        large-sample thread."""
        if self.general is not None:
            return self.general._max_workers  # noqa: SLF001 - the pool's size, as made here
        return models + 2

    def shutdown(self) -> None:
        for pool in (self.general, self.large):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)


async def run_cpu(pool: Executor | None, fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` on the pool's threads, or right here on the event loop when there is no pool."""
    if pool is None:
        return fn(*args)
    return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
