"""What the shim tests (test_xenctrl_shim, test_xenstore_shim) share: the compiled wrapper next to
its pure-Python reference, and Python run in a fresh process from the repository root."""
import importlib
import os
import subprocess
import sys

import pytest

from xapi.compiled import PURE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def compiled_or_none(module: str):
    """The compiled wrapper `module`; None under XAPI_PURE=1, where it may be missing (anywhere
    else its absence is a failure)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if not PURE:
            raise
        return None


def impl_params(ref, compiled, built: str):
    """(a mark skipping a test that needs `compiled`, the pytest params: "ref" and "compiled")."""
    needs_compiled = pytest.mark.skipif(compiled is None, reason=f"{built} not built (XAPI_PURE=1)")
    return needs_compiled, [
        pytest.param(ref, id="ref"),
        pytest.param(compiled, id="compiled", marks=needs_compiled),
    ]


def run_python(code: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
