"""Thin Python wrapper around the cffi module ``xapi._xenstore`` (csrc/xenstore_shim.c).

Same API as the pure-Python reference ``xapi.xenstore_ref``; pick between them
with ``xapi.xenstore``.
"""
import errno
import threading

from xapi._xenstore import ffi, lib
from xapi.xenstore_errors import (XenstoreError, as_value, check_timeout, check_tx, encode_path, encode_perms,
                                  split_event, split_names)

__all__ = ["HAVE_LIBXENSTORE", "Client", "XenstoreError", "connect", "default_path"]

HAVE_LIBXENSTORE = bool(lib.xss_have_libxenstore())
_ERRLEN = 1024


def _text(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


def default_path() -> str:
    """$XENSTORED_PATH, else $XENSTORED_RUNDIR/socket, else /var/run/xenstored/socket."""
    buf = ffi.new("char[]", 4096)
    n = lib.xss_default_path(buf, 4096)
    if n < 0:
        raise XenstoreError(-n, "the default xenstored socket path is too long")
    return ffi.string(buf).decode("utf-8", "surrogateescape")


class Client:
    """A connection to xenstored.  ``tx`` arguments are 0 outside a transaction."""

    def __init__(self, path=None, backend: str = "wire"):
        b = encode_path(backend)
        p = encode_path(path) if path else b""
        out = ffi.new("xss_handle **")
        err = ffi.new("char[]", _ERRLEN)
        rc = lib.xss_open(b, p, out, err, _ERRLEN)
        if rc < 0:
            raise XenstoreError(-rc, _text(ffi.string(err)))
        self._h = ffi.gc(out[0], lib.xss_close)
        self._lock = threading.Lock()
        self.backend = _text(ffi.string(lib.xss_backend(self._h)))
        self.path = (path or default_path()) if self.backend == "wire" else None

    def _handle(self):
        if self._h is None:
            raise XenstoreError(errno.EBADF, "the connection is closed")
        return self._h

    @staticmethod
    def _check(h, rc: int) -> int:
        if rc < 0:
            msg = _text(ffi.string(lib.xss_last_error(h)))
            raise XenstoreError(-rc, msg or "xenstore request failed")
        return rc

    def read(self, path: str, tx: int = 0) -> bytes:
        p, tx = encode_path(path), check_tx(tx)
        value = ffi.new("char **")
        n = ffi.new("size_t *")
        with self._lock:
            h = self._handle()
            self._check(h, lib.xss_read(h, tx, p, value, n))
        try:
            return ffi.unpack(value[0], n[0])
        finally:
            lib.xss_free(value[0])

    def write(self, path: str, value: bytes, tx: int = 0) -> None:
        p, v, tx = encode_path(path), as_value(value), check_tx(tx)
        with self._lock:
            h = self._handle()
            self._check(h, lib.xss_write(h, tx, p, v, len(v)))

    def mkdir(self, path: str, tx: int = 0) -> None:
        p, tx = encode_path(path), check_tx(tx)
        with self._lock:
            h = self._handle()
            self._check(h, lib.xss_mkdir(h, tx, p))

    def rm(self, path: str, tx: int = 0) -> None:
        p, tx = encode_path(path), check_tx(tx)
        with self._lock:
            h = self._handle()
            self._check(h, lib.xss_rm(h, tx, p))

    def directory(self, path: str, tx: int = 0) -> list:
        p, tx = encode_path(path), check_tx(tx)
        names = ffi.new("char **")
        n = ffi.new("size_t *")
        with self._lock:
            h = self._handle()
            self._check(h, lib.xss_directory(h, tx, p, names, n))
        try:
            return split_names(ffi.unpack(names[0], n[0]))
        finally:
            lib.xss_free(names[0])

    def transaction_start(self) -> int:
        tx = ffi.new("uint32_t *")
        with self._lock:
            h = self._handle()
            self._check(h, lib.xss_transaction_start(h, tx))
        return int(tx[0])

    def transaction_end(self, tx: int, commit: bool = True) -> None:
        """Commit (or abort); a conflicting commit raises XenstoreError(EAGAIN)."""
        tx = check_tx(tx)
        with self._lock:
            h = self._handle()
            self._check(h, lib.xss_transaction_end(h, tx, 1 if commit else 0))

    def get_perms(self, path: str, tx: int = 0) -> list:
        """["n0", "r5", ...]: the owner (and what others get) first, as xenstore-ls shows them."""
        p, tx = encode_path(path), check_tx(tx)
        perms = ffi.new("char **")
        n = ffi.new("size_t *")
        with self._lock:
            h = self._handle()
            self._check(h, lib.xss_get_perms(h, tx, p, perms, n))
        try:
            return split_names(ffi.unpack(perms[0], n[0]))
        finally:
            lib.xss_free(perms[0])

    def set_perms(self, path: str, perms, tx: int = 0) -> None:
        p, v, tx = encode_path(path), encode_perms(perms), check_tx(tx)
        with self._lock:
            h = self._handle()
            self._check(h, lib.xss_set_perms(h, tx, p, v, len(v)))

    def watch(self, path: str, token: str) -> None:
        p, t = encode_path(path), encode_path(token)
        with self._lock:
            h = self._handle()
            self._check(h, lib.xss_watch(h, p, t))

    def unwatch(self, path: str, token: str) -> None:
        p, t = encode_path(path), encode_path(token)
        with self._lock:
            h = self._handle()
            self._check(h, lib.xss_unwatch(h, p, t))

    def read_watch(self, timeout: float | None = None):
        """The next watch event as (path, token), waiting up to `timeout` seconds (None: no limit,
        0: only one already there); None when none came."""
        ms = check_timeout(timeout)
        event = ffi.new("char **")
        n = ffi.new("size_t *")
        with self._lock:
            h = self._handle()
            got = self._check(h, lib.xss_read_watch(h, ms, event, n))
        if not got:
            return None
        try:
            return split_event(ffi.unpack(event[0], n[0]))
        finally:
            lib.xss_free(event[0])

    def fileno(self) -> int:
        with self._lock:
            h = self._handle()
            return self._check(h, lib.xss_fileno(h))

    def close(self) -> None:
        with self._lock:
            if self._h is not None:
                ffi.release(self._h)
                self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(path=None, backend: str = "wire") -> Client:
    """Connect to xenstored: backend "wire" (built-in client, any socket path;
    default path from default_path()) or "xs" (libxenstore's xs_open, no path)."""
    return Client(path, backend)
