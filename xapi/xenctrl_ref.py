"""Pure-Python reference of the xenctrl shim (csrc/xenctrl_shim.c).

Implements the "sim" backend with the same defaults, limits, accounting, error
numbers and messages as the C code.  Its "xc" backend behaves like a build
without libxenctrl.  Keep the two in step.
"""
import errno
import threading
import time
import uuid

from xapi.xenctrl_errors import (
    MAX_VCPUS, XenctrlError, check_domid, check_kib, check_reason, check_uuid, check_vcpus,
)

__all__ = ["HAVE_LIBXENCTRL", "Interface", "XenctrlError", "open"]

HAVE_LIBXENCTRL = False
PAGE_SIZE = 4096
_PAGES_PER_MIB = 1024 * 1024 // PAGE_SIZE

# name -> (min, max); mirrored from sim_keys in xenctrl_shim.c
_SIM_MAX_MEMORY_MIB = 1 << 30
_SIM_MAX_CPUS = 4096
_SIM_KEYS = {
    "memory_mib": (1, _SIM_MAX_MEMORY_MIB),
    "cpus": (1, _SIM_MAX_CPUS),
    "cpu_mhz": (1, 1000000),
    "dom0_memory_mib": (1, _SIM_MAX_MEMORY_MIB),
    "dom0_vcpus": (1, _SIM_MAX_CPUS),
    "load_pct": (0, 100),
}
_INVALID_MAX_VCPU_ID = 0xFFFFFFFF
_DOMID_FIRST_RESERVED = 0x7FF0
_SHUTDOWN_SOFT_RESET = 5
_KIB_PER_PAGE = PAGE_SIZE // 1024


def _strip(s: str) -> str:
    return s.strip(" \t")


def _parse_sim_config(cfg: str) -> dict:
    vals = {}
    for item in cfg.split(","):
        item = _strip(item)
        if not item:
            continue
        if "=" not in item:
            raise XenctrlError(errno.EINVAL, f"sim config: item '{item}' is not key=value")
        key, _, value = item.partition("=")
        key, value = _strip(key), _strip(value)
        if key not in _SIM_KEYS:
            raise XenctrlError(errno.EINVAL, f"sim config: unknown key '{key}'")
        lo, hi = _SIM_KEYS[key]
        if not (value and all("0" <= c <= "9" for c in value) and lo <= int(value) <= hi):
            raise XenctrlError(
                errno.EINVAL,
                f"sim config: bad value '{value}' for {key} (expected an integer in [{lo}, {hi}])",
            )
        vals[key] = int(value)
    return vals


class _Domain:
    __slots__ = (
        "domid", "handle", "dying", "shutdown", "paused", "blocked", "hvm",
        "shutdown_reason", "tot_pages", "max_pages", "vcpus", "cpu_time_base",
        "run_since",
    )

    def __init__(self, domid: int, tot_pages: int, vcpus: int):
        self.domid = domid
        self.handle = bytes(16)
        self.dying = self.shutdown = self.paused = self.blocked = self.hvm = False
        self.shutdown_reason = 0
        self.tot_pages = tot_pages
        self.max_pages = tot_pages
        self.vcpus = vcpus
        self.cpu_time_base = 0
        self.run_since = None  # monotonic ns when it last started running


