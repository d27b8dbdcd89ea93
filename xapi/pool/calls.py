"""Internal calls from one pool host to another (the coordinator to its members, a member to the
coordinator): `POST /internal` over TLS with the other host's certificate pinned by its SHA-256
fingerprint (the one recorded in its Certificate row at join), authenticated by the pool secret, on
kept-alive connections from a small pool per host (no thread per call).

    await app.pool.call(host_ref, "xenops.call", "VM.stat", uuid)

Errors come back as the exception the other side raised (XapiError, XenopsError); a host that cannot
be reached gives HOST_OFFLINE [host]. A caller cancelled mid-call drops that connection.

While host.emergency_disable_tls_verification is in force on this host (its marker file, apart from
the pool's normal verification flag) the fingerprint is not checked, as xapi's clients stop verifying
their peers then, so a host whose peer's certificate changed can reach it again; reenabling closes
the connections made meanwhile and pins again. One daemon per process: the state is the module's.
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import os
import socket
import ssl
import weakref

import orjson

from xapi.datamodel.errors import XapiError
from xapi.pool import internal
from xapi.xenops.server import XenopsError

log = logging.getLogger("xapi.pool.calls")

MAX_IDLE = 32               # idle connections kept per host (a storm keeps this many busy)
MAX_OPEN = 32               # connections open at once per host (callers beyond wait)
CONNECT_TIMEOUT = 5.0
DEAD_PEER = 10              # seconds without an acknowledgement before a connection counts as dead


def fingerprint_of(der: bytes) -> str:
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def _client_context() -> ssl.SSLContext:
    # Self-signed certificates: no chain to verify, the fingerprint is checked after the handshake.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


_CONTEXT = _client_context()

EMERGENCY_MARKER = "tls-verification-emergency-disabled"     # in the data folder
_unpinned = False                   # this host's emergency: peers' certificates not checked
_peers: weakref.WeakSet = weakref.WeakSet()


def emergency_marker(data_dir: str) -> str:
    return os.path.join(data_dir, EMERGENCY_MARKER)


def unpinned() -> bool:
    return _unpinned


def set_unpinned(on: bool) -> None:
    """The emergency switch for this host's outgoing pool connections; turned off, the connections
    made without the check are closed (their calls fail over to new, pinned ones)."""
    global _unpinned
    _unpinned = bool(on)
    if not _unpinned:
        for peer in list(_peers):
            peer.close_unpinned()


def watch_for_dead_peer(writer) -> None:
    """A host cut off the network sends no reset: without this a call to it, or a kept connection
    waiting for its reply, would wait for TCP's retransmissions (many minutes). Unacknowledged data
    (TCP_USER_TIMEOUT) or unanswered keepalive probes end the connection after DEAD_PEER seconds."""
    sock = writer.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, DEAD_PEER // 2)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, DEAD_PEER // 2)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, DEAD_PEER * 1000)


class Peer:
    """Connections to one host's internal endpoint."""

    def __init__(self, address: str, port: int, fingerprint: str, secret: str, name: str = "") -> None:
        self.address, self.port, self.fingerprint, self.secret = address, port, fingerprint, secret
        self.name = name or address
        self.idle: collections.deque = collections.deque()
        self.slots = asyncio.Semaphore(MAX_OPEN)
        self.unpinned_open: set = set()      # writers of open connections whose certificate was not checked
        _peers.add(self)

    async def _connect(self):
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.address, self.port, ssl=_CONTEXT, limit=16 << 20), CONNECT_TIMEOUT)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        if not der or fingerprint_of(der) != self.fingerprint:
            if not _unpinned:
                writer.close()
                raise XapiError("SSL_VERIFY_ERROR", f"{self.address}: certificate fingerprint mismatch")
            log.warning("%s: certificate fingerprint mismatch, accepted (TLS verification emergency-disabled)",
                        self.address)
            self.unpinned_open.add(writer)
        watch_for_dead_peer(writer)
        return reader, writer

    def close_unpinned(self) -> None:
        for writer in list(self.unpinned_open):
            writer.close()
        self.unpinned_open.clear()
        self.idle = collections.deque(c for c in self.idle if not c[1].is_closing())

    async def call(self, method: str, *params, timeout: float | None = None):
        body = orjson.dumps({"method": method, "params": list(params)})
        head = (f"POST {internal.PATH} HTTP/1.1\r\nHost: {self.address}\r\nUser-Agent: xapi-pool\r\n"
                f"Content-Type: application/json\r\nX-Pool-Secret: {self.secret}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        async with self.slots:
            for attempt in (0, 1):
                conn = None
                while self.idle and conn is None:
                    conn = self.idle.popleft()
                    if conn[1].is_closing():                # closed meanwhile (close_unpinned)
                        self.unpinned_open.discard(conn[1])
                        conn = None
                fresh = conn is None
                if fresh:
                    try:
                        conn = await self._connect()
                    except (OSError, asyncio.TimeoutError, ssl.SSLError) as e:
                        raise XapiError("HOST_OFFLINE", self.name) from e
                reader, writer = conn
                try:
                    writer.write(head + body)
                    status, keep, data = await asyncio.wait_for(_read_reply(reader), timeout)
                except (OSError, asyncio.IncompleteReadError, ssl.SSLError, ValueError) as e:
                    writer.close()
                    self.unpinned_open.discard(writer)
                    if fresh or attempt:
                        raise XapiError("HOST_OFFLINE", self.name) from e
                    # a kept connection the other side had closed (it restarted): so are the other
                    # idle ones; once more, on a fresh connection
                    self.close()
                    continue
                except BaseException:                       # cancelled or timed out: state unknown
                    writer.close()
                    self.unpinned_open.discard(writer)
                    raise
                if keep and status == 200 and len(self.idle) < MAX_IDLE and not writer.is_closing():
                    self.idle.append(conn)
                else:
                    writer.close()
                    self.unpinned_open.discard(writer)
                break
        if status != 200:
            raise XapiError("INTERNAL_ERROR", f"internal call {method} to {self.name}: HTTP {status}")
        reply = orjson.loads(data)
        if "error" in reply:
            if reply.get("source") == "xenops":
                raise XenopsError(*reply["error"])
            raise XapiError(*reply["error"])
        return reply.get("result")

    def close(self) -> None:
        while self.idle:
            writer = self.idle.popleft()[1]
            writer.close()
            self.unpinned_open.discard(writer)


async def _read_reply(reader) -> tuple[int, bool, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, keep = 0, True
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            keep = False
    data = await reader.readexactly(length) if length else b""
    return status, keep, data


class PoolCalls:
    """`app.pool`: internal calls to the hosts of this pool, found in the database by ref."""

    def __init__(self, app) -> None:
        self.app = app
        self.peers: dict[tuple, Peer] = {}
        set_unpinned(os.path.exists(emergency_marker(app.config.data_dir)))     # kept across restarts

    def _port(self) -> int:
        # Every host of a pool serves the same ports (as xapi's 80/443), so the internal endpoint of
        # another host is at this host's TLS port.
        return self.app.config.https_port

    def host_fingerprint(self, host_ref: str) -> str:
        certs = self.app.db.table("Certificate")
        for ref in certs.find("host", host_ref):
            if certs.get_field(ref, "type") == "host":
                return certs.get_field(ref, "fingerprint")
        raise XapiError("HOST_OFFLINE", host_ref)

    def peer(self, address: str, fingerprint: str, name: str = "") -> Peer:
        key = (address, self._port(), fingerprint)
        p = self.peers.get(key)
        if p is None or p.secret != self.app.pool_secret:
            if p is not None:
                p.close()
            p = self.peers[key] = Peer(address, self._port(), fingerprint, self.app.pool_secret, name)
        return p

    def peer_of(self, host_ref: str) -> Peer:
        hosts = self.app.db.table("host")
        if type(host_ref) is not str or host_ref not in hosts:
            raise XapiError("HANDLE_INVALID", "host", host_ref)
        return self.peer(hosts.get_field(host_ref, "address"), self.host_fingerprint(host_ref), host_ref)

    @property
    def coordinator_api(self):
        """A member's XenAPI calls to its coordinator with a slave_login session (xapi.pool.remote)."""
        api = getattr(self, "_coordinator_api", None)
        if api is None:
            from xapi.pool.remote import CoordinatorApi
            api = self._coordinator_api = CoordinatorApi(self.app)
        return api

    def coordinator_peer(self) -> Peer:
        """A member's way to its coordinator (address and fingerprint from pool.conf)."""
        role = self.app.role
        return self.peer(role.address, role.fingerprint, role.address)

    async def call(self, host_ref: str, method: str, *params, timeout: float | None = None):
        """Runs internal `method` on `host_ref` (locally when it is this host)."""
        if host_ref == self.app.host_ref:
            return await _local(self.app, method, params)
        return await self.peer_of(host_ref).call(method, *params, timeout=timeout)

    def xenops(self, host_ref: str):
        """That host's xenopsd: the local Client for this host, else one through its internal endpoint."""
        if host_ref == self.app.host_ref:
            return self.app.xenops
        from xapi.pool.xenops import RemoteXenops
        return RemoteXenops(self.peer_of(host_ref))     # HANDLE_INVALID now, not at the first call

    def close(self) -> None:
        for p in self.peers.values():
            p.close()
        self.peers.clear()
        api = getattr(self, "_coordinator_api", None)
        if api is not None:
            api.close()


async def _local(app, method: str, params):
    fn = internal.METHODS.get(method)
    if fn is None:
        raise XapiError("MESSAGE_METHOD_UNKNOWN", method)
    result = fn(app, *params)
    if asyncio.iscoroutine(result):
        result = await result
    return result
