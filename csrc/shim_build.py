"""The cffi (out-of-line, API mode) build shared by the shims' build_*.py scripts.

A shim's built-in backend is always compiled; its libxen backend is compiled and linked only when
Debian's libxen-dev header is present and ``XAPI_NO_LIBXEN`` is not set to a true value.  The cdef
is the CDEF-BEGIN..CDEF-END section of the shim's header, so the header stays the single source of
the API.  Not named build_*.py: setup.py takes each of those as a cffi module.
"""
import os
import re

import cffi

# setuptools refuses absolute paths in setup() arguments: name sources relative to the working directory
# (the repository root when setup.py runs).
HERE = os.path.relpath(os.path.dirname(os.path.abspath(__file__)))


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


def shim_ffibuilder(module: str, shim: str, libxen_header: str, libxen_macro: str, libxen: str,
                    libraries: tuple = ()) -> cffi.FFI:
    """The builder of `module` from csrc/<shim>.c and .h; `libxen_macro` is defined and `libxen`
    linked when `libxen_header` is there; `libraries` are always linked."""
    header = os.path.join(HERE, f"{shim}.h")
    have_libxen = want_libxen(libxen_header)
    ffibuilder = cffi.FFI()
    ffibuilder.cdef(cdef_of(header))
    ffibuilder.set_source(
        module,
        f'#include "{shim}.h"\n',
        sources=[os.path.join(HERE, f"{shim}.c")],
        include_dirs=[HERE],
        define_macros=[(libxen_macro, "1")] if have_libxen else [],
        libraries=([libxen] if have_libxen else []) + list(libraries),
        depends=[header, os.path.join(HERE, "shim_common.h")],
    )
    return ffibuilder
