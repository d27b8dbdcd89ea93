"""A member's xenopsd seen from the coordinator: the interface of xapi.xenops.client.Client, each call
an internal call ("xenops.call") that the member makes on its own xenopsd socket. Following a task
(`run`, `wait`) is a member-side wait ("xenops.wait") that answers when the task has finished, or
with its progress once a second when the caller wants progress; `run` has the member destroy the
task too. A caller cancelled mid-wait cancels the xenopsd task and waits for its end, as Client does."""
from __future__ import annotations

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

    async def _wait_once(self, tid: str, want_progress: bool) -> dict:
        # the member destroys the task once the wait sees its end
        every = PROGRESS_EVERY if want_progress else LONG_WAIT
        return await self.peer.call("xenops.wait", tid, every, True)

    async def _destroy(self, tid: str) -> None:
        pass                    # done by the member's wait that saw the end

    async def _cancel_and_wait(self, tid: str) -> None:
        try:
            await self.call("TASK.cancel", tid)
            await self.peer.call("xenops.wait", tid, LONG_WAIT, True)
        except (XapiError, XenopsError):
            pass