class _SimHost:
    def __init__(self, cfg: str):
        vals = _parse_sim_config(cfg)
        memory = vals.get("memory_mib", 16384)
        cpus = vals.get("cpus", 4)
        mhz = vals.get("cpu_mhz", 2400)
        load = vals.get("load_pct", 10)
        dom0_mem = vals.get("dom0_memory_mib", min(memory, 1024))
        dom0_vcpus = vals.get("dom0_vcpus", cpus)
        if dom0_mem > memory:
            raise XenctrlError(
                errno.EINVAL, f"sim config: dom0_memory_mib ({dom0_mem}) exceeds memory_mib ({memory})"
            )
        if dom0_vcpus > cpus:
            raise XenctrlError(errno.EINVAL, f"sim config: dom0_vcpus ({dom0_vcpus}) exceeds cpus ({cpus})")
        self.lock = threading.Lock()
        self.total_pages = memory * _PAGES_PER_MIB
        self.cpus = cpus
        self.cpu_khz = mhz * 1000
        self.load_pct = load
        dom0 = _Domain(0, dom0_mem * _PAGES_PER_MIB, dom0_vcpus)
        dom0.run_since = time.monotonic_ns()
        self.domains = [dom0]  # sorted by domid

    def cpu_time(self, d: _Domain, now: int) -> int:
        t = d.cpu_time_base
        if d.run_since is not None and now > d.run_since:
            t += (now - d.run_since) * d.vcpus * self.load_pct // 100
        return t & 0xFFFFFFFFFFFFFFFF

    def physinfo(self) -> dict:
        with self.lock:
            used = sum(d.tot_pages for d in self.domains)
            return {
                "nr_cpus": self.cpus,
                "threads_per_core": 1,
                "cores_per_socket": self.cpus,
                "nr_nodes": 1,
                "cpu_khz": self.cpu_khz,
                "total_pages": self.total_pages,
                "free_pages": max(self.total_pages - used, 0),
                "scrub_pages": 0,
            }

    def _info(self, d: _Domain, now: int) -> dict:
        return {
            "domid": d.domid,
            "shutdown_reason": d.shutdown_reason if d.shutdown else 0,
            "tot_pages": d.tot_pages,
            "max_pages": d.max_pages,
            "nr_online_vcpus": d.vcpus,
            "max_vcpu_id": d.vcpus - 1 if d.vcpus else _INVALID_MAX_VCPU_ID,
            "cpu_time": self.cpu_time(d, now),
            "dying": d.dying,
            "shutdown": d.shutdown,
            "paused": d.paused,
            "blocked": d.blocked,
            "running": d.run_since is not None,
            "hvm": d.hvm,
            "handle": str(uuid.UUID(bytes=d.handle)),
        }

    def domain_list(self) -> list:
        now = time.monotonic_ns()
        with self.lock:
            return [self._info(d, now) for d in self.domains]

    # -- domain operations; mirror sim_domain_* in xenctrl_shim.c (the caller
    # -- has range-checked the arguments to the C types)

    def _free_pages(self) -> int:
        return max(self.total_pages - sum(d.tot_pages for d in self.domains), 0)

    def _find(self, op: str, domid: int) -> _Domain:
        for d in self.domains:
            if d.domid == domid:
                return d
        raise XenctrlError(errno.ESRCH, f"{op}: domain {domid}: no such domain")

    def _find_domu(self, op: str, domid: int) -> _Domain:
        d = self._find(op, domid)
        if domid == 0:
            raise XenctrlError(errno.EPERM, f"{op}: domain 0 is the control domain")
        return d

    def _stop(self, d: _Domain, now: int) -> None:
        if d.run_since is not None:
            d.cpu_time_base = self.cpu_time(d, now)
            d.run_since = None

    def domain_create(self, handle: bytes, hvm: bool, max_vcpus: int, max_mem_kib: int) -> int:
        if not 1 <= max_vcpus <= MAX_VCPUS:
            raise XenctrlError(
                errno.EINVAL, f"domain_create: max_vcpus {max_vcpus} out of range [1, {MAX_VCPUS}]"
            )
        pages = max_mem_kib // _KIB_PER_PAGE
        with self.lock:
            free = self._free_pages()
            if pages > free:
                raise XenctrlError(
                    errno.ENOMEM,
                    f"domain_create: {max_mem_kib} KiB needed, {free * _KIB_PER_PAGE} KiB free",
                )
            domid, pos = 1, 0
            for pos, d in enumerate(self.domains):  # noqa: B007
                if d.domid < domid:
                    continue
                if d.domid > domid:
                    break
                domid += 1
            else:
                pos = len(self.domains)
            if domid >= _DOMID_FIRST_RESERVED:
                raise XenctrlError(errno.ENOSPC, "domain_create: no free domid")
            d = _Domain(domid, pages, max_vcpus)
            d.handle = handle
            d.paused = True
            d.hvm = bool(hvm)
            self.domains.insert(pos, d)
            return domid

    def domain_destroy(self, domid: int) -> None:
        with self.lock:
            d = self._find_domu("domain_destroy", domid)
            self.domains.remove(d)

    def domain_pause(self, domid: int) -> None:
        with self.lock:
            d = self._find_domu("domain_pause", domid)
            self._stop(d, time.monotonic_ns())
            d.paused = True

    def domain_unpause(self, domid: int) -> None:
        with self.lock:
            d = self._find_domu("domain_unpause", domid)
            d.paused = False
            if not d.shutdown and d.run_since is None:
                d.run_since = time.monotonic_ns()

    def domain_shutdown(self, domid: int, reason: int) -> None:
        if reason > _SHUTDOWN_SOFT_RESET:
            raise XenctrlError(errno.EINVAL, f"domain_shutdown: bad reason {reason}")
        with self.lock:
            d = self._find_domu("domain_shutdown", domid)
            if not d.shutdown:
                self._stop(d, time.monotonic_ns())
                d.shutdown = True
                d.shutdown_reason = reason

    def domain_setmaxmem(self, domid: int, kib: int) -> None:
        pages = kib // _KIB_PER_PAGE
        with self.lock:
            d = self._find("domain_setmaxmem", domid)
            free = self._free_pages()
            if pages > d.tot_pages and pages - d.tot_pages > free:
                raise XenctrlError(
                    errno.ENOMEM,
                    f"domain_setmaxmem: {(pages - d.tot_pages) * _KIB_PER_PAGE} KiB more needed, "
                    f"{free * _KIB_PER_PAGE} KiB free",
                )
            d.tot_pages = d.max_pages = pages

    def domain_max_vcpus(self, domid: int, n: int) -> None:
        if not 1 <= n <= MAX_VCPUS:
            raise XenctrlError(errno.EINVAL, f"domain_max_vcpus: max_vcpus {n} out of range [1, {MAX_VCPUS}]")
        with self.lock:
            d = self._find("domain_max_vcpus", domid)
            now = time.monotonic_ns()
            if d.run_since is not None:  # the new count applies from now on
                d.cpu_time_base = self.cpu_time(d, now)
                d.run_since = now
            d.vcpus = n

    def domain_getinfo(self, domid: int) -> dict:
        now = time.monotonic_ns()
        with self.lock:
            return self._info(self._find("domain_getinfo", domid), now)


