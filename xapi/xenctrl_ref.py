"""Pure-Python reference of the xenctrl shim (csrc/xenctrl_shim.c).

Implements the "sim" backend with the same defaults, limits, accounting, error
numbers and messages as the C code.  Its "xc" backend behaves like a build
without libxenctrl.  Keep the two in step.
"""
import errno
import threading
import time
import uuid

from xapi.xenctrl_errors import XenctrlError

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

    def domain_list(self) -> list:
        now = time.monotonic_ns()
        with self.lock:
            return [
                {
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
                for d in self.domains
            ]


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
