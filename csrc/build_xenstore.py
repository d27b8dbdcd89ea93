"""cffi build of ``xapi._xenstore`` from csrc/xenstore_shim.c (see csrc/shim_build.py).

The built-in wire-protocol client is always compiled; the libxenstore ("xs") backend when Debian's
libxen-dev is present (``/usr/include/xenstore.h``) and ``XAPI_NO_LIBXEN`` is not set.
"""
import os
import runpy

# cffi runs this file by path, with no csrc on sys.path: the shared part is run by path too
shim_ffibuilder = runpy.run_path(os.path.join(os.path.dirname(__file__), "shim_build.py"))["shim_ffibuilder"]

ffibuilder = shim_ffibuilder("xapi._xenstore", "xenstore_shim", "/usr/include/xenstore.h",
                             "HAVE_LIBXENSTORE", "xenstore")

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
