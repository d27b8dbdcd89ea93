"""cffi build of ``xapi._xenctrl`` from csrc/xenctrl_shim.c (see csrc/shim_build.py).

The simulated hypervisor is always compiled; the libxenctrl ("xc") backend when Debian's
libxen-dev is present (``/usr/include/xenctrl.h``) and ``XAPI_NO_LIBXEN`` is not set.
"""
import os
import runpy

# cffi runs this file by path, with no csrc on sys.path: the shared part is run by path too
shim_ffibuilder = runpy.run_path(os.path.join(os.path.dirname(__file__), "shim_build.py"))["shim_ffibuilder"]

ffibuilder = shim_ffibuilder("xapi._xenctrl", "xenctrl_shim", "/usr/include/xenctrl.h",
                             "HAVE_LIBXENCTRL", "xenctrl", libraries=("pthread",))

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
