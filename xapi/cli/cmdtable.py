"""The table of hand-written xe commands: name, required and optional parameters (as `xe help <cmd>`
lists them, which the bash completion reads), a one-line description, and the coroutine that runs it
(`async def fn(run)`, with `run` the xapi.cli.commands.Run of the request).

Parameter names follow xapi's cli_frontend.ml; `<vm-selectors>` / `<host-selectors>` / `<sr-selectors>` mark commands that
pick their objects by `vm=`/`host=`/`sr=` (name or uuid), `uuid=` or any field filter.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

VM_SELECTORS = "<vm-selectors>"
HOST_SELECTORS = "<host-selectors>"
SR_SELECTORS = "<sr-selectors>"


@dataclass(frozen=True)
class Spec:
    name: str
    reqd: tuple[str, ...]
    optn: tuple[str, ...]
    help: str
    fn: object


TABLE: dict[str, Spec] = {}

# the modules whose commands register themselves here; loaded on first use by specs(), so that no
# module of xapi.cli imports them back (each one imports on its own, in any order)
MODULES = ("ops_auth", "ops_certificates", "ops_data_sources", "ops_host", "ops_license", "ops_misc", "ops_network", "ops_objects",
           "ops_snapshot", "ops_storage", "ops_vm", "ops_vm_devices", "transfer")


def specs() -> dict[str, Spec]:
    """Every hand-written command by name, its modules loaded."""
    for module in MODULES:
        importlib.import_module("xapi.cli." + module)
    return TABLE


def command(name: str, reqd=(), optn=(), help: str = ""):
    def register(fn):
        TABLE[name] = Spec(name, tuple(reqd), tuple(optn), help, fn)
        return fn
    return register
