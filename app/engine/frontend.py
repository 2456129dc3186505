"""What happens to a call's samples before they reach a model's batcher, in the process the request arrived in:
check them, decode and preprocess them (or leave a lone sample to the inference thread), name a failing sample."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from app.engine import pipeline
from app.engine.api import ModelDescription, Prediction
from app.engine.explain import Explanation
from app.engine.pipeline import DecodePools, Job, run_cpu
from app.errors import MissingInput, ModalityNotSupported, PayloadTooLarge, ServiceError
from app.inputs.budget import ByteBudget
from app.inputs.limits import DecodeLimits
from app.inputs.parts import RawInputs
from app.inputs.preprocess import Preprocessor

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One sample's answer from the model's side: probabilities, how it was served there, and its explanation
    (when asked for)."""

    probabilities: object  # np.ndarray
    preprocess_ms: float  # decoding in the inference thread (0 when it came preprocessed)
    queue_ms: float
    compute_ms: float
    batch_size: int
    explanation: Explanation | None = None


@dataclass
class FrontEnd:
    """A model's front end. `decode_in_batch`: a lone sample may be decoded in the inference thread, with its batch
    (only where that thread is in this process and `pools` leave it there: see app.engine.pipeline)."""

    description: ModelDescription
    preprocessor: Preprocessor
    limits: DecodeLimits
    pools: DecodePools
    max_samples: int
    decode_in_batch: bool

    @property
    def name(self) -> str:
        return self.description.name

    async def jobs(
        self,
        raws: Sequence[RawInputs],
        admit: Callable[[], None],
        budget: ByteBudget | None = None,
        explain: bool = False,
    ) -> tuple[list[Job], float]:
        """The jobs for a call's samples (each to be explained, with `explain`), and the time spent decoding them
        here. `admit` raises if the model would refuse the work now, before any CPU is spent decoding. Where a lone
        sample is left raw, the inference thread decodes it; otherwise every sample is decoded before any is
        queued, so a bad sample in a call of several costs no forward pass. Each sample's decoded footprint is held
        on `budget` while it is decoded."""
        if not raws:
            raise MissingInput("the request holds no samples; send at least one")
        if len(raws) > self.max_samples:
            raise PayloadTooLarge(
                f"the request holds {len(raws)} samples; at most {self.max_samples} fit in the queue "
                "(FUSION_MAX_QUEUE_SIZE), split it into smaller requests"
            )
        for i, raw in enumerate(raws):
            named(i, len(raws), self._check_modalities, raw)
        if self.decode_in_batch and len(raws) == 1 and self.pools.in_batch(raws[0]):
            return [Job(raw=raws[0], budget=budget, explain=explain)], 0.0
        admit()
        t0 = time.perf_counter()
        samples = await asyncio.gather(
            *(run_cpu(self.pools.executor(raw), named, i, len(raws), pipeline.prepare_sample, self.preprocessor, raw,
                      self.limits, budget)
              for i, raw in enumerate(raws)),
            return_exceptions=True,
        )
        raise_first(samples)
        jobs = [Job(sample=s, explain=explain) for s in samples]  # type: ignore[arg-type]  # no exception left
        return jobs, (time.perf_counter() - t0) * 1e3

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


def predictions(raws: Sequence[RawInputs], outcomes: Sequence[Outcome], preprocess_ms: float) -> list[Prediction]:
    """A call's predictions. `preprocess_ms`: the time its samples spent being decoded before they were queued."""
    return [
        Prediction(
            probabilities=o.probabilities,  # type: ignore[arg-type]
            modalities=raw.modalities,
            preprocess_ms=preprocess_ms + o.preprocess_ms,
            queue_ms=o.queue_ms,
            compute_ms=o.compute_ms,
            batch_size=o.batch_size,
            explanation=o.explanation,
        )
        for raw, o in zip(raws, outcomes)
    ]


def named(index: int, total: int, step: Callable[..., T], *args: object) -> T:
    """Run one step for sample `index`; a ServiceError it raises names the sample (when there are several)."""
    try:
        return step(*args)
    except ServiceError as exc:
        raise named_error(index, total, exc) from None


def named_error(index: int, total: int, exc: BaseException) -> BaseException:
    if total == 1 or not isinstance(exc, ServiceError):
        return exc
    return exc.renamed(f"sample {index}: {exc.message}")


def raise_first(outcomes: Sequence[object]) -> None:
    """Raise the first exception in `outcomes` (by position), if any."""
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
