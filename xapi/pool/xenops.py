"""A member's xenopsd seen from the coordinator: the interface of xapi.xenops.client.Client (call, run,
wait with progress, cancellation passed through: run/wait come from Client and go through `call`),
each call an internal call ("xenops.call") that the member makes on its own xenopsd socket."""
from __future__ import annotations

from xapi.xenops.client import Client


class RemoteXenops(Client):
    def __init__(self, peer) -> None:
        """`peer`: the member's internal endpoint (xapi.pool.calls.Peer)."""
        super().__init__(path="")
        self.peer = peer

    async def call(self, method: str, *params):
        return await self.peer.call("xenops.call", method, list(params))
