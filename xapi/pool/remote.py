"""XenAPI calls from this host to another one's.

`Remote` (another host's public endpoint, JSON-RPC over TLS): for pool.join, the joining host logs in to the coordinator with the credentials it was given
and learns the coordinator's certificate fingerprint from the handshake (pinned from then on).
`CoordinatorApi` (`app.pool.coordinator_api`): a member's writes to the pool database, sent to its
coordinator's internal endpoint (xapi.pool.relay: one round trip each, the coordinator's generation
comes with the result)."""
from __future__ import annotations

import asyncio
import ssl

import orjson

from xapi.datamodel.errors import XapiError
from xapi.pool.calls import _CONTEXT, Peer, _read_reply, fingerprint_of, watch_for_dead_peer

TIMEOUT = 30.0


class Remote:
    """One keep-alive connection to address:port, opened on first use."""

    def __init__(self, address: str, port: int, fingerprint: str | None = None,
                 offline: tuple = ("JOINING_HOST_CONNECTION_FAILED",),
                 broken: tuple = ("JOINING_HOST_SERVICE_FAILED",)) -> None:
        self.address, self.port = address, port
        self.fingerprint = fingerprint       # learnt at connect when None
        self.offline, self.broken = offline, broken     # the errors for no answer / a bad one
        self.conn = None
        self._ids = 0

    async def _open(self):
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.address, self.port, ssl=_CONTEXT, limit=16 << 20), TIMEOUT)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            raise XapiError(*self.offline) from None
        fp = fingerprint_of(writer.get_extra_info("ssl_object").getpeercert(binary_form=True) or b"")
        if self.fingerprint is None:
            self.fingerprint = fp
        elif fp != self.fingerprint:
            writer.close()
            raise XapiError("SSL_VERIFY_ERROR", f"{self.address}: certificate fingerprint changed")
        watch_for_dead_peer(writer)
        return reader, writer

    async def request(self, method: str, path: str, body: bytes, headers: dict | None = None) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = await self._open()
        reader, writer = self.conn
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write((f"{method} {path} HTTP/1.1\r\nHost: {self.address}\r\nUser-Agent: xapi-pool\r\n"
                      f"Content-Type: application/json\r\n{extra}Content-Length: {len(body)}\r\n\r\n").encode()
                     + body)
        try:
            status, keep, data = await asyncio.wait_for(_read_reply(reader), TIMEOUT)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ssl.SSLError, ValueError):
            self.close()
            raise XapiError(*self.broken) from None
        if not keep:
            self.close()
        return status, data

    async def call(self, method: str, *params):
        """A XenAPI call; failures raise the XapiError the other host answered."""
        self._ids += 1
        body = orjson.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": self._ids})
        status, data = await self.request("POST", "/jsonrpc", body)
        try:
            reply = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise XapiError(*self.broken) from None
        error = reply.get("error") if isinstance(reply, dict) else None
        if error:
            if isinstance(error, dict):
                raise XapiError(str(error.get("message", "INTERNAL_ERROR")), *map(str, error.get("data") or []))
            raise XapiError(*map(str, error))
        if status != 200 or "result" not in reply:
            raise XapiError(*self.broken)
        return reply["result"]

    def close(self) -> None:
        if self.conn is not None:
            self.conn[1].close()
            self.conn = None


class CoordinatorApi:
    """`app.pool.coordinator_api`: a member's writes to the pool database (xapi.pool.relay), each one
    internal call to its coordinator answered with the result and the coordinator's generation. Its
    own connections (certificate pinned, kept alive), apart from the replica's and the heartbeats':
    calls run concurrently, and a call may wait on one the coordinator makes back to this member,
    whose drivers write through the coordinator again."""

    def __init__(self, app) -> None:
        self.app = app
        self.peer: Peer | None = None
        self.target: tuple | None = None

    def _peer(self) -> Peer:
        app = self.app
        role = app.role
        target = (role.address, role.fingerprint, app.pool_secret)
        if self.peer is None or target != self.target:
            self.close()
            self.peer = Peer(role.address, app.config.https_port, role.fingerprint, app.pool_secret, role.address)
            self.target = target
        return self.peer

    async def call(self, method: str, *params):
        """XenAPI call `method` (its parameters after the session), run by the coordinator."""
        return await self.write("member.call", method, list(params))

    async def write(self, name: str, *params):
        """Internal write method `name` on the coordinator for this host; its result, once this
        member's replica holds the change (when the replica is running)."""
        app = self.app
        if app.is_coordinator:
            raise XapiError("INTERNAL_ERROR", "the coordinator has no coordinator to call")
        peer = self._peer()
        try:
            reply = await peer.call(name, app.host_ref, *params, timeout=TIMEOUT)
        except asyncio.TimeoutError:
            raise XapiError("HOST_OFFLINE", peer.name) from None
        replica = getattr(app, "replica", None)
        if replica is not None and replica.synced.is_set():
            await replica.caught_up(int(reply["generation"]))
        return reply["result"]

    def close(self) -> None:
        if self.peer is not None:
            self.peer.close()
        self.peer = self.target = None
