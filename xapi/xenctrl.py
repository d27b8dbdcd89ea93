"""Domain control: the compiled shim (``xapi._xenctrl_py`` over csrc/xenctrl_shim.c)
or, with ``XAPI_PURE=1``, its pure-Python reference ``xapi.xenctrl_ref``.

    with xenctrl.open("sim", "memory_mib=8192,cpus=2") as xc:
        xc.physinfo()      # {"nr_cpus": 2, "total_pages": ..., "free_pages": ...}
        xc.domain_list()   # [{"domid": 0, "handle": "00000000-...", "running": True, ...}]

Backends: "sim" (the built-in simulated hypervisor, the default) and "xc"
(libxenctrl; compiled only when libxen-dev was present at build time, and
failing with XenctrlError when no hypervisor runs).  Every failure raises
XenctrlError(errno, message).
"""
from xapi.compiled import load
from xapi.xenctrl_errors import XenctrlError

_impl = load("xapi._xenctrl_py", "xapi.xenctrl_ref")

Interface = _impl.Interface
open = _impl.open  # noqa: A001
HAVE_LIBXENCTRL = _impl.HAVE_LIBXENCTRL
PAGE_SIZE = _impl.PAGE_SIZE
IMPLEMENTATION = _impl.__name__

__all__ = ["HAVE_LIBXENCTRL", "IMPLEMENTATION", "Interface", "PAGE_SIZE", "XenctrlError", "open"]
