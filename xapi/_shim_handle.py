"""What the Python wrappers of the cffi shims (``xapi._xenctrl_py``, ``xapi._xenstore_py``) share:
an open C handle behind a lock, its errors raised with the shim's last error.

The shims name their handle functions alike (``<prefix>_open``, ``_close``, ``_backend``,
``_last_error``; csrc/shim_common.h), so one class serves both.
"""
import errno
import threading


def text(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


class ShimHandle:
    """Subclasses set the class attributes below and call ``_open``."""

    _ERRLEN = 1024
    _error: type          # the shim's exception class, built from (errno, message)
    _closed = "the handle is closed"
    _failed = "the call failed"     # when the shim left no message

    def _open(self, ffi, lib, prefix: str, *args) -> None:
        self._ffi, self._lib = ffi, lib
        self._last_error = getattr(lib, f"{prefix}_last_error")
        out = ffi.new(f"{prefix}_handle **")
        err = ffi.new("char[]", self._ERRLEN)
        rc = getattr(lib, f"{prefix}_open")(*args, out, err, self._ERRLEN)
        if rc < 0:
            raise self._error(-rc, text(ffi.string(err)))
        self._h = ffi.gc(out[0], getattr(lib, f"{prefix}_close"))
        self._lock = threading.Lock()
        self.backend = text(ffi.string(getattr(lib, f"{prefix}_backend")(self._h)))

    def _handle(self):
        if self._h is None:
            raise self._error(errno.EBADF, self._closed)
        return self._h

    def _check(self, h, rc: int) -> int:
        if rc < 0:
            msg = text(self._ffi.string(self._last_error(h)))
            raise self._error(-rc, msg or self._failed)
        return rc

    def _call(self, fn, *args) -> int:
        """fn(handle, *args) under the lock; its result, or the shim's error raised."""
        with self._lock:
            h = self._handle()
            return self._check(h, fn(h, *args))

    def close(self) -> None:
        with self._lock:
            if self._h is not None:
                self._ffi.release(self._h)
                self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
