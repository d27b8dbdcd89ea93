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


# -- host and pool settings (cli_operations.ml host_set_power_on_mode, host_declare_dead...) --
@command("host-set-power-on-mode", reqd=("power-on-mode",), optn=("power-on-config:", *SEL),
         help="Sets how the selected hosts are powered on remotely (\"\", wake-on-lan, iLO, DRAC or a custom "
              "script) with power-on-config:key=value settings.")
async def host_set_power_on_mode(run) -> None:
    mode, config = run.args["power-on-mode"], run.map_arg("power-on-config")
    await each_host(run, ("power-on-mode", "power-on-config"),
                    lambda h: run.call("host.set_power_on_mode", h, mode, config))


@command("host-declare-dead", reqd=("uuid",), optn=("force",),
         help="Declares the host dead without contacting it (asks first unless --force): its VMs are marked "
              "halted. Dangerous if the host is in fact alive.")
async def host_declare_dead(run) -> None:
    host = await run.call("host.get_by_uuid", run.args["uuid"])
    if not run.flag("force"):
        warning = ("WARNING: A host should only be declared dead if it is verified offline.\n"
                   "WARNING: Performing this operation if the host is still online and has any\n"
                   "WARNING: running VMs may lead to possible data loss and/or corruption.")
        if not await run.prompt_yes(warning):
            return
    await run.call("host.declare_dead", host)


async def _display(run, method: str) -> None:
    host = await run.call("host.get_by_uuid", run.args["uuid"])
    await run.out("print", await run.call(method, host))


@command("host-enable-display", reqd=("uuid",), help="Enables the host's console display; prints its state.")
async def host_enable_display(run) -> None:
    await _display(run, "host.enable_display")


@command("host-disable-display", reqd=("uuid",), help="Disables the host's console display; prints its state.")
async def host_disable_display(run) -> None:
    await _display(run, "host.disable_display")


async def _print_each(run, method: str) -> None:
    async def op(h):
        await run.out("print", str(await run.call(method, h)))
    await each_host(run, (), op)


@command("host-compute-free-memory", optn=(HOST_SELECTORS,), help="Prints the host's free memory (bytes).")
async def host_compute_free_memory(run) -> None:
    await _print_each(run, "host.compute_free_memory")


@command("host-compute-memory-overhead", optn=(HOST_SELECTORS,),
         help="Prints the host's virtualization memory overhead (bytes).")
async def host_compute_memory_overhead(run) -> None:
    await _print_each(run, "host.compute_memory_overhead")


@command("host-get-server-certificate", optn=(HOST_SELECTORS,), help="Prints the host's TLS server certificate.")
async def host_get_server_certificate(run) -> None:
    await _print_each(run, "host.get_server_certificate")


@command("host-set-hostname-live", reqd=("host-uuid", "host-name"), optn=(HOST_SELECTORS,),
         help="Sets the host's name, in the API and in the control domain.")
async def host_set_hostname_live(run) -> None:
    host = await run.call("host.get_by_uuid", run.args["host-uuid"])
    await run.call("host.set_hostname_live", host, run.args["host-name"])


@command("pool-sync-database", help="Copies the pool database to every member now.")
async def pool_sync_database(run) -> None:
    await run.call("pool.sync_database")


@command("pool-disable-ssl-legacy", optn=("uuid",), help="Deprecated: legacy SSL is no longer supported.")
async def pool_disable_ssl_legacy(run) -> None:
    """cli_operations.pool_disable_ssl_legacy does nothing but log: legacy SSL is gone."""


@command("pool-secret-rotate", help="Changes the pool secret the members authenticate with.")
async def pool_secret_rotate(run) -> None:
    await run.call("pool.rotate_secret")


@command("host-reset-server-certificate", optn=(HOST_SELECTORS,),
         help="Replaces the host's TLS server certificate with a new self-signed one.")
async def host_reset_server_certificate(run) -> None:
    await each_host(run, (), lambda h: run.call("host.reset_server_certificate", h))


@command("host-dmesg", optn=(HOST_SELECTORS,), help="Prints the hypervisor's message buffer of the selected hosts.")
async def host_dmesg(run) -> None:
    await _print_each(run, "host.dmesg")


