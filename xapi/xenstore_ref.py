"""Pure-Python reference of the xenstore shim's wire backend (csrc/xenstore_shim.c).

A blocking client of the xenstore wire protocol over a Unix socket: a 16-byte
header (type, req_id, tx_id, len; uint32 little-endian) and a payload of at
most 4096 bytes.  Same payloads, error numbers and (nearly) messages as the C
code; its "xs" backend behaves like a build without libxenstore.
"""
import collections
import errno
import os
import select
import socket
import struct
import threading

from xapi.xenstore_errors import (XenstoreError, as_value, check_timeout, check_tx, encode_path, encode_perms,
                                  split_event, split_names)

__all__ = ["HAVE_LIBXENSTORE", "Client", "XenstoreError", "connect", "default_path"]

HAVE_LIBXENSTORE = False

XS_DIRECTORY = 1
XS_READ = 2
XS_GET_PERMS = 3
XS_WATCH = 4
XS_UNWATCH = 5
XS_TRANSACTION_START = 6
XS_TRANSACTION_END = 7
XS_WRITE = 11
XS_MKDIR = 12
XS_RM = 13
XS_SET_PERMS = 14
XS_WATCH_EVENT = 15
XS_ERROR = 16

PAYLOAD_MAX = 4096
_REPLY_MAX = 64 * 1024
_HEADER = struct.Struct("<IIII")
_SUN_PATH_MAX = 108  # sizeof(sockaddr_un.sun_path) on Linux, NUL included
_DEFAULT_SOCKET = "/var/run/xenstored/socket"

# The errno names xenstored sends in XS_ERROR (xen/io/xs_wire.h); others -> EINVAL.
_XS_ERRORS = {
    name: getattr(errno, name)
    for name in (
        "EINVAL", "EACCES", "EEXIST", "EISDIR", "ENOENT", "ENOMEM", "ENOSPC", "EIO",
        "ENOTEMPTY", "ENOSYS", "EROFS", "EBUSY", "EAGAIN", "EISCONN", "E2BIG", "EPERM",
    )
}


def default_path() -> str:
    """$XENSTORED_PATH, else $XENSTORED_RUNDIR/socket, else /var/run/xenstored/socket."""
    path = os.environ.get("XENSTORED_PATH")
    if path:
        return path
    rundir = os.environ.get("XENSTORED_RUNDIR")
    return f"{rundir}/socket" if rundir else _DEFAULT_SOCKET


