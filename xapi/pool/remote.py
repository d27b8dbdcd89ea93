"""XenAPI calls from this host to another one's public endpoint (JSON-RPC over TLS).

`Remote`: for pool.join, the joining host logs in to the coordinator with the credentials it was given
and learns the coordinator's certificate fingerprint from the handshake (pinned from then on).
`CoordinatorApi` (`app.pool.coordinator_api`): a member's writes to the pool database, as XenAPI calls
to its coordinator with a session.slave_login session (certificate pinned, kept-alive connections,
calls concurrent)."""
from __future__ import annotations

import asyncio
import ssl

import orjson

from xapi.datamodel.errors import XapiError
from xapi.pool.calls import _CONTEXT, _read_reply, fingerprint_of, watch_for_dead_peer

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
    """Calls run concurrently (a call may wait on one the coordinator makes back to this member, whose
    drivers call the coordinator again): each takes an idle connection or opens one."""

    MAX_IDLE = 8

    def __init__(self, app) -> None:
        self.app = app
        self.idle: list[Remote] = []
        self.target: tuple | None = None
        self.session: str | None = None
        self._login = asyncio.Lock()

    def _remote(self) -> Remote:
        role = self.app.role
        target = (role.address, role.fingerprint)
        if target != self.target:
            self.close()
            self.target = target
        if self.idle:
            return self.idle.pop()
        address = target[0]
        return Remote(address, self.app.config.https_port, target[1],
                      offline=("HOST_OFFLINE", address), broken=("HOST_OFFLINE", address))

    async def _session(self, remote: Remote, stale: str | None) -> str:
        async with self._login:
            if self.session is None or self.session == stale:
                self.session = await remote.call("session.slave_login", self.app.host_ref, self.app.pool_secret)
            return self.session

    async def call(self, method: str, *params):
        """`method` on the coordinator with this member's pool session in front of `params`."""
        app = self.app
        if app.is_coordinator:
            raise XapiError("INTERNAL_ERROR", "the coordinator has no coordinator to call")
        for fresh_try in (False, True):
            reused = bool(self.idle) and not fresh_try
            remote = self._remote()
            target = self.target
            try:
                result = await self._call(remote, method, params)
            except XapiError as e:
                if e.code == "HOST_OFFLINE" and reused and remote.conn is None:
                    self.close()            # kept connections the coordinator closed (it restarted)
                    continue
                self._done(remote, target)
                raise
            except BaseException:
                remote.close()
                raise
            self._done(remote, target)
            return result

    async def _call(self, remote: Remote, method: str, params):
        stale = None
        for attempt in (0, 1):
            session = await self._session(remote, stale)
            try:
                return await remote.call(method, session, *params)
            except XapiError as e:
                if e.code != "SESSION_INVALID" or attempt:
                    raise
                stale = session             # the coordinator restarted or changed: log in again

    def _done(self, remote: Remote, target) -> None:
        if remote.conn is not None and target == self.target and len(self.idle) < self.MAX_IDLE:
            self.idle.append(remote)
        else:
            remote.close()

    def close(self) -> None:
        for remote in self.idle:
            remote.close()
        self.idle, self.session = [], None
