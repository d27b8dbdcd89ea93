"""A member's xenopsd seen from the coordinator: the interface of xapi.xenops.client.Client, each call
an internal call ("xenops.call") that the member makes on its own xenopsd socket. Following a task
(`run`, `wait`) is a member-side wait ("xenops.wait") that answers when the task has finished, or
with its progress once a second when the caller wants progress; `run` has the member destroy the
task too. A caller cancelled mid-wait cancels the xenopsd task and waits for its end, as Client does."""
from __future__ import annotations

import asyncio

from xapi.datamodel.errors import XapiError
from xapi.xenops.client import Client
from xapi.xenops.server import XenopsError

PROGRESS_EVERY = 1.0        # seconds between progress reports when the caller wants them
LONG_WAIT = 30.0            # one round trip per this long otherwise


class RemoteXenops(Client):
    def __init__(self, peer) -> None:
        """`peer`: the member's internal endpoint (xapi.pool.calls.Peer)."""
        super().__init__(path="")
        self.peer = peer

    async def call(self, method: str, *params):
        return await self.peer.call("xenops.call", method, list(params))

    async def wait(self, tid: str, on_progress=None, destroy: bool = False) -> dict:
        every = PROGRESS_EVERY if on_progress is not None else LONG_WAIT
        try:
            while True:
                st = await self.peer.call("xenops.wait", tid, every, destroy)
                if on_progress is not None:
                    on_progress(st["progress"])
                if st["state"] != "pending":
                    return st
        except asyncio.CancelledError:
            await asyncio.shield(self._cancel_and_wait(tid))
            raise

    async def _cancel_and_wait(self, tid: str) -> None:
        try:
            await self.call("TASK.cancel", tid)
            await self.peer.call("xenops.wait", tid, LONG_WAIT, True)
        except (XapiError, XenopsError):
            pass

    async def run(self, method: str, *params, on_progress=None):
        tid = await self.call(method, *params)
        st = await self.wait(tid, on_progress, destroy=True)
        if st["state"] == "completed":
            return st["result"]
        raise XenopsError(*st["error"])
