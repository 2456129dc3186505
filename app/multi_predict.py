"""Several samples in one call, through the same pipeline as one: every sample is checked, decoded and preprocessed
first (a bad one refuses the whole call before anything is queued), then each is submitted to the model's dynamic
batcher, so they share forward passes with each other and with every other request.

Nothing here knows about HTTP.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import TypeVar

from app.batching import BatchResult
from app.collate import Sample
from app.inputs import DecodeLimits
from app.errors import MissingInput, PayloadTooLarge, ServiceError
from app.serving import Job, Prediction, RawInputs, ServedModel, Scored, prepare_sample, run_cpu

T = TypeVar("T")


async def predict_many(
    model: ServedModel, raws: Sequence[RawInputs], limits: DecodeLimits, pool: Executor | None
) -> list[Prediction]:
    """Predictions for `raws`, in order. The first failing sample's error (by position) names the sample."""
    if not raws:
        raise MissingInput("the request holds no samples; send at least one")
    capacity = model.batcher.config.max_queue_size
    if len(raws) > capacity:
        raise PayloadTooLarge(
            f"the request holds {len(raws)} samples; at most {capacity} fit in the queue (FUSION_MAX_QUEUE_SIZE), "
            "split it into smaller requests"
        )
    for i, raw in enumerate(raws):
        _named(i, len(raws), model.check_modalities, raw)
    t0 = time.perf_counter()
    prepared = await asyncio.gather(
        *(run_cpu(pool, _named, i, len(raws), prepare_sample, model.preprocessor, raw, limits)
          for i, raw in enumerate(raws)),
        return_exceptions=True,
    )
    samples: list[Sample] = []
    for outcome in prepared:
        if isinstance(outcome, BaseException):
            raise outcome
        samples.append(outcome)
    preprocess_ms = (time.perf_counter() - t0) * 1e3
    results = await _submit_all(model, samples)
    return [Prediction.of(r, raw.modalities, preprocess_ms) for raw, r in zip(raws, results)]


def _named(index: int, total: int, step: Callable[..., T], *args: object) -> T:
    """Run one pipeline step for sample `index`; a ServiceError it raises names the sample (when there are several)."""
    try:
        return step(*args)
    except ServiceError as exc:
        if total == 1:
            raise
        raise type(exc)(f"sample {index}: {exc.message}", headers=exc.headers) from None


async def _submit_all(model: ServedModel, samples: list[Sample]) -> list[BatchResult[Scored]]:
    """Queue every sample; if one is refused (full queue) or fails, the others are withdrawn (a withdrawn request
    still queued is skipped by the batcher) and that error is raised. Cancelling the caller withdraws them all."""
    tasks = [asyncio.ensure_future(model.batcher.submit(Job(sample=s))) for s in samples]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in tasks:
        error = None if t.cancelled() else t.exception()
        if error is not None:
            raise error
    return [t.result() for t in tasks]
