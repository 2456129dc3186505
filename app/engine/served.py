"""One loaded model and the one path every sample takes through it: check -> decode/preprocess -> batcher ->
predictor -> probabilities, for 1..N samples per call."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

from app.engine.api import Announcement, ModelDescription, Prediction
from app.engine.batcher import BatchResult, DynamicBatcher
from app.engine.config import EngineConfig
from app.engine import pipeline
from app.engine.pipeline import Job, Scored, run_cpu
from app.engine.predictor import Predictor
from app.errors import MissingInput, ModalityNotSupported, PayloadTooLarge, ServiceError
from app.inputs.parts import RawInputs
from app.inputs.preprocess import Preprocessor

T = TypeVar("T")


@dataclass
class ServedModel:
    """One artifact, loaded and ready: its description, predictor, preprocessor and batcher."""

    description: ModelDescription
    predictor: Predictor
    preprocessor: Preprocessor
    batcher: DynamicBatcher[Job, Scored]
    config: EngineConfig
    pool: Executor | None

    @property
    def name(self) -> str:
        return self.description.name

    async def predict(
        self, raws: Sequence[RawInputs], announcement: Announcement | None = None, *, explain: bool = False
    ) -> list[Prediction]:
        """Predictions for `raws`, in order; see `Engine.predict`. Where decoding runs: a single sample, when there
        is no decode pool, is decoded in the inference thread with its batch (app.engine.pipeline); otherwise every
        sample is decoded (on the pool, or here) before any is queued, so a bad sample in a call of several costs
        no forward pass. `announcement` ends once the first sample is queued (or refused)."""
        if not raws:
            raise MissingInput("the request holds no samples; send at least one")
        capacity = self.batcher.config.max_queue_size
        if len(raws) > capacity:
            raise PayloadTooLarge(
                f"the request holds {len(raws)} samples; at most {capacity} fit in the queue "
                "(FUSION_MAX_QUEUE_SIZE), split it into smaller requests"
            )
        for i, raw in enumerate(raws):
            _named(i, len(raws), self._check_modalities, raw)
        preprocess_ms = 0.0
        if self.pool is None and len(raws) == 1:
            jobs = [Job(raw=raws[0], explain=explain)]
        else:
            self.batcher.admit()  # under overload, refuse before spending CPU on decoding
            t0 = time.perf_counter()
            samples = await asyncio.gather(
                *(run_cpu(self.pool, _named, i, len(raws), pipeline.prepare_sample, self.preprocessor, raw,
                          self.config.limits)
                  for i, raw in enumerate(raws)),
                return_exceptions=True,
            )
            _raise_first(samples)
            preprocess_ms = (time.perf_counter() - t0) * 1e3
            jobs = [Job(sample=s, explain=explain) for s in samples]  # type: ignore[arg-type]  # no exception left
        # An explained sample runs once more per other non-empty subset of its modalities: 2^m - 1 rows in all.
        weights = [(1 << len(raw.modalities)) - 1 if explain else 1 for raw in raws]
        results = await self._submit_all(jobs, weights, announcement)
        return [_prediction(r, raw.modalities, preprocess_ms) for raw, r in zip(raws, results)]

    def _check_modalities(self, raw: RawInputs) -> None:
        spec = self.description.spec
        if not raw.modalities:
            raise MissingInput(f"no input given; send at least one of the fields {', '.join(spec.ordered_modalities)}")
        unsupported = [m for m in raw.modalities if m not in spec.modalities]
        if unsupported:
            raise ModalityNotSupported(
                f"model '{self.name}' does not accept {', '.join(unsupported)}; "
                f"it accepts {', '.join(spec.ordered_modalities)}"
            )

    async def _submit_all(
        self, jobs: list[Job], rows: list[int], announcement: Announcement | None
    ) -> list[BatchResult[Scored]]:
        """Queue every job and wait for all. If one fails (refused, or its sample failed to decode), the others are
        withdrawn (a withdrawn job still queued is skipped) and the error of the first failing sample by position
        is raised, naming it. Cancelling the caller withdraws them all."""
        if len(jobs) == 1:
            return [await self.batcher.submit(jobs[0], announcement, rows[0])]
        tasks = [asyncio.ensure_future(self.batcher.submit(j, announcement if i == 0 else None, n))
                 for i, (j, n) in enumerate(zip(jobs, rows))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for t in tasks:
                if not t.done():
                    t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        outcomes = [t.exception() if not t.cancelled() else None for t in tasks]
        _raise_first([_named_error(i, len(jobs), e) if e is not None else None for i, e in enumerate(outcomes)])
        return [t.result() for t in tasks]


def _prediction(result: BatchResult[Scored], modalities: tuple, preprocess_ms: float) -> Prediction:
    """`preprocess_ms`: the time the sample spent being decoded before it was queued, if it was."""
    scored = result.value
    return Prediction(
        probabilities=scored.probabilities,
        modalities=modalities,
        preprocess_ms=preprocess_ms + scored.preprocess_ms,
        queue_ms=result.queue_ms,
        compute_ms=scored.forward_ms,
        batch_size=result.batch_size,
        explanation=scored.explanation,
    )


def _named(index: int, total: int, step: Callable[..., T], *args: object) -> T:
    """Run one step for sample `index`; a ServiceError it raises names the sample (when there are several)."""
    try:
        return step(*args)
    except ServiceError as exc:
        raise _named_error(index, total, exc) from None


def _named_error(index: int, total: int, exc: BaseException) -> BaseException:
    if total == 1 or not isinstance(exc, ServiceError):
        return exc
    return exc.renamed(f"sample {index}: {exc.message}")


def _raise_first(outcomes: Sequence[object]) -> None:
    """Raise the first exception in `outcomes` (by position), if any."""
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
