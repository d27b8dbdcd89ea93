"""Thin Python wrapper around the cffi module ``xapi._xenstore`` (csrc/xenstore_shim.c).

Same API as the pure-Python reference ``xapi.xenstore_ref``; pick between them
with ``xapi.xenstore``.
"""
from xapi._shim_handle import ShimHandle
from xapi._xenstore import ffi, lib
from xapi.xenstore_errors import (XenstoreError, as_value, check_timeout, check_tx, encode_path, encode_perms,
                                  split_event, split_names)

__all__ = ["HAVE_LIBXENSTORE", "Client", "XenstoreError", "connect", "default_path"]

HAVE_LIBXENSTORE = bool(lib.xss_have_libxenstore())


def default_path() -> str:
    """$XENSTORED_PATH, else $XENSTORED_RUNDIR/socket, else /var/run/xenstored/socket."""
    buf = ffi.new("char[]", 4096)
    n = lib.xss_default_path(buf, 4096)
    if n < 0:
        raise XenstoreError(-n, "the default xenstored socket path is too long")
    return ffi.string(buf).decode("utf-8", "surrogateescape")


class Client(ShimHandle):
    """A connection to xenstored.  ``tx`` arguments are 0 outside a transaction."""

    _error = XenstoreError
    _closed = "the connection is closed"
    _failed = "xenstore request failed"

    def __init__(self, path=None, backend: str = "wire"):
        b = encode_path(backend)
        p = encode_path(path) if path else b""
        self._open(ffi, lib, "xss", b, p)
        self.path = (path or default_path()) if self.backend == "wire" else None

    def _fetch(self, fn, *args) -> tuple[int, bytes]:
        """fn(handle, *args, char **out, size_t *len): its result and the bytes it allocated in
        out (freed here); none allocated (read_watch finding no event) reads as b""."""
        out = ffi.new("char **")
        n = ffi.new("size_t *")
        rc = self._call(fn, *args, out, n)
        if out[0] == ffi.NULL:
            return rc, b""
        try:
            return rc, ffi.unpack(out[0], n[0])
        finally:
            lib.xss_free(out[0])

    def read(self, path: str, tx: int = 0) -> bytes:
        p, tx = encode_path(path), check_tx(tx)
        return self._fetch(lib.xss_read, tx, p)[1]

    def write(self, path: str, value: bytes, tx: int = 0) -> None:
        p, v, tx = encode_path(path), as_value(value), check_tx(tx)
        self._call(lib.xss_write, tx, p, v, len(v))

    def mkdir(self, path: str, tx: int = 0) -> None:
        p, tx = encode_path(path), check_tx(tx)
        self._call(lib.xss_mkdir, tx, p)

    def rm(self, path: str, tx: int = 0) -> None:
        p, tx = encode_path(path), check_tx(tx)
        self._call(lib.xss_rm, tx, p)

    def directory(self, path: str, tx: int = 0) -> list:
        p, tx = encode_path(path), check_tx(tx)
        return split_names(self._fetch(lib.xss_directory, tx, p)[1])

    def transaction_start(self) -> int:
        tx = ffi.new("uint32_t *")
        self._call(lib.xss_transaction_start, tx)
        return int(tx[0])

    def transaction_end(self, tx: int, commit: bool = True) -> None:
        """Commit (or abort); a conflicting commit raises XenstoreError(EAGAIN)."""
        tx = check_tx(tx)
        self._call(lib.xss_transaction_end, tx, 1 if commit else 0)

    def get_perms(self, path: str, tx: int = 0) -> list:
        """["n0", "r5", ...]: the owner (and what others get) first, as xenstore-ls shows them."""
        p, tx = encode_path(path), check_tx(tx)
        return split_names(self._fetch(lib.xss_get_perms, tx, p)[1])

    def set_perms(self, path: str, perms, tx: int = 0) -> None:
        p, v, tx = encode_path(path), encode_perms(perms), check_tx(tx)
        self._call(lib.xss_set_perms, tx, p, v, len(v))

    def watch(self, path: str, token: str) -> None:
        p, t = encode_path(path), encode_path(token)
        self._call(lib.xss_watch, p, t)

    def unwatch(self, path: str, token: str) -> None:
        p, t = encode_path(path), encode_path(token)
        self._call(lib.xss_unwatch, p, t)

    def read_watch(self, timeout: float | None = None):
        """The next watch event as (path, token), waiting up to `timeout` seconds (None: no limit,
        0: only one already there); None when none came."""
        got, event = self._fetch(lib.xss_read_watch, check_timeout(timeout))
        return split_event(event) if got else None

    def fileno(self) -> int:
        return self._call(lib.xss_fileno)


def connect(path=None, backend: str = "wire") -> Client:
    """Connect to xenstored: backend "wire" (built-in client, any socket path;
    default path from default_path()) or "xs" (libxenstore's xs_open, no path)."""
    return Client(path, backend)
