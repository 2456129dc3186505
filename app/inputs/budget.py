"""A byte budget for the memory that requests in flight hold: their bodies (taken by the web layer as they are
admitted or arrive) and their decoded buffers (taken by the engine while it decodes them).

Part of the budget, the reserve, is kept for decoding: uploads may fill the budget only up to `limit - reserve`, so
that uploads which were admitted can still be decoded however many more arrive. A decode may use the whole budget.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from app.errors import Overloaded, PayloadTooLarge

RETRY_AFTER_S = 1.0  # uploads in flight take about that long to finish and give their bytes back


class BudgetObserver(Protocol):
    """Told of what a budget does (for metrics)."""

    def configured(self, limit: int, reserve: int) -> None: ...

    def held(self, in_use: int) -> None: ...

    def refused(self) -> None: ...


class ByteBudget:
    """Bytes held by work in progress against a limit, per process. Unconfigured (limit None), it counts but admits
    everything. Thread-safe: bodies are taken on the event loop, decoded buffers on the threads that decode."""

    def __init__(self, limit: int | None = None, reserve: int = 0) -> None:
        self._lock = threading.Lock()
        self._in_use = 0
        self.refused = 0  # takes refused since start (uploads and decodes)
        self.limit: int | None = None
        self.reserve = 0
        self.observer: BudgetObserver | None = None  # told of every change (metrics)
        if limit is not None:
            self.configure(limit, reserve)

    def configure(self, limit: int, reserve: int = 0) -> None:
        """Set the limit and the part of it kept for decoding (0 <= reserve < limit)."""
        if limit < 1 or not 0 <= reserve < limit:
            raise ValueError(f"a budget of {limit} bytes cannot keep {reserve} in reserve")
        self.limit, self.reserve = limit, reserve
        if self.observer is not None:
            self.observer.configured(limit, reserve)

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def for_uploads(self) -> int | None:
        """The most bytes uploads may hold together (None: unlimited)."""
        return None if self.limit is None else self.limit - self.reserve

    def try_take(self, nbytes: int, *, decoding: bool = False) -> bool:
        """Take `nbytes` if they fit (within the whole limit for decoding, within `for_uploads` otherwise)."""
        with self._lock:
            cap = self.limit if decoding else self.for_uploads
            if cap is not None and self._in_use + nbytes > cap:
                self.refused += 1
                if self.observer is not None:
                    self.observer.refused()
                return False
            self._in_use += nbytes
            if self.observer is not None:
                self.observer.held(self._in_use)
            return True

    def give_back(self, nbytes: int) -> None:
        with self._lock:
            self._in_use -= nbytes
            if self.observer is not None:
                self.observer.held(self._in_use)

    def hold(self) -> Hold:
        """A new request's holding on this budget."""
        return Hold(self)

    @contextmanager
    def decoding(self, nbytes: int) -> Iterator[None]:
        """Hold `nbytes` while one sample is decoded and preprocessed. Overloaded (a 503 with Retry-After) when they
        do not fit now; PayloadTooLarge when they never could."""
        if nbytes <= 0:
            yield
            return
        if not self.try_take(nbytes, decoding=True):
            if self.limit is not None and nbytes > self.limit:
                raise PayloadTooLarge(
                    f"decoding this input takes about {mib(nbytes)}, more than this server's memory budget for "
                    f"requests in flight ({mib(self.limit)}); send a smaller image or a shorter audio clip"
                )
            raise Overloaded(
                f"no memory to decode this input now ({mib(nbytes)}); retry after {RETRY_AFTER_S:g} s",
                retry_after_s=RETRY_AFTER_S,
            )
        try:
            yield
        finally:
            self.give_back(nbytes)


class Hold:
    """The bytes one request holds on a budget (its body); `release` gives them all back, once."""

    __slots__ = ("budget", "held", "_released")

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.held = 0
        self._released = False

    def take(self, nbytes: int) -> None:
        """Hold `nbytes` more: PayloadTooLarge when uploads could never hold that much together, else Overloaded
        (503, Retry-After) when they do not fit now."""
        if self.budget.try_take(nbytes):
            self.held += nbytes
            return
        cap = self.budget.for_uploads
        assert cap is not None  # an unlimited budget refuses nothing
        if self.held + nbytes > cap:
            raise PayloadTooLarge(
                f"the request body is larger than this server can hold in memory ({mib(cap)} for all uploads in "
                "flight); send a smaller one"
            )
        raise Overloaded(
            f"uploads in flight already hold the memory this server has for them ({mib(cap)}); "
            f"retry after {RETRY_AFTER_S:g} s",
            retry_after_s=RETRY_AFTER_S,
        )

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.budget.give_back(self.held)


def mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:,.1f} MiB"
