"""cffi (out-of-line, API mode) build of ``xapi._xenctrl`` from csrc/xenctrl_shim.c.

The simulated hypervisor is always compiled.  The libxenctrl ("xc") backend
is compiled and linked only when Debian's libxen-dev is present
(``/usr/include/xenctrl.h``) and ``XAPI_NO_LIBXEN`` is not set to a true value.
The cdef is the CDEF-BEGIN..CDEF-END section of csrc/xenctrl_shim.h, so the
header stays the single source of the API.
"""
import os
import re

import cffi

# setuptools refuses absolute paths in setup() arguments: name sources relative to the working directory
# (the repository root when setup.py runs).
HERE = os.path.relpath(os.path.dirname(os.path.abspath(__file__)))
HEADER = os.path.join(HERE, "xenctrl_shim.h")


def cdef_of(header: str) -> str:
    with open(header, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"/\* CDEF-BEGIN \*/(.*?)/\* CDEF-END \*/", text, re.S)
    if not m:
        raise RuntimeError(f"{header}: no CDEF-BEGIN/CDEF-END section")
    return m.group(1)


def want_libxen(header: str) -> bool:
    if os.environ.get("XAPI_NO_LIBXEN", "") not in ("", "0"):
        return False
    return os.path.exists(header)


HAVE_LIBXENCTRL = want_libxen("/usr/include/xenctrl.h")

ffibuilder = cffi.FFI()
ffibuilder.cdef(cdef_of(HEADER))
ffibuilder.set_source(
    "xapi._xenctrl",
    '#include "xenctrl_shim.h"\n',
    sources=[os.path.join(HERE, "xenctrl_shim.c")],
    include_dirs=[HERE],
    define_macros=[("HAVE_LIBXENCTRL", "1")] if HAVE_LIBXENCTRL else [],
    libraries=(["xenctrl"] if HAVE_LIBXENCTRL else []) + ["pthread"],
    depends=[HEADER],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
