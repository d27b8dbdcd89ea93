"""The xe data-source commands of VMs, hosts and SRs (xapi's cli_operations.ml *_data_source_*): list
what can be recorded, start recording, read the latest value, forget the archives. Each acts on one
object picked by its selectors, as do_vm_op/do_host_op/do_sr_op with ~multiple:false."""
from __future__ import annotations

import math

from xapi import datamodel as dm
from xapi.cli.cmdtable import HOST_SELECTORS, SR_SELECTORS, VM_SELECTORS, command
from xapi.cli.commands import CliError

KINDS = {   # xe prefix -> class, selector prefix, select() options, the word of the "Multiple ..." failure
    "vm": (dm.CLASSES["VM"], VM_SELECTORS, {"include_control": True}, "matches VMs", "VM"),
    "host": (dm.CLASSES["host"], HOST_SELECTORS, {}, "matching hosts", "host"),
    "sr": (dm.CLASSES["SR"], SR_SELECTORS, {}, "matching SRs", "SR"),
}


def ocaml_float(v: float) -> str:
    """OCaml's string_of_float, which data_source_to_kvs prints min and max with: %.12g, with a dot
    kept on whole numbers ("0.", "100.") and inf/nan as OCaml spells them."""
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if math.isnan(v):
        return "nan"
    text = f"{v:.12g}"
    return text if any(c in text for c in ".en") else text + "."


async def one(run, prefix: str, own=()) -> str:
    c, _, kw, many, word = KINDS[prefix]
    run.flags.discard("multiple")
    run.args.pop("multiple", None)
    try:
        refs = await run.select(c, prefix, own, **kw)
    except CliError as e:
        if str(e).startswith("Multiple "):
            raise CliError(f"Multiple {many} found. Operation can only be performed on one {word} at a time") \
                from None
        raise
    return refs[0]


def _message(prefix: str, name: str) -> str:
    cls = KINDS[prefix][0].name
    return f"{cls}.{name}"


def _register(prefix: str) -> None:
    sel = KINDS[prefix][1]
    what = {"vm": "a VM", "host": "a Host", "sr": "a SR"}[prefix]

    @command(f"{prefix}-data-source-list", optn=(sel,), help=f"Lists the data sources that can be recorded for {what}.")
    async def ds_list(run) -> None:
        ref = await one(run, prefix)
        rows = [[("name_label", ds["name_label"]), ("name_description", ds["name_description"]),
                 ("enabled", "true" if ds["enabled"] else "false"),
                 ("standard", "true" if ds["standard"] else "false"),
                 ("min", ocaml_float(float(ds["min"]))), ("max", ocaml_float(float(ds["max"]))),
                 ("units", ds["units"])]
                for ds in await run.call(_message(prefix, "get_data_sources"), ref)]
        await run.print_records(rows)

    @command(f"{prefix}-data-source-record", reqd=("data-source",), optn=(sel,),
             help=f"Records the specified data source for {what}.")
    async def ds_record(run) -> None:
        ref = await one(run, prefix, ("data-source",))
        await run.call(_message(prefix, "record_data_source"), ref, run.args["data-source"])

    @command(f"{prefix}-data-source-query", reqd=("data-source",), optn=(sel,),
             help=f"Prints the last value read from a data source of {what}.")
    async def ds_query(run) -> None:
        ref = await one(run, prefix, ("data-source",))
        value = await run.call(_message(prefix, "query_data_source"), ref, run.args["data-source"])
        await run.print_list([f"{float(value):f}"])         # cli_operations: Printf "%f"

    @command(f"{prefix}-data-source-forget", reqd=("data-source",), optn=(sel,),
             help=f"Stops recording the data source of {what} and forgets its recorded data.")
    async def ds_forget(run) -> None:
        ref = await one(run, prefix, ("data-source",))
        await run.call(_message(prefix, "forget_data_source_archives"), ref, run.args["data-source"])


for _prefix in KINDS:
    _register(_prefix)
