"""The table of hand-written xe commands: name, required and optional parameters (as `xe help <cmd>`
lists them, which the bash completion reads), a one-line description, and the coroutine that runs it
(`async def fn(run)`, with `run` the xapi.cli.commands.Run of the request).

Parameter names follow xapi's cli_frontend.ml; `<vm-selectors>` / `<host-selectors>` / `<sr-selectors>` mark commands that
pick their objects by `vm=`/`host=`/`sr=` (name or uuid), `uuid=` or any field filter.
"""
from __future__ import annotations

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


def command(name: str, reqd=(), optn=(), help: str = ""):
    def register(fn):
        TABLE[name] = Spec(name, tuple(reqd), tuple(optn), help, fn)
        return fn
    return register
