"""The xe network commands (xapi's cli_operations.ml net_*/vif_*/pif_*): networks, the VMs' network
devices and the hosts' interfaces."""
from __future__ import annotations

from xapi.cli.commands import CliError
from xapi.cli.cmdtable import command

NULL = "OpaqueRef:NULL"


@command("network-create", reqd=("name-label",), optn=("name-description", "MTU", "bridge", "managed"),
         help="Creates a network; prints its uuid.")
async def network_create(run) -> None:
    try:
        mtu = str(int(run.args.get("MTU", "1500")))
    except ValueError:
        raise CliError(f"Failed to parse parameter 'MTU': expecting an integer, got '{run.args['MTU']}'") from None
    record = {"name_label": run.args["name-label"], "name_description": run.args.get("name-description", ""),
              "MTU": mtu, "other_config": {}, "tags": [], "bridge": run.args.get("bridge", ""),
              "managed": run.args.get("managed", "true").lower() != "false"}
    ref = await run.call("network.create", record)
    await run.out("print", await run.uuid_of("network", ref))


@command("network-destroy", reqd=("uuid",), help="Destroys a network no VIF or PIF uses.")
async def network_destroy(run) -> None:
    await run.call("network.destroy", await run.call("network.get_by_uuid", run.args["uuid"]))


@command("vif-create", reqd=("vm-uuid", "network-uuid", "device"), optn=("mac",),
         help="Creates a network device for the VM on the network at device (0, 1, ...); mac=random or "
              "omitted picks an address; prints the VIF's uuid.")
async def vif_create(run) -> None:
    vm = await run.call("VM.get_by_uuid", run.args["vm-uuid"])
    network = await run.call("network.get_by_uuid", run.args["network-uuid"])
    mac = run.args.get("mac", "")
    if mac == "random":
        mac = ""
    record = {"device": run.args["device"], "network": network, "VM": vm, "MAC": mac,
              "MTU": await run.call("network.get_MTU", network), "other_config": {},
              "qos_algorithm_type": "", "qos_algorithm_params": {}}
    ref = await run.call("VIF.create", record)
    await run.out("print", await run.uuid_of("VIF", ref))


@command("vif-destroy", reqd=("uuid",), help="Removes an unplugged VIF.")
async def vif_destroy(run) -> None:
    await run.call("VIF.destroy", await run.call("VIF.get_by_uuid", run.args["uuid"]))


@command("vif-plug", reqd=("uuid",), help="Hot-plugs the VIF into its running VM.")
async def vif_plug(run) -> None:
    await run.call("VIF.plug", await run.call("VIF.get_by_uuid", run.args["uuid"]))


@command("vif-unplug", reqd=("uuid",), optn=("force",), help="Hot-unplugs the VIF from its running VM.")
async def vif_unplug(run) -> None:
    vif = await run.call("VIF.get_by_uuid", run.args["uuid"])
    await run.call("VIF.unplug_force" if run.flag("force") else "VIF.unplug", vif)


MODES = {"dhcp": "DHCP", "static": "Static", "none": "None"}


@command("pif-reconfigure-ip", reqd=("uuid", "mode"), optn=("IP", "netmask", "gateway", "DNS"),
         help="Sets the interface's IPv4 configuration: mode=dhcp, static (with IP=, netmask=, gateway=, "
              "DNS=) or none.")
async def pif_reconfigure_ip(run) -> None:
    mode = MODES.get(run.args["mode"].lower())
    if mode is None:
        raise CliError(f"Failed to parse parameter 'mode': expecting dhcp, static or none, got "
                       f"'{run.args['mode']}'")
    pif = await run.call("PIF.get_by_uuid", run.args["uuid"])
    await run.call("PIF.reconfigure_ip", pif, mode, run.args.get("IP", ""), run.args.get("netmask", ""),
                   run.args.get("gateway", ""), run.args.get("DNS", ""))


@command("pif-plug", reqd=("uuid",), help="Brings the interface up.")
async def pif_plug(run) -> None:
    await run.call("PIF.plug", await run.call("PIF.get_by_uuid", run.args["uuid"]))


@command("pif-unplug", reqd=("uuid",), help="Takes the interface down.")
async def pif_unplug(run) -> None:
    await run.call("PIF.unplug", await run.call("PIF.get_by_uuid", run.args["uuid"]))


@command("pif-scan", reqd=("host-uuid",), help="Finds the host's physical interfaces and records new ones.")
async def pif_scan(run) -> None:
    await run.call("PIF.scan", await run.call("host.get_by_uuid", run.args["host-uuid"]))
