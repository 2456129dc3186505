"""Readiness shared by the processes of one multi-process service: one flag per process (workers and model
owners), and a service-wide draining flag the supervisor raises on SIGTERM. In shared memory, so every worker's
/readyz answers for the whole service."""
from __future__ import annotations

from multiprocessing.context import SpawnContext


class Peers:
    """Made by the supervisor before it starts its processes, and passed to each of them."""

    def __init__(self, ctx: SpawnContext, count: int) -> None:
        self._ready = ctx.Array("b", count, lock=False)
        self._draining = ctx.Value("b", 0, lock=False)

    def set_ready(self, index: int, ready: bool) -> None:
        self._ready[index] = int(ready)

    def is_ready(self, index: int) -> bool:
        return bool(self._ready[index])

    @property
    def all_ready(self) -> bool:
        return all(self._ready)

    @property
    def draining(self) -> bool:
        return bool(self._draining.value)

    def drain(self) -> None:
        self._draining.value = 1
