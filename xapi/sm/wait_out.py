"""Waiting out a pool thread's call when the caller is cancelled."""
from __future__ import annotations

import asyncio


async def wait_out(fut) -> None:
    """Returns once `fut` (a call running in a pool thread) has ended, however often the caller is
    cancelled meanwhile: the caller's cleanup may close files that call still uses, and a closed fd
    number is soon another file's or a pipe's."""
    while not fut.done():
        try:
            await asyncio.wait([fut])
        except asyncio.CancelledError:
            continue
    if not fut.cancelled():
        fut.exception()                 # retrieved: the caller's own exception goes on
