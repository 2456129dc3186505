"""Work that stops when its client leaves: a request whose client disconnected is cancelled (a queued sample is then
skipped by the batcher), so nobody computes an answer nobody reads."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Final, TypeVar

from starlette.requests import Request

T = TypeVar("T")


class _ClientLeft:
    """The outcome of work cancelled because its client disconnected."""


CLIENT_LEFT: Final = _ClientLeft()


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T | _ClientLeft:
    """Await `work`; if the client disconnects first, cancel it and return CLIENT_LEFT. Call once the body is read."""
    task = asyncio.current_task()
    assert task is not None
    left = False

    async def cancel_when_client_leaves() -> None:
        nonlocal left
        # The body has been read, so the next ASGI message can only be the disconnect.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        left = True
        task.cancel()

    # One watcher task per request, and `work` runs in this one: the cheapest form on the hot path.
    watcher = asyncio.create_task(cancel_when_client_leaves())
    try:
        return await work
    except asyncio.CancelledError:
        if not left:
            raise
        task.uncancel()
        return CLIENT_LEFT
    finally:
        watcher.cancel()
