"""The xe task and event commands (xapi's cli_operations.ml task_cancel, event_wait)."""
from __future__ import annotations

from xapi import datamodel as dm
from xapi.cli.commands import CLASSES, CliError
from xapi.cli.cmdtable import command


@command("task-cancel", reqd=("uuid",), help="Asks the task to stop; it ends cancelled if it can be.")
async def task_cancel(run) -> None:
    await run.call("task.cancel", await run.call("task.get_by_uuid", run.args["uuid"]))


@command("task-destroy", reqd=("uuid",), help="Removes a finished task made by task.create.")
async def task_destroy(run) -> None:
    await run.call("task.destroy", await run.call("task.get_by_uuid", run.args["uuid"]))


@command("event-wait", reqd=("class",),
         help="Waits until an object of the class (vm, host, sr...) satisfies every field=value condition "
              "(field=/=value: differs); uuid= restricts it to one object.")
async def event_wait(run) -> None:
    prefix = run.args["class"].lower().replace("_", "-")
    c = CLASSES.get(prefix)
    if c is None:
        raise CliError(f"Unknown class: {run.args['class']}")
    conditions = []
    for k, v in run.args.items():
        if k in ("class", "_topic") or k in ("server", "port", "username", "password"):
            continue
        negate = v.startswith("/=")
        conditions.append((run.field_of(c, k), v[2:] if negate else v, negate))
    token = ""
    while True:
        batch = await run.call("event.from", [c.name.lower()], token, 30.0)
        token = batch["token"]
        recs = await run.call(f"{c.name}.get_all_records")
        for rec in recs.values():
            if await _satisfies(run, c, rec, conditions):
                return


async def _satisfies(run, c: dm.Class, rec: dict, conditions) -> bool:
    for name, want, negate in conditions:
        have = await run.fmt(c.fields[name].type, rec.get(name))
        if (have == want) == negate:
            return False
    return True
