"""The xe snapshot and template commands (xapi's cli_operations.ml snapshot_*, template_uninstall): they
name one VM record by uuid, which must be a snapshot (or a template), and act on it as the vm-* ones do."""
from __future__ import annotations

from xapi.cli.cmdtable import command
from xapi.cli.commands import CliFailure
from xapi.cli.ops_vm import uninstall

NULL = "OpaqueRef:NULL"


async def _snapshot(run) -> str:
    uuid = run.args.get("snapshot-uuid") or run.args.get("uuid")
    if not uuid:
        raise CliFailure("Required parameter not found: snapshot-uuid or uuid.")
    ref = await run.call("VM.get_by_uuid", uuid)
    if not await run.call("VM.get_is_a_snapshot", ref):
        raise CliFailure(f"This operation can only be performed on a VM snapshot. {uuid} is not a VM snapshot.")
    return ref


async def _new_template(run, new: str) -> None:
    if "new-name-description" in run.args:
        await run.call("VM.set_name_description", new, run.args["new-name-description"])
    await run.out("print", await run.uuid_of("VM", new))


@command("snapshot-clone", reqd=("new-name-label",), optn=("uuid", "new-name-description"),
         help="Makes a new template from the snapshot (fast disk clones where the SR can); prints its uuid.")
async def snapshot_clone(run) -> None:
    snap = await _snapshot(run)
    await _new_template(run, await run.call("VM.clone", snap, run.args["new-name-label"]))


@command("snapshot-copy", reqd=("new-name-label",), optn=("uuid", "new-name-description", "sr-uuid"),
         help="Makes a new template from the snapshot with full copies of its disks (to sr-uuid if given); "
              "prints its uuid.")
async def snapshot_copy(run) -> None:
    sr = await run.call("SR.get_by_uuid", run.args["sr-uuid"]) if "sr-uuid" in run.args else NULL
    snap = await _snapshot(run)
    await _new_template(run, await run.call("VM.copy", snap, run.args["new-name-label"], sr))


@command("snapshot-destroy", optn=("uuid", "snapshot-uuid"),
         help="Destroys the snapshot's record; its disks stay (see snapshot-uninstall).")
async def snapshot_destroy(run) -> None:
    snap = await _snapshot(run)
    if await run.call("VM.get_power_state", snap) != "Halted":
        await run.call("VM.hard_shutdown", snap)
    await run.call("VM.destroy", snap)


@command("snapshot-uninstall", optn=("uuid", "snapshot-uuid", "force"),
         help="Destroys the snapshot and its disks (asks first unless --force).")
async def snapshot_uninstall(run) -> None:
    await uninstall(run, [await _snapshot(run)])


@command("snapshot-reset-powerstate", optn=("uuid", "snapshot-uuid", "force"),
         help="Marks a suspended snapshot halted, dropping its memory image (needs --force).")
async def snapshot_reset_powerstate(run) -> None:
    if not run.flag("force"):
        raise CliFailure("This operation is dangerous and may cause data loss. This operation must be forced "
                         "(use --force).")
    await run.call("VM.power_state_reset", await _snapshot(run))


@command("template-uninstall", reqd=("template-uuid",), optn=("force",),
         help="Destroys a custom template and its disks (asks first unless --force).")
async def template_uninstall(run) -> None:
    uuid = run.args["template-uuid"]
    ref = await run.call("VM.get_by_uuid", uuid)
    if not await run.call("VM.get_is_a_template", ref):
        raise CliFailure(f"This operation can only be performed on a VM template. {uuid} is not a VM template.")
    await uninstall(run, [ref])


@command("vm-memory-balloon", reqd=("target",), optn=("<vm-selectors>", "multiple"),
         help="Deprecated alias of vm-memory-target-set.")
async def vm_memory_balloon(run) -> None:
    from xapi.cli.ops_vm import vm_memory_target_set
    await vm_memory_target_set(run)
