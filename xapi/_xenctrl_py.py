"""Thin Python wrapper around the cffi module ``xapi._xenctrl`` (csrc/xenctrl_shim.c).

Same API as the pure-Python reference ``xapi.xenctrl_ref``; pick between them
with ``xapi.xenctrl``.
"""
import errno
import threading
import uuid

from xapi._xenctrl import ffi, lib
from xapi.xenctrl_errors import (
    XenctrlError, check_domid, check_kib, check_reason, check_uuid, check_vcpus,
)

__all__ = ["HAVE_LIBXENCTRL", "Interface", "XenctrlError", "open"]

HAVE_LIBXENCTRL = bool(lib.xcs_have_libxenctrl())
PAGE_SIZE = lib.XCS_PAGE_SIZE

_ERRLEN = 1024
_BATCH = 256

_PHYSINFO_FIELDS = (
    "nr_cpus", "threads_per_core", "cores_per_socket", "nr_nodes", "cpu_khz",
    "total_pages", "free_pages", "scrub_pages",
)
_FLAG_FIELDS = ("dying", "shutdown", "paused", "blocked", "running", "hvm")
_INT_FIELDS = (
    "domid", "shutdown_reason", "tot_pages", "max_pages", "nr_online_vcpus",
    "max_vcpu_id", "cpu_time",
)


def _text(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


class Interface:
    """An open handle on a hypervisor backend ("sim" or "xc")."""

    def __init__(self, backend: str = "sim", sim_config: str = ""):
        if "\0" in backend or "\0" in sim_config:
            raise XenctrlError(errno.EINVAL, "backend and sim_config must not contain NUL")
        out = ffi.new("xcs_handle **")
        err = ffi.new("char[]", _ERRLEN)
        rc = lib.xcs_open(backend.encode(), sim_config.encode(), out, err, _ERRLEN)
        if rc < 0:
            raise XenctrlError(-rc, _text(ffi.string(err)))
        self._h = ffi.gc(out[0], lib.xcs_close)
        self._lock = threading.Lock()
        self.backend = _text(ffi.string(lib.xcs_backend(self._h)))

    def _handle(self):
        if self._h is None:
            raise XenctrlError(errno.EBADF, "the interface is closed")
        return self._h

    def _check(self, h, rc: int) -> int:
        if rc < 0:
            msg = _text(ffi.string(lib.xcs_last_error(h)))
            raise XenctrlError(-rc, msg or "xenctrl call failed")
        return rc

    def physinfo(self) -> dict:
        out = ffi.new("xcs_physinfo_t *")
        with self._lock:
            h = self._handle()
            self._check(h, lib.xcs_physinfo(h, out))
        return {name: int(getattr(out, name)) for name in _PHYSINFO_FIELDS}

    def domain_list(self) -> list:
        result = []
        buf = ffi.new("xcs_dominfo_t[]", _BATCH)
        first = 0
        with self._lock:
            h = self._handle()
            while True:
                n = self._check(h, lib.xcs_domain_list(h, first, buf, _BATCH))
                for i in range(n):
                    result.append(_dominfo(buf[i]))
                if n < _BATCH:
                    break
                first = buf[n - 1].domid + 1
        return result

    def domain_create(self, uuid: str, hvm: bool = False, max_vcpus: int = 1,
                      max_mem_kib: int = 262144) -> int:
        """Create a paused domain; returns its domid."""
        handle = check_uuid(uuid)
        max_vcpus = check_vcpus("domain_create", max_vcpus)
        max_mem_kib = check_kib("domain_create", max_mem_kib)
        out = ffi.new("uint32_t *")
        with self._lock:
            h = self._handle()
            self._check(h, lib.xcs_domain_create(h, handle, 1 if hvm else 0, max_vcpus, max_mem_kib, out))
        return int(out[0])

    def domain_destroy(self, domid: int) -> None:
        domid = check_domid("domain_destroy", domid)
        self._call(lib.xcs_domain_destroy, domid)

    def domain_pause(self, domid: int) -> None:
        domid = check_domid("domain_pause", domid)
        self._call(lib.xcs_domain_pause, domid)

    def domain_unpause(self, domid: int) -> None:
        domid = check_domid("domain_unpause", domid)
        self._call(lib.xcs_domain_unpause, domid)

    def domain_shutdown(self, domid: int, reason) -> None:
        """reason: "poweroff", "reboot", "suspend", "crash" (or the XCS_SHUTDOWN_* int)."""
        reason = check_reason(reason)
        domid = check_domid("domain_shutdown", domid)
        self._call(lib.xcs_domain_shutdown, domid, reason)

    def domain_setmaxmem(self, domid: int, kib: int) -> None:
        kib = check_kib("domain_setmaxmem", kib)
        domid = check_domid("domain_setmaxmem", domid)
        self._call(lib.xcs_domain_setmaxmem, domid, kib)

    def domain_max_vcpus(self, domid: int, n: int) -> None:
        n = check_vcpus("domain_max_vcpus", n)
        domid = check_domid("domain_max_vcpus", domid)
        self._call(lib.xcs_domain_max_vcpus, domid, n)

    def domain_getinfo(self, domid: int) -> dict:
        domid = check_domid("domain_getinfo", domid)
        out = ffi.new("xcs_dominfo_t *")
        self._call(lib.xcs_domain_getinfo, domid, out)
        return _dominfo(out[0])

    def _call(self, fn, *args) -> int:
        with self._lock:
            h = self._handle()
            return self._check(h, fn(h, *args))

    def close(self) -> None:
        with self._lock:
            if self._h is not None:
                ffi.release(self._h)
                self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _dominfo(d) -> dict:
    info = {name: int(getattr(d, name)) for name in _INT_FIELDS}
    for name in _FLAG_FIELDS:
        info[name] = bool(getattr(d, name))
    info["handle"] = str(uuid.UUID(bytes=bytes(ffi.buffer(d.handle))))
    return info


def open(backend: str = "sim", sim_config: str = "") -> Interface:  # noqa: A001
    """Open the "sim" (built-in simulated hypervisor) or "xc" (libxenctrl) backend."""
    return Interface(backend, sim_config)