class Client:
    """A connection to xenstored.  ``tx`` arguments are 0 outside a transaction."""

    def __init__(self, path=None, backend: str = "wire"):
        encode_path(backend)
        if path:
            encode_path(path)
        if not backend:
            backend = "wire"
        if backend not in ("wire", "xs"):
            raise XenstoreError(errno.EINVAL, f"unknown backend '{backend}' (expected 'wire' or 'xs')")
        if backend == "xs":
            raise XenstoreError(errno.ENOSYS, "the xs backend is unavailable: built without libxenstore")
        path = path or default_path()
        bpath = encode_path(path)
        if len(bpath) >= _SUN_PATH_MAX:
            raise XenstoreError(
                errno.ENAMETOOLONG,
                f"cannot connect to xenstored at {path}: {os.strerror(errno.ENAMETOOLONG)}",
            )
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(bpath)
        except OSError as e:
            sock.close()
            code = e.errno or errno.EIO
            raise XenstoreError(code, f"cannot connect to xenstored at {path}: {os.strerror(code)}") from None
        self._sock = sock
        self._lock = threading.Lock()
        self._next_req_id = 1
        self._broken = False
        self._events = collections.deque()     # watch events that came while waiting for a reply
        self.backend = backend
        self.path = path

    # -- the wire -------------------------------------------------------

    def _fail(self, code: int, message: str):
        self._broken = True
        raise XenstoreError(code, message)

    def _recv_exact(self, n: int, ctx: str) -> bytes:
        chunks = []
        while n > 0:
            try:
                chunk = self._sock.recv(n)
            except InterruptedError:
                continue
            except OSError as e:
                code = e.errno or errno.EIO
                self._fail(code, f"{ctx}: receiving from xenstored: {os.strerror(code)}")
            if not chunk:
                self._fail(errno.ECONNRESET, f"{ctx}: xenstored closed the connection")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _request(self, type_: int, tx: int, payload: bytes, what: str, arg: str) -> bytes:
        ctx = f"{what} {arg[:128]}" if arg else what
        with self._lock:
            if self._sock is None:
                raise XenstoreError(errno.EBADF, "the connection is closed")
            if self._broken:
                raise XenstoreError(errno.EIO, f"{ctx}: connection to xenstored is unusable after an earlier failure")
            if len(payload) > PAYLOAD_MAX:
                raise XenstoreError(
                    errno.E2BIG,
                    f"{ctx}: request of {len(payload)} bytes exceeds the {PAYLOAD_MAX}-byte payload limit",
                )
            req_id = self._next_req_id
            self._next_req_id = (req_id + 1) & 0xFFFFFFFF
            try:
                self._sock.sendall(_HEADER.pack(type_, req_id, tx, len(payload)) + payload)
            except OSError as e:
                code = e.errno or errno.EIO
                self._fail(code, f"{ctx}: sending to xenstored: {os.strerror(code)}")
            while True:
                rtype, rid, _rtx, length = _HEADER.unpack(self._recv_exact(_HEADER.size, ctx))
                if length > _REPLY_MAX:
                    self._fail(errno.EIO, f"{ctx}: protocol error: reply of {length} bytes")
                body = self._recv_exact(length, ctx)
                if rtype == XS_WATCH_EVENT:
                    self._events.append(body)     # for a later read_watch
                    continue
                if rid != req_id:
                    self._fail(errno.EIO, f"{ctx}: protocol error: reply to request {rid}, expected {req_id}")
                if rtype == XS_ERROR:
                    name = body.split(b"\0", 1)[0].decode("ascii", "replace")
                    code = _XS_ERRORS.get(name, errno.EINVAL)
                    raise XenstoreError(code, f"{ctx}: {os.strerror(code)} ({name[:32]})")
                if rtype != type_:
                    self._fail(errno.EIO, f"{ctx}: protocol error: reply type {rtype} to request type {type_}")
                return body

    # -- the API ----------------------------------------------------------

    def read(self, path: str, tx: int = 0) -> bytes:
        p = encode_path(path)
        return self._request(XS_READ, check_tx(tx), p + b"\0", "read", path)

    def write(self, path: str, value: bytes, tx: int = 0) -> None:
        p, v = encode_path(path), as_value(value)
        self._request(XS_WRITE, check_tx(tx), p + b"\0" + v, "write", path)

    def mkdir(self, path: str, tx: int = 0) -> None:
        p = encode_path(path)
        self._request(XS_MKDIR, check_tx(tx), p + b"\0", "mkdir", path)

    def rm(self, path: str, tx: int = 0) -> None:
        p = encode_path(path)
        self._request(XS_RM, check_tx(tx), p + b"\0", "rm", path)

    def directory(self, path: str, tx: int = 0) -> list:
        p = encode_path(path)
        return split_names(self._request(XS_DIRECTORY, check_tx(tx), p + b"\0", "directory", path))

    def transaction_start(self) -> int:
        body = self._request(XS_TRANSACTION_START, 0, b"\0", "transaction_start", "")
        text = body.split(b"\0", 1)[0]
        if not (text and all(0x30 <= c <= 0x39 for c in text) and 0 < int(text) <= 0xFFFFFFFF):
            raise XenstoreError(
                errno.EIO,
                f"transaction_start: protocol error: bad transaction id '{text[:32].decode('ascii', 'replace')}'",
            )
        return int(text)

    def transaction_end(self, tx: int, commit: bool = True) -> None:
        """Commit (or abort); a conflicting commit raises XenstoreError(EAGAIN)."""
        tx = check_tx(tx)
        self._request(XS_TRANSACTION_END, tx, b"T\0" if commit else b"F\0", "transaction_end", str(tx))

    def get_perms(self, path: str, tx: int = 0) -> list:
        """["n0", "r5", ...]: the owner (and what others get) first, as xenstore-ls shows them."""
        p = encode_path(path)
        return split_names(self._request(XS_GET_PERMS, check_tx(tx), p + b"\0", "get_perms", path))

    def set_perms(self, path: str, perms, tx: int = 0) -> None:
        p, v = encode_path(path), encode_perms(perms)
        self._request(XS_SET_PERMS, check_tx(tx), p + b"\0" + v, "set_perms", path)

    def watch(self, path: str, token: str) -> None:
        p, t = encode_path(path), encode_path(token)
        self._request(XS_WATCH, 0, p + b"\0" + t + b"\0", "watch", path)

    def unwatch(self, path: str, token: str) -> None:
        p, t = encode_path(path), encode_path(token)
        self._request(XS_UNWATCH, 0, p + b"\0" + t + b"\0", "unwatch", path)

    def read_watch(self, timeout=None):
        """The next watch event as (path, token), waiting up to `timeout` seconds (None: no limit,
        0: only one already there); None when none came."""
        ms = check_timeout(timeout)
        with self._lock:
            if self._sock is None:
                raise XenstoreError(errno.EBADF, "the connection is closed")
            if self._events:
                return split_event(self._events.popleft())
            if self._broken:
                raise XenstoreError(errno.EIO, "read_watch: connection to xenstored is unusable after an earlier failure")
            ready, _, _ = select.select([self._sock], [], [], None if ms < 0 else ms / 1000)
            if not ready:
                return None
            rtype, _rid, _rtx, length = _HEADER.unpack(self._recv_exact(_HEADER.size, "read_watch"))
            if length > _REPLY_MAX:
                self._fail(errno.EIO, f"read_watch: protocol error: message of {length} bytes")
            body = self._recv_exact(length, "read_watch")
            if rtype != XS_WATCH_EVENT:
                self._fail(errno.EIO, f"read_watch: protocol error: message type {rtype} with no request outstanding")
            return split_event(body)

    def fileno(self) -> int:
        with self._lock:
            if self._sock is None:
                raise XenstoreError(errno.EBADF, "the connection is closed")
            return self._sock.fileno()

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(path=None, backend: str = "wire") -> Client:
    """Connect to xenstored: backend "wire" (any socket path; default from
    default_path()); "xs" fails as in a build without libxenstore."""
    return Client(path, backend)
