"""The xe host and pool commands (xapi's cli_operations.ml host_*/pool_*): maintenance mode,
evacuation, reboot, and pool membership (join, eject, new coordinator, emergency mode)."""
from __future__ import annotations

from xapi import datamodel as dm
from xapi.cli.commands import CliError
from xapi.cli.cmdtable import HOST_SELECTORS, command

HOST = dm.CLASSES["host"]
NULL = "OpaqueRef:NULL"
SEL = (HOST_SELECTORS, "multiple")


async def each_host(run, own, op) -> None:
    await run.each(HOST, "host", own, op)


@command("host-enable", optn=SEL, help="Enables the selected hosts: new VMs may start on them again.")
async def host_enable(run) -> None:
    await each_host(run, (), lambda h: run.call("host.enable", h))


@command("host-disable", optn=SEL,
         help="Disables the selected hosts (maintenance): no new VMs start there; running ones stay.")
async def host_disable(run) -> None:
    await each_host(run, (), lambda h: run.call("host.disable", h))


@command("host-evacuate", optn=("network-uuid", "batch-size", *SEL),
         help="Migrates every running VM off the selected host to other hosts of the pool.")
async def host_evacuate(run) -> None:
    network = NULL
    if "network-uuid" in run.args:
        network = await run.call("network.get_by_uuid", run.args["network-uuid"])
    try:
        batch = int(run.args.get("batch-size", "0"))
    except ValueError:
        raise CliError("Failed to parse parameter 'batch-size': expecting an integer") from None
    await each_host(run, ("network-uuid", "batch-size"), lambda h: run.call("host.evacuate", h, network, batch))


@command("host-get-vms-which-prevent-evacuation", reqd=("uuid",),
         help="Lists the VMs that stop the host being evacuated, with the reason.")
async def host_vms_preventing(run) -> None:
    host = await run.call("host.get_by_uuid", run.args["uuid"])
    found = await run.call("host.get_vms_which_prevent_evacuation", host)
    rows = []
    for vm, reason in found.items():
        rows.append([("uuid ( RO)", await run.uuid_of("VM", vm)),
                     ("name-label ( RW)", await run.call("VM.get_name_label", vm)),
                     ("reason ( RO)", ",".join(reason))])
    await run.print_records(rows)


@command("host-reboot", optn=SEL, help="Reboots the selected hosts (they must be disabled first).")
async def host_reboot(run) -> None:
    await each_host(run, (), lambda h: run.call("host.reboot", h))


@command("host-shutdown", optn=SEL, help="Shuts the selected hosts down (they must be disabled first).")
async def host_shutdown(run) -> None:
    await each_host(run, (), lambda h: run.call("host.shutdown", h))


@command("host-is-in-emergency-mode",
         help="Prints true when the host this command reaches is a member that has lost its coordinator.")
async def host_is_in_emergency_mode(run) -> None:
    value = await run.call("host.is_in_emergency_mode")
    await run.out("print", "true" if value else "false")


@command("pool-join", reqd=("master-address", "master-username", "master-password"), optn=("force",),
         help="Makes this host a member of the pool whose coordinator is master-address.")
async def pool_join(run) -> None:
    method = "pool.join_force" if run.flag("force") else "pool.join"
    await run.call(method, run.args["master-address"], run.args["master-username"], run.args["master-password"])


@command("pool-eject", reqd=("host-uuid",), optn=("force",),
         help="Removes a member from the pool; it restarts as a pool of its own (asks first unless --force).")
async def pool_eject(run) -> None:
    host = await run.call("host.get_by_uuid", run.args["host-uuid"])
    if not run.flag("force"):
        warning = ("WARNING: Ejecting a host from the pool will reinitialise that host's local SRs.\n"
                   "WARNING: Any data contained with the local SRs will be lost.")
        if not await run.prompt_yes(warning):
            return
    await run.call("pool.eject", host)
    await run.out("print", "Specified host will attempt to restart as a master of a new pool in 10.0 seconds...")


@command("pool-designate-new-master", reqd=("host-uuid",),
         help="Hands the coordinator role over to the given member, in an orderly way.")
async def pool_designate_new_master(run) -> None:
    await run.call("pool.designate_new_master", await run.call("host.get_by_uuid", run.args["host-uuid"]))


@command("pool-emergency-transition-to-master",
         help="Makes this member the coordinator when the old one is gone for good.")
async def pool_emergency_transition(run) -> None:
    await run.call("pool.emergency_transition_to_master")


@command("pool-emergency-reset-master", reqd=("master-address",),
         help="Points this member at a new coordinator address.")
async def pool_emergency_reset(run) -> None:
    await run.call("pool.emergency_reset_master", run.args["master-address"])


@command("pool-recover-slaves",
         help="Asks the members in emergency mode to come back to this coordinator; prints those that did.")
async def pool_recover_slaves(run) -> None:
    hosts = await run.call("pool.recover_slaves")
    uuids = [await run.uuid_of("host", h) for h in hosts]
    if uuids:
        await run.out("print", "\n".join(uuids))
