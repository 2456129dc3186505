"""A variant of the Ray Serve deployment for bench/ray_serve.py, not shipped: batches formed by Ray's `@serve.batch`
instead of the service's own batcher, everything else the same (the app, the decode policy, the forward pass).

`ServeBatcher` takes the place of `app.engine.batcher.DynamicBatcher` in each served model: the same handler
(`app.engine.pipeline.run_jobs`: decode what came raw, one forward pass) on one inference thread, the same
`max_batch_size`, and `batch_wait_timeout_s` = FUSION_MAX_WAIT_MS (or SERVE_BATCH_WAIT_S, in seconds: Ray's default
is 0.01). What it does not do: deadlines (504) and
announcements (waiting for uploads in progress); the queue bound is kept (503).
Import path for Ray: `bench.ray_batch:build`.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve.deployment import Application

from app.config import Settings
from app.engine.batching import BatchConfig, BatchObserver, BatchResult
from app.engine.config import EngineConfig
from app.engine.engine import TorchEngine
from app.engine.served import ServedModel
from app.errors import NotReady, Overloaded
from app.metrics import ServiceMetrics
from app.ray_serve import FusionReplica, deployment_options

DEPLOYMENT = "fusion-serve-batch"


class _NoAnnouncement:
    def withdraw(self) -> None:
        pass


class ServeBatcher:
    """What ServedModel and TorchEngine use of DynamicBatcher (admit, announce, submit, start, stop, config),
    with batches formed by `@serve.batch`."""

    def __init__(self, handler: Callable[[list[Any]], Sequence[Any]], config: BatchConfig,
                 observer: BatchObserver | None) -> None:
        self.config = config
        self._handler = handler
        self._observer = observer
        self._pending = 0
        self._executor: ThreadPoolExecutor | None = None
        wait_s = float(os.environ.get("SERVE_BATCH_WAIT_S", config.max_wait_s))
        self._batched = serve.batch(max_batch_size=config.max_batch_size, batch_wait_timeout_s=wait_s)(self._run)

    def admit(self) -> None:
        if self._executor is None:
            raise NotReady("not started", retry_after_s=1)
        if self._pending >= self.config.max_queue_size:
            raise Overloaded(f"the request queue is full ({self.config.max_queue_size} waiting)", retry_after_s=1)

    def announce(self) -> _NoAnnouncement:
        return _NoAnnouncement()

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer")

    async def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, payload: Any, announcement: Any = None) -> BatchResult[Any]:
        if announcement is not None:
            announcement.withdraw()
        self.admit()
        self._pending += 1
        admitted = time.perf_counter()
        try:
            value, started, compute_s, size = await self._batched((payload, admitted))
        finally:
            self._pending -= 1
        if isinstance(value, Exception):
            raise value
        return BatchResult(value, (started - admitted) * 1e3, compute_s * 1e3, size)

    async def _run(self, items: list[tuple[Any, float]]) -> list[tuple[Any, float, float, int]]:
        started = time.perf_counter()
        outputs = await asyncio.get_running_loop().run_in_executor(
            self._executor, self._handler, [payload for payload, _ in items])
        compute_s = time.perf_counter() - started
        if self._observer is not None:
            self._observer.batch_done(len(items), [started - admitted for _, admitted in items], compute_s)
        return [(out, started, compute_s, len(items)) for out in outputs]


class ServeBatchEngine(TorchEngine):
    """TorchEngine with a ServeBatcher in each served model."""

    def _load_one(self, folder: Path) -> ServedModel:
        served = super()._load_one(folder)
        old = served.batcher
        served.batcher = ServeBatcher(old._handler, old.config, old._observer)  # type: ignore[assignment]
        return served


def serve_batch_engine(settings: Settings, metrics: ServiceMetrics) -> ServeBatchEngine:
    return ServeBatchEngine(EngineConfig.from_settings(settings), observer=metrics.batch_observer)


class ServeBatchReplica(FusionReplica):
    engine_factory = staticmethod(serve_batch_engine)


ServeBatchDeployment = serve.deployment(serve.ingress()(ServeBatchReplica))


def build(args: dict[str, Any] | None = None) -> Application:
    return ServeBatchDeployment.options(**{**deployment_options(Settings()), "name": DEPLOYMENT}).bind()
