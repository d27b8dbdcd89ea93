"""Stopping a background asyncio task (a service's loop): cancel it and wait until it has ended."""
from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancels `task` (None: nothing to do) and returns once it has ended; how it ended (cancelled,
    or with an error its loop did not catch) is not the stopper's concern."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass
