"""Build the compiled halves of pyxapi.

Every ``xapi/_*.pyx`` is a Cython module and every ``csrc/build_*.py`` declares a
cffi out-of-line API module; each has a pure-Python reference chosen with
``XAPI_PURE=1``.  The C that Cython and cffi generate is never committed.
"""
import glob

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(path[:-4].replace("/", "."), [path])
    for path in sorted(glob.glob("xapi/**/_*.pyx", recursive=True))
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ),
    cffi_modules=[f"{path}:ffibuilder" for path in sorted(glob.glob("csrc/build_*.py"))],
)
