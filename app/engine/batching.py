"""What a dynamic batcher is configured with (BatchConfig), gives each request back (BatchResult) and reports as it
works (BatchObserver): the batcher's interface to the rest of the engine, apart from its queue logic
(app.engine.batcher)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """How batches form (from the service's settings: app.engine.config)."""

    max_batch_size: int
    max_wait_s: float
    max_queue_size: int
    timeout_s: float


@dataclass(frozen=True, slots=True)
class BatchResult(Generic[R]):
    """One request's output and how it was served."""

    value: R
    queue_ms: float
    compute_ms: float
    batch_size: int


class BatchObserver(Protocol):
    """Receives what the batcher does (for metrics)."""

    def batch_done(self, size: int, queue_waits_s: Sequence[float], compute_s: float) -> None: ...

    def rejected(self, reason: str) -> None: ...

    def queue_depth(self, depth: int) -> None: ...


class NullObserver:
    """Observes nothing (a batcher without metrics)."""

    def batch_done(self, size: int, queue_waits_s: Sequence[float], compute_s: float) -> None:
        pass

    def rejected(self, reason: str) -> None:
        pass

    def queue_depth(self, depth: int) -> None:
        pass
