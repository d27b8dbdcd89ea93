"""cffi (out-of-line, API mode) build of ``xapi._xenstore`` from csrc/xenstore_shim.c.

The built-in wire-protocol client is always compiled.  The libxenstore ("xs")
backend is compiled and linked only when Debian's libxen-dev is present
(``/usr/include/xenstore.h``) and ``XAPI_NO_LIBXEN`` is not set to a true value.
The cdef is the CDEF-BEGIN..CDEF-END section of csrc/xenstore_shim.h, so the
header stays the single source of the API.
"""
import os
import re

import cffi

# setuptools refuses absolute paths in setup() arguments: name sources relative to the working directory
# (the repository root when setup.py runs).
HERE = os.path.relpath(os.path.dirname(os.path.abspath(__file__)))
HEADER = os.path.join(HERE, "xenstore_shim.h")


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


HAVE_LIBXENSTORE = want_libxen("/usr/include/xenstore.h")

ffibuilder = cffi.FFI()
ffibuilder.cdef(cdef_of(HEADER))
ffibuilder.set_source(
    "xapi._xenstore",
    '#include "xenstore_shim.h"\n',
    sources=[os.path.join(HERE, "xenstore_shim.c")],
    include_dirs=[HERE],
    define_macros=[("HAVE_LIBXENSTORE", "1")] if HAVE_LIBXENSTORE else [],
    libraries=["xenstore"] if HAVE_LIBXENSTORE else [],
    depends=[HEADER],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