@command("host-sync-data", optn=(HOST_SELECTORS,),
         help="Copies the non-database data the coordinator keeps (RRDs, blobs, messages) to the selected hosts.")
async def host_sync_data(run) -> None:
    await each_host(run, (), lambda h: run.call("host.sync_data", h))


@command("host-power-on", optn=SEL, help="Powers the selected hosts on through their power-on mode.")
async def host_power_on(run) -> None:
    await each_host(run, (), lambda h: run.call("host.power_on", h))


@command("host-syslog-reconfigure", reqd=("host-uuid",), help="Makes the host's syslog take its logging settings.")
async def host_syslog_reconfigure(run) -> None:
    await run.call("host.syslog_reconfigure", await run.call("host.get_by_uuid", run.args["host-uuid"]))


@command("host-send-debug-keys", reqd=("host-uuid", "keys"), help="Sends hypervisor debug keys to the host.")
async def host_send_debug_keys(run) -> None:
    host = await run.call("host.get_by_uuid", run.args["host-uuid"])
    await run.call("host.send_debug_keys", host, run.args["keys"])


@command("host-management-reconfigure", reqd=("pif-uuid",),
         help="Moves the management interface of the PIF's host onto that PIF.")
async def host_management_reconfigure(run) -> None:
    await run.call("host.management_reconfigure", await run.call("PIF.get_by_uuid", run.args["pif-uuid"]))


@command("pool-management-reconfigure", reqd=("network-uuid",),
         help="Moves the management interface of every host onto its PIF on the network.")
async def pool_management_reconfigure(run) -> None:
    await run.call("pool.management_reconfigure", await run.call("network.get_by_uuid", run.args["network-uuid"]))


@command("host-call-plugin", reqd=("host-uuid", "plugin", "fn"), optn=("args:",),
         help="Calls the function fn of the host's plugin with args:key=value arguments; prints its result.")
async def host_call_plugin(run) -> None:
    host = await run.call("host.get_by_uuid", run.args["host-uuid"])
    args = run.map_arg("args")              # as xapi: no args:key:file= here (vm-call-plugin has it)
    await run.out("print", await run.call("host.call_plugin", host, run.args["plugin"], run.args["fn"], args))


@command("host-management-disable",
         help="Turns off the management interface of the host this command reaches (its API stays on the "
              "local socket).")
async def host_management_disable(run) -> None:
    await run.call("host.management_disable")


@command("host-shutdown-agent", help="Stops the toolstack daemon of the host this command reaches.")
async def host_shutdown_agent(run) -> None:
    await run.call("host.shutdown_agent")


@command("host-get-system-status-capabilities", optn=(HOST_SELECTORS,),
         help="Prints the kinds of data a status report of the selected hosts can hold (XML).")
async def host_get_system_status_capabilities(run) -> None:
    await _print_each(run, "host.get_system_status_capabilities")


@command("host-bugreport-upload", optn=("url", "http_proxy", *SEL),
         help="Uploads a status report of the selected hosts to url (HTTP PUT), through http_proxy if given.")
async def host_bugreport_upload(run) -> None:
    url, proxy = run.args.get("url", ""), run.args.get("http_proxy", "")
    options = {"http_proxy": proxy} if proxy else {}
    await each_host(run, ("url", "http_proxy"), lambda h: run.call("host.bugreport_upload", h, url, options))


async def _host_or_this(run) -> str:
    if "uuid" in run.args:
        return await run.call("host.get_by_uuid", run.args["uuid"])
    return await run.call("session.get_this_host", run.session)


@command("host-cpu-info", optn=("uuid",), help="Prints what the host knows of its physical CPUs.")
async def host_cpu_info(run) -> None:
    info = await run.call("host.get_cpu_info", await _host_or_this(run))
    await run.print_records([list(info.items())])


@command("host-emergency-management-reconfigure", reqd=("interface",),
         help="Reconfigure the management interface of this node: only use if the node is in emergency mode.")
async def host_emergency_management_reconfigure(run) -> None:
    await run.call("host.local_management_reconfigure", run.args["interface"])
