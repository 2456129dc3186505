"""DynamicBatcher: batches form under load, every admitted request gets exactly one answer."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from app.engine.batcher import DynamicBatcher
from app.engine.batching import BatchConfig
from app.errors import DeadlineExceeded, ModelFailure, NotReady, Overloaded


class Recorder:
    """A handler that doubles its inputs, records each batch, and can be held; a negative input makes its batch fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, items: list[int]) -> list[int]:
        self.entered.set()
        self.gate.wait(10)
        self.batches.append(list(items))
        if any(x < 0 for x in items):
            raise RuntimeError("boom")
        return [2 * x for x in items]


def run(coro_fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(coro_fn())


def make(handler: Recorder, **cfg: Any) -> DynamicBatcher[int, int]:
    config = {"max_batch_size": 8, "max_wait_s": 0.0, "max_queue_size": 256, "timeout_s": 10.0, **cfg}
    return DynamicBatcher(handler, BatchConfig(**config))


async def _until(cond: Callable[[], bool]) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError


def test_single_request_runs_alone_and_returns_its_result() -> None:
    async def main() -> None:
        h = Recorder()
        b = make(h)
        b.start()
        r = await b.submit(21)
        assert r.value == 42 and r.batch_size == 1 and r.queue_ms >= 0 and r.compute_ms >= 0
        await b.stop()

    run(main)


def test_requests_arriving_while_busy_share_the_next_batch() -> None:
    async def main() -> None:
        h = Recorder()
        b = make(h)
        b.start()
        h.gate.clear()
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.to_thread(h.entered.wait, 5)
        rest = [asyncio.ensure_future(b.submit(i)) for i in range(1, 6)]
        await _until(lambda: b.queue_depth == 5)
        h.gate.set()
        results = await asyncio.gather(first, *rest)
        assert [r.value for r in results] == [0, 2, 4, 6, 8, 10]
        assert h.batches == [[0], [1, 2, 3, 4, 5]]
        assert [r.batch_size for r in results] == [1, 5, 5, 5, 5, 5]
        await b.stop()

    run(main)


def test_batches_never_exceed_max_batch_size() -> None:
    async def main() -> None:
        h = Recorder()
        b = make(h, max_batch_size=3)
        b.start()
        h.gate.clear()
        futs = [asyncio.ensure_future(b.submit(i)) for i in range(10)]
        await asyncio.sleep(0.05)
        h.gate.set()
        assert [r.value for r in await asyncio.gather(*futs)] == [2 * i for i in range(10)]
        assert max(len(x) for x in h.batches) <= 3
        assert sorted(x for batch in h.batches for x in batch) == list(range(10))
        await b.stop()

    run(main)


def test_a_batch_holds_at_most_max_batch_size_rows_in_arrival_order() -> None:
    """Requests weighing several rows (explained ones) count as that many: 7 + 1 fill a batch of 8 rows, the next
    7-row request waits for the next batch (nothing behind it jumps the line), and one heavier than a whole batch
    runs alone."""
    async def main() -> None:
        h = Recorder()
        b = make(h, max_batch_size=8)
        b.start()
        h.gate.clear()
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.to_thread(h.entered.wait, 5)
        weights = {1: 7, 2: 1, 3: 7, 4: 1, 5: 9, 6: 1}
        rest = [asyncio.ensure_future(b.submit(i, rows=n)) for i, n in weights.items()]
        await _until(lambda: b.queue_depth == 6)
        h.gate.set()
        results = await asyncio.gather(first, *rest)
        assert [r.value for r in results] == [0, 2, 4, 6, 8, 10, 12]
        assert h.batches == [[0], [1, 2], [3, 4], [5], [6]]
        assert [r.batch_size for r in results] == [1, 2, 2, 2, 2, 1, 1]
        with pytest.raises(ValueError):
            await b.submit(7, rows=0)
        await b.stop()

    run(main)


def test_an_idle_model_takes_in_company_by_rows() -> None:
    """With max_wait, an idle model's forming batch takes in queued requests while they fit, and stops at one that
    does not (its wait ends there: nothing can join ahead of it)."""
    async def main() -> None:
        h = Recorder()
        b = make(h, max_batch_size=8, max_wait_s=5.0)
        b.start()
        coming = b.announce()  # would keep an idle batch waiting up to 5 s, if it could still fit anything
        futs = [asyncio.ensure_future(b.submit(i, rows=n)) for i, n in ((1, 3), (2, 3), (3, 3))]
        first_two = await asyncio.wait_for(asyncio.gather(*futs[:2]), 2)  # no 5 s wait: 3 more rows cannot fit
        assert [r.value for r in first_two] == [2, 4] and h.batches == [[1, 2]]
        coming.withdraw()  # the last one's batch had room, so it waited for the announced request until now
        assert (await asyncio.wait_for(futs[2], 2)).value == 6
        assert h.batches == [[1, 2], [3]]
        await b.stop()

    run(main)


def test_idle_model_waits_for_announced_requests() -> None:
    async def main() -> None:
        h = Recorder()
        b = make(h, max_wait_s=5.0)
        b.start()
        # Three uploads are announced; the first to arrive waits for the other two instead of going alone.
        announced = [b.announce() for _ in range(3)]
        futs = []
        for i, a in enumerate(announced):
            futs.append(asyncio.ensure_future(b.submit(i, a)))
            await asyncio.sleep(0.05)
        assert [r.value for r in await asyncio.gather(*futs)] == [0, 2, 4]
        assert h.batches == [[0, 1, 2]]
        await b.stop()

    run(main)


def test_withdrawn_announcement_ends_the_wait_at_once() -> None:
    async def main() -> None:
        h = Recorder()
        b = make(h, max_wait_s=30.0)
        b.start()
        coming, failing = b.announce(), b.announce()
        fut = asyncio.ensure_future(b.submit(1, coming))
        await asyncio.sleep(0.05)
        assert not fut.done()  # waiting for the other announced request
        failing.withdraw()  # e.g. its upload was refused: nobody else is coming
        r = await asyncio.wait_for(fut, timeout=5)
        assert r.batch_size == 1
        failing.withdraw()  # idempotent
        await b.stop()

    run(main)


def test_wait_for_announced_requests_is_capped_by_max_wait() -> None:
    async def main() -> None:
        h = Recorder()
        b = make(h, max_wait_s=0.1)
        b.start()
        b.announce()  # announced, never submitted nor withdrawn (a stalled upload)
        r = await asyncio.wait_for(b.submit(1), timeout=5)
        assert r.batch_size == 1 and 100 <= r.queue_ms < 4000
        await b.stop()

    run(main)


def test_full_queue_is_rejected_at_once_with_retry_after() -> None:
    async def main() -> None:
        h = Recorder()
        b = make(h, max_queue_size=2)
        b.start()
        h.gate.clear()
        running = asyncio.ensure_future(b.submit(0))
        await asyncio.to_thread(h.entered.wait, 5)
        queued = [asyncio.ensure_future(b.submit(i)) for i in (1, 2)]
        await _until(lambda: b.queue_depth == 2)
        with pytest.raises(Overloaded) as exc:
            await b.submit(3)
        assert exc.value.retry_after_s is not None and exc.value.retry_after_s >= 1
        h.gate.set()
        assert [r.value for r in await asyncio.gather(running, *queued)] == [0, 2, 4]
        await b.stop()

    run(main)


def test_request_past_its_deadline_gets_504_and_is_never_computed() -> None:
    async def main() -> None:
        h = Recorder()
        b = make(h, timeout_s=0.1)
        b.start()
        h.gate.clear()
        running = asyncio.ensure_future(b.submit(0))
        await asyncio.to_thread(h.entered.wait, 5)
        late = asyncio.ensure_future(b.submit(7))
        with pytest.raises(DeadlineExceeded):
            await late
        h.gate.set()
        assert (await running).value == 0  # already running when its deadline passed: it completes
        assert (await b.submit(8)).value == 16
        assert all(7 not in batch for batch in h.batches)
        await b.stop()

    run(main)


def test_failing_batch_fails_every_request_in_it_then_service_continues() -> None:
    async def main() -> None:
        h = Recorder()
        b = make(h)
        b.start()
        h.gate.clear()
        blocker = asyncio.ensure_future(b.submit(0))
        await asyncio.to_thread(h.entered.wait, 5)
        doomed = [asyncio.ensure_future(b.submit(i)) for i in (1, -1, 3)]  # -1 makes the handler raise
        await _until(lambda: b.queue_depth == 3)
        h.gate.set()
        assert (await blocker).value == 0
        outcomes = await asyncio.gather(*doomed, return_exceptions=True)
        assert h.batches[-1] == [1, -1, 3]
        assert all(isinstance(o, ModelFailure) for o in outcomes)
        assert (await b.submit(5)).value == 10
        await b.stop()

    run(main)


def test_cancelled_request_is_skipped() -> None:
    async def main() -> None:
        h = Recorder()
        b = make(h)
        b.start()
        h.gate.clear()
        running = asyncio.ensure_future(b.submit(0))
        await asyncio.to_thread(h.entered.wait, 5)
        gone = asyncio.ensure_future(b.submit(99))
        kept = asyncio.ensure_future(b.submit(1))
        await _until(lambda: b.queue_depth == 2)
        gone.cancel()
        h.gate.set()
        assert (await running).value == 0 and (await kept).value == 2
        assert all(99 not in batch for batch in h.batches)
        await b.stop()

    run(main)


def test_stop_finishes_admitted_requests_and_refuses_new_ones() -> None:
    async def main() -> None:
        h = Recorder()
        b = make(h, max_batch_size=2)
        b.start()
        h.gate.clear()
        futs = [asyncio.ensure_future(b.submit(i)) for i in range(5)]
        await asyncio.to_thread(h.entered.wait, 5)
        stopping = asyncio.ensure_future(b.stop())
        await asyncio.sleep(0.01)
        with pytest.raises(NotReady):
            await b.submit(9)
        h.gate.set()
        await stopping
        assert [r.value for r in await asyncio.gather(*futs)] == [0, 2, 4, 6, 8]

    run(main)