class Interface:
    """An open handle on a hypervisor backend ("sim" only in the reference)."""

    def __init__(self, backend: str = "sim", sim_config: str = ""):
        if "\0" in backend or "\0" in sim_config:
            raise XenctrlError(errno.EINVAL, "backend and sim_config must not contain NUL")
        if not backend:
            backend = "sim"
        if backend not in ("sim", "xc"):
            raise XenctrlError(errno.EINVAL, f"unknown backend '{backend}' (expected 'sim' or 'xc')")
        if backend == "xc":
            raise XenctrlError(errno.ENOSYS, "the xc backend is unavailable: built without libxenctrl")
        self._sim = _SimHost(sim_config)
        self._lock = threading.Lock()
        self.backend = backend

    def _host(self) -> _SimHost:
        if self._sim is None:
            raise XenctrlError(errno.EBADF, "the interface is closed")
        return self._sim

    def physinfo(self) -> dict:
        with self._lock:
            return self._host().physinfo()

    def domain_list(self) -> list:
        with self._lock:
            return self._host().domain_list()

    def domain_create(self, uuid: str, hvm: bool = False, max_vcpus: int = 1,
                      max_mem_kib: int = 262144) -> int:
        """Create a paused domain; returns its domid."""
        handle = check_uuid(uuid)
        max_vcpus = check_vcpus("domain_create", max_vcpus)
        max_mem_kib = check_kib("domain_create", max_mem_kib)
        with self._lock:
            return self._host().domain_create(handle, bool(hvm), max_vcpus, max_mem_kib)

    def domain_destroy(self, domid: int) -> None:
        domid = check_domid("domain_destroy", domid)
        with self._lock:
            self._host().domain_destroy(domid)

    def domain_pause(self, domid: int) -> None:
        domid = check_domid("domain_pause", domid)
        with self._lock:
            self._host().domain_pause(domid)

    def domain_unpause(self, domid: int) -> None:
        domid = check_domid("domain_unpause", domid)
        with self._lock:
            self._host().domain_unpause(domid)

    def domain_shutdown(self, domid: int, reason) -> None:
        """reason: "poweroff", "reboot", "suspend", "crash" (or the XCS_SHUTDOWN_* int)."""
        reason = check_reason(reason)
        domid = check_domid("domain_shutdown", domid)
        with self._lock:
            self._host().domain_shutdown(domid, reason)

    def domain_setmaxmem(self, domid: int, kib: int) -> None:
        kib = check_kib("domain_setmaxmem", kib)
        domid = check_domid("domain_setmaxmem", domid)
        with self._lock:
            self._host().domain_setmaxmem(domid, kib)

    def domain_max_vcpus(self, domid: int, n: int) -> None:
        n = check_vcpus("domain_max_vcpus", n)
        domid = check_domid("domain_max_vcpus", domid)
        with self._lock:
            self._host().domain_max_vcpus(domid, n)

    def domain_getinfo(self, domid: int) -> dict:
        domid = check_domid("domain_getinfo", domid)
        with self._lock:
            return self._host().domain_getinfo(domid)

    def close(self) -> None:
        with self._lock:
            self._sim = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open(backend: str = "sim", sim_config: str = "") -> Interface:  # noqa: A001
    """Open the "sim" backend; "xc" fails as in a build without libxenctrl."""
    return Interface(backend, sim_config)
