"""Thin Python wrapper around the cffi module ``xapi._xenctrl`` (csrc/xenctrl_shim.c).

Same API as the pure-Python reference ``xapi.xenctrl_ref``; pick between them
with ``xapi.xenctrl``.
"""
import errno
import uuid

from xapi._shim_handle import ShimHandle
from xapi._xenctrl import ffi, lib
from xapi.xenctrl_errors import (
    XenctrlError, check_domid, check_kib, check_reason, check_uuid, check_vcpus,
)

__all__ = ["HAVE_LIBXENCTRL", "Interface", "XenctrlError", "open"]

HAVE_LIBXENCTRL = bool(lib.xcs_have_libxenctrl())
PAGE_SIZE = lib.XCS_PAGE_SIZE

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


class Interface(ShimHandle):
    """An open handle on a hypervisor backend ("sim" or "xc")."""

    _error = XenctrlError
    _closed = "the interface is closed"
    _failed = "xenctrl call failed"

    def __init__(self, backend: str = "sim", sim_config: str = ""):
        if "\0" in backend or "\0" in sim_config:
            raise XenctrlError(errno.EINVAL, "backend and sim_config must not contain NUL")
        self._open(ffi, lib, "xcs", backend.encode(), sim_config.encode())

    def physinfo(self) -> dict:
        out = ffi.new("xcs_physinfo_t *")
        self._call(lib.xcs_physinfo, out)
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
        self._call(lib.xcs_domain_create, handle, 1 if hvm else 0, max_vcpus, max_mem_kib, out)
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


def _dominfo(d) -> dict:
    info = {name: int(getattr(d, name)) for name in _INT_FIELDS}
    for name in _FLAG_FIELDS:
        info[name] = bool(getattr(d, name))
    info["handle"] = str(uuid.UUID(bytes=bytes(ffi.buffer(d.handle))))
    return info


def open(backend: str = "sim", sim_config: str = "") -> Interface:  # noqa: A001
    """Open the "sim" (built-in simulated hypervisor) or "xc" (libxenctrl) backend."""
    return Interface(backend, sim_config)
