"""Dynamic batching on asyncio, blind to what the payloads are.

Requests wait in a bounded queue; one collector task forms batches and runs them, one at a time, on a single
inference thread. While the model is busy, arrivals pile up and become the next batch, so batch size follows load
with no added wait. When the model is idle, a batch that is not full first takes in the requests the process
already holds, within `max_wait`: it lets the event loop run a few passes (the last batch's responses go out,
uploads already received are read) and waits for requests announced while their uploads arrive (`announce`).
It never waits for requests the server has not seen: a lone client pays a few event-loop passes, no more.

A request may weigh several rows (`submit(..., rows=n)`): a batch holds at most `max_batch_size` rows, whatever a row
is to the handler; a request heavier than that runs alone.

Every admitted request gets exactly one answer: its result, or the exception the handler returned in its place;
DeadlineExceeded if it was still queued at its deadline (never computed); ModelFailure if its batch raised;
NotReady if the batcher was stopped before it ran.
A request whose caller went away (its awaiting task was cancelled) is skipped.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from app.engine.batching import BatchConfig, BatchObserver, BatchResult, NullObserver
from app.errors import DeadlineExceeded, ModelFailure, NotReady, Overloaded

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


# Event-loop passes without a new request or announcement after which a forming batch stops looking for company.
# One pass is tens of microseconds; on loopback at concurrency 8 and 32, 3 filled the batches, 1 did not.
_QUIET_PASSES = 3


class Announcement:
    """A request on its way to `submit` (its upload is still arriving, say): a forming batch may wait for it.
    Submitting it with this announcement, or withdrawing it, ends the announcement."""

    __slots__ = ("_batcher",)

    def __init__(self, batcher: DynamicBatcher[Any, Any]) -> None:
        self._batcher: DynamicBatcher[Any, Any] | None = batcher

    def withdraw(self) -> None:
        """The request will not be submitted, or has been: stop counting on it. Idempotent."""
        batcher, self._batcher = self._batcher, None
        if batcher is not None:
            batcher._announced -= 1
            batcher._wakeup.set()  # a batch waiting for company re-checks whether any is still coming


class _Pending(Generic[T, R]):
    __slots__ = ("payload", "rows", "future", "admitted", "deadline", "timer", "dispatched")

    def __init__(
        self, payload: T, rows: int, future: asyncio.Future[BatchResult[R]], admitted: float, deadline: float
    ) -> None:
        self.payload = payload
        self.rows = rows
        self.future = future
        self.admitted = admitted
        self.deadline = deadline
        self.timer: asyncio.TimerHandle | None = None
        self.dispatched = False


class DynamicBatcher(Generic[T, R]):
    """Collects submitted payloads into batches for `handler(list[T]) -> list[R]`, run on one worker thread.
    The handler may put an exception in a request's place in its output to fail that request alone; an
    exception it raises fails the whole batch."""

    def __init__(
        self,
        handler: Callable[[list[T]], Sequence[R | Exception]],
        config: BatchConfig,
        *,
        name: str = "model",
        observer: BatchObserver | None = None,
    ) -> None:
        self._handler = handler
        self.config = config
        self.name = name
        self._observer: BatchObserver = observer or NullObserver()
        self._queue: deque[_Pending[T, R]] = deque()
        self._wakeup = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._announced = 0  # announced requests not yet submitted
        self._item_compute_s = 0.0  # moving average of compute time per request
        self.batches_run = 0

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def announced(self) -> int:
        """Requests announced and not yet submitted or withdrawn."""
        return self._announced

    def start(self) -> None:
        """Start the collector; call from the running event loop."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{self.name}")
        self._task = asyncio.get_running_loop().create_task(self._collect(), name=f"batcher-{self.name}")

    def admit(self) -> None:
        """Raise NotReady or Overloaded if a submission now would be refused; lets callers refuse work early."""
        if self._closing or self._task is None:
            raise NotReady(
                "the service is shutting down or not started; retry on another replica", retry_after_s=1
            )
        if len(self._queue) >= self.config.max_queue_size:
            self._observer.rejected("queue_full")
            retry = max(1, math.ceil(len(self._queue) * self._item_compute_s))
            raise Overloaded(
                f"the request queue is full ({self.config.max_queue_size} waiting); retry after {retry} s",
                retry_after_s=retry,
            )

    def announce(self) -> Announcement:
        """Declare a request that will be submitted soon; while it is outstanding, an idle model's next batch
        waits for it (up to `max_wait`). Withdraw it if the request fails before it is submitted."""
        self._announced += 1
        return Announcement(self)

    async def submit(self, payload: T, announcement: Announcement | None = None, rows: int = 1) -> BatchResult[R]:
        """Queue one payload and wait for its result; raises Overloaded at once when the queue is full.
        `announcement`, if the request was announced, ends once it is queued (or refused). `rows`: what the
        payload weighs against `max_batch_size`."""
        if announcement is not None:
            announcement.withdraw()
        if rows < 1:
            raise ValueError("a request weighs at least one row")
        self.admit()
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        pending: _Pending[T, R] = _Pending(payload, rows, loop.create_future(), now, now + self.config.timeout_s)
        # The loop's clock may tick in whole milliseconds (uvloop): fine for a deadline, not for measuring.
        pending.timer = loop.call_later(self.config.timeout_s, self._expire, pending)
        self._queue.append(pending)
        self._observer.queue_depth(len(self._queue))
        self._wakeup.set()
        # Cancelling the caller cancels the future too, and the collector skips cancelled requests.
        return await pending.future

    async def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Stop admitting, finish every admitted request (up to the timeout), then stop the worker."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), drain_timeout_s)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        for pending in self._queue:
            self._fail(pending, NotReady("the service shut down before this request could run; retry it"))
        self._queue.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _expire(self, pending: _Pending[T, R]) -> None:
        if not pending.dispatched and not pending.future.done():
            self._observer.rejected("deadline")
            pending.future.set_exception(
                DeadlineExceeded(
                    f"the request waited {self.config.timeout_s:g} s in the queue without being run; "
                    "the service is overloaded, retry later"
                )
            )

    def _take(self, rows: int, first: bool) -> list[_Pending[T, R]]:
        """Requests from the head of the queue, in order, weighing at most `rows` in all; when `first` (the batch
        is empty so far), the head request even if it alone weighs more."""
        taken: list[_Pending[T, R]] = []
        while self._queue:
            pending = self._queue[0]
            if pending.future.done():
                self._queue.popleft()
                continue
            if pending.rows > rows and not (first and not taken):
                break
            self._queue.popleft()
            taken.append(pending)
            rows -= pending.rows
        self._observer.queue_depth(len(self._queue))
        return taken

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        size = self.config.max_batch_size
        while True:
            batch = self._take(size, first=True)
            if not batch:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if _rows(batch) < size and self.config.max_wait_s > 0 and not self._closing:
                await self._gather_company(batch, size)
            batch = [p for p in batch if not p.future.done()]
            if batch:
                await self._run(batch, loop)

    async def _gather_company(self, batch: list[_Pending[T, R]], size: int) -> None:
        """Add to `batch` (in place) the requests already in the process, before an idle model takes it: let the
        event loop run what it has in hand (the previous batch's responses, uploads whose bytes have arrived,
        which announce themselves) until a few passes bring nothing new, and wait for announced requests; all
        within `max_wait` from now (not from the oldest request's arrival: requests that queued while the model
        was busy waited for the model, not for company)."""
        until = time.perf_counter() + self.config.max_wait_s
        quiet_passes = 0
        while (room := size - _rows(batch)) > 0 and not self._closing:
            remaining = until - time.perf_counter()
            if remaining <= 0 or self._queue:  # a request still queued did not fit: the batch is as full as it gets
                return
            had = len(batch)
            if self._announced:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(0)  # one pass of the event loop
            batch += self._take(room, first=False)
            if len(batch) == had and not self._announced:
                quiet_passes += 1
                if quiet_passes >= _QUIET_PASSES:
                    return
            else:
                quiet_passes = 0

    async def _run(self, batch: list[_Pending[T, R]], loop: asyncio.AbstractEventLoop) -> None:
        start = time.perf_counter()
        for p in batch:
            p.dispatched = True
            if p.timer is not None:
                p.timer.cancel()
        try:
            outputs = await loop.run_in_executor(self._executor, self._handler, [p.payload for p in batch])
            if len(outputs) != len(batch):
                raise RuntimeError(f"handler returned {len(outputs)} outputs for {len(batch)} inputs")
        except asyncio.CancelledError:
            for p in batch:
                self._fail(p, NotReady("the service shut down while this request ran; retry it"))
            raise
        except Exception:
            log.exception("batch of %d failed in model %s", len(batch), self.name)
            for p in batch:
                self._fail(p, ModelFailure("the model failed on the batch holding this request; retry it"))
            return
        compute = time.perf_counter() - start
        self.batches_run += 1
        self._item_compute_s = 0.8 * self._item_compute_s + 0.2 * compute / len(batch)
        self._observer.batch_done(len(batch), [start - p.admitted for p in batch], compute)
        for p, out in zip(batch, outputs):
            if p.future.done():
                continue
            if isinstance(out, Exception):  # the handler failed this request alone
                p.future.set_exception(out)
            else:
                p.future.set_result(BatchResult(out, (start - p.admitted) * 1e3, compute * 1e3, len(batch)))

    @staticmethod
    def _fail(pending: _Pending[T, R], error: Exception) -> None:
        if pending.timer is not None:
            pending.timer.cancel()
        if not pending.future.done():
            pending.future.set_exception(error)


def _rows(batch: list[_Pending[Any, Any]]) -> int:
    return sum(p.rows for p in batch)
