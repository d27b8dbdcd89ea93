"""Chooses between a compiled module and its pure-Python reference.

``XAPI_PURE=1`` selects the reference everywhere, so tests can run both.
Otherwise a compiled module that was not built is an error, not a silent
fallback: a slow daemon that looks healthy is worse than a clear failure.
"""
import importlib
import os
from types import ModuleType

PURE = os.environ.get("XAPI_PURE", "") not in ("", "0")


def load(compiled: str, reference: str) -> ModuleType:
    if PURE:
        return importlib.import_module(reference)
    try:
        return importlib.import_module(compiled)
    except ImportError as e:
        raise ImportError(
            f"{compiled} is not built ({e}); run `make build`, or set XAPI_PURE=1 "
            f"to use the pure-Python {reference}"
        ) from e


def accelerator(compiled: str) -> ModuleType | None:
    """The compiled hot loops of a module that is its own pure-Python reference (it calls them
    when this is not None): None with ``XAPI_PURE=1``; not built is an error, as for ``load``."""
    if PURE:
        return None
    try:
        return importlib.import_module(compiled)
    except ImportError as e:
        raise ImportError(f"{compiled} is not built ({e}); run `make build`, or set XAPI_PURE=1") from e
