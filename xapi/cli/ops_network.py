"""The xe network commands (xapi's cli_operations.ml net_*/vif_*/pif_*/vlan_*/tunnel_*/bond_*): networks,
the VMs' network devices, the hosts' interfaces and the VLANs, tunnels and bonds built on them."""
from __future__ import annotations

from xapi.cli.cmdtable import command
from xapi.cli.commands import CliError
from xapi.datamodel.errors import XapiError

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


# -- VLANs, tunnels, bonds and interface records (cli_operations.ml vlan_*, tunnel_*, bond_*, pif_*) --
def _int_param(run, name: str) -> str:
    try:
        return str(int(run.args[name]))
    except ValueError:
        raise CliError(f"Failed to parse parameter '{name}': expecting an integer") from None


@command("vlan-create", reqd=("pif-uuid", "vlan", "network-uuid"),
         help="Creates a VLAN on the host of the tagged PIF; prints the uuid of its new untagged PIF.")
async def vlan_create(run) -> None:
    network = await run.call("network.get_by_uuid", run.args["network-uuid"])
    pif = await run.call("PIF.get_by_uuid", run.args["pif-uuid"])
    vlan = await run.call("VLAN.create", pif, _int_param(run, "vlan"), network)
    # cli_operations prints the untagged PIF's uuid, not the VLAN's
    await run.out("print", await run.uuid_of("PIF", await run.call("VLAN.get_untagged_PIF", vlan)))


@command("pool-vlan-create", reqd=("pif-uuid", "vlan", "network-uuid"),
         help="Creates the VLAN on every host of the pool (on each host's PIF with the given PIF's device); "
              "prints the uuids of the new untagged PIFs.")
async def pool_vlan_create(run) -> None:
    network = await run.call("network.get_by_uuid", run.args["network-uuid"])
    pif = await run.call("PIF.get_by_uuid", run.args["pif-uuid"])
    pifs = await run.call("pool.create_VLAN_from_PIF", pif, network, _int_param(run, "vlan"))
    await run.print_list([await run.uuid_of("PIF", p) for p in pifs])


@command("vlan-destroy", reqd=("uuid",),
         help="Destroys a VLAN (its uuid, or as Rio allowed, its untagged PIF's uuid).")
async def vlan_destroy(run) -> None:
    uuid = run.args["uuid"]
    try:
        await run.call("VLAN.destroy", await run.call("VLAN.get_by_uuid", uuid))
        return
    except XapiError as e:
        if e.code in ("HANDLE_INVALID", "HOST_OFFLINE"):
            raise
        failure = e
    try:                                        # the uuid of the VLAN's untagged PIF
        pif = await run.call("PIF.get_by_uuid", uuid)
    except XapiError:
        raise failure from None
    await run.call("PIF.destroy", pif)


@command("tunnel-create", reqd=("pif-uuid", "network-uuid"), optn=("protocol",),
         help="Creates a tunnel (protocol gre, the default, or vxlan) over the transport PIF; prints the "
              "uuid of its access PIF.")
async def tunnel_create(run) -> None:
    network = await run.call("network.get_by_uuid", run.args["network-uuid"])
    pif = await run.call("PIF.get_by_uuid", run.args["pif-uuid"])
    protocol = run.args.get("protocol", "gre").lower()
    if protocol not in ("gre", "vxlan"):
        raise CliError(f"Expected 'gre','vxlan', got {run.args['protocol']}")
    tunnel = await run.call("tunnel.create", pif, network, protocol)
    await run.out("print", await run.uuid_of("PIF", await run.call("tunnel.get_access_PIF", tunnel)))


@command("tunnel-destroy", reqd=("uuid",), help="Destroys a tunnel and its access PIF.")
async def tunnel_destroy(run) -> None:
    await run.call("tunnel.destroy", await run.call("tunnel.get_by_uuid", run.args["uuid"]))


BOND_MODES = {"balance-slb": "balance-slb", "": "balance-slb", "active-backup": "active-backup", "lacp": "lacp"}


def _bond_mode(run) -> str:
    text = run.args.get("mode", "")
    mode = BOND_MODES.get(text.lower())
    if mode is None:
        raise CliError(f"Invalid bond mode. Got {text.lower()}")
    return mode


@command("bond-create", reqd=("network-uuid", "pif-uuids"), optn=("mac", "mode", "properties:"),
         help="Bonds the PIFs (pif-uuids, comma-separated) into a new interface on the network; mode "
              "balance-slb (the default), active-backup or lacp; prints the bond's uuid.")
async def bond_create(run) -> None:
    network = await run.call("network.get_by_uuid", run.args["network-uuid"])
    members = [await run.call("PIF.get_by_uuid", u) for u in run.args["pif-uuids"].split(",")]
    mode = _bond_mode(run)
    properties = {k[len("properties:"):]: v for k, v in run.args.items() if k.startswith("properties:")}
    bond = await run.call("Bond.create", network, members, run.args.get("mac", ""), mode, properties)
    await run.out("print", await run.uuid_of("Bond", bond))


@command("bond-destroy", reqd=("uuid",), help="Destroys a bond; its members take its configuration back.")
async def bond_destroy(run) -> None:
    await run.call("Bond.destroy", await run.call("Bond.get_by_uuid", run.args["uuid"]))


@command("bond-set-mode", reqd=("uuid", "mode"), help="Changes the bond's mode (balance-slb, active-backup, lacp).")
async def bond_set_mode(run) -> None:
    bond = await run.call("Bond.get_by_uuid", run.args["uuid"])
    await run.call("Bond.set_mode", bond, _bond_mode(run))


@command("pif-introduce", reqd=("host-uuid", "device"), optn=("mac", "managed"),
         help="Records the host's physical interface device as a new PIF; prints its uuid.")
async def pif_introduce(run) -> None:
    host = await run.call("host.get_by_uuid", run.args["host-uuid"])
    managed = run.args.get("managed", "true").lower() not in ("false", "no", "0", "off")
    pif = await run.call("PIF.introduce", host, run.args.get("mac", ""), run.args["device"], managed)
    await run.out("print", await run.uuid_of("PIF", pif))


@command("pif-forget", reqd=("uuid",), help="Forgets a PIF record of a host (not a bond, VLAN or tunnel).")
async def pif_forget(run) -> None:
    await run.call("PIF.forget", await run.call("PIF.get_by_uuid", run.args["uuid"]))


@command("pif-db-forget", reqd=("uuid",), help="Removes a PIF's database record only (no checks on the host).")
async def pif_db_forget(run) -> None:
    await run.call("PIF.db_forget", await run.call("PIF.get_by_uuid", run.args["uuid"]))


@command("pif-reconfigure-ipv6", reqd=("uuid", "mode"), optn=("IPv6", "gateway", "DNS"),
         help="Sets the interface's IPv6 configuration: mode=dhcp, static (with IPv6=, gateway=, DNS=), "
              "autoconf or none.")
async def pif_reconfigure_ipv6(run) -> None:
    modes = {"none": "None", "dhcp": "DHCP", "static": "Static", "autoconf": "Autoconf"}
    mode = modes.get(run.args["mode"].lower())
    if mode is None:
        raise CliError(f"Expected 'dhcp','none','autoconf' or 'static', got {run.args['mode']}")
    lower = {k.lower(): v for k, v in run.args.items()}
    pif = await run.call("PIF.get_by_uuid", run.args["uuid"])
    await run.call("PIF.reconfigure_ipv6", pif, mode, lower.get("ipv6", ""), run.args.get("gateway", ""),
                   lower.get("dns", ""))


@command("pif-set-primary-address-type", reqd=("uuid", "primary_address_type"),
         help="Chooses which address family (ipv4, ipv6) the PIF's management uses.")
async def pif_set_primary_address_type(run) -> None:
    kinds = {"ipv4": "IPv4", "ipv6": "IPv6"}
    kind = kinds.get(run.args["primary_address_type"].lower())
    if kind is None:
        raise CliError(f"Expected 'ipv4' or 'ipv6', got {run.args['primary_address_type']}")
    pif = await run.call("PIF.get_by_uuid", run.args["uuid"])
    await run.call("PIF.set_primary_address_type", pif, kind)


@command("vif-move", reqd=("uuid", "network-uuid"), help="Moves the VIF to another network.")
async def vif_move(run) -> None:
    vif = await run.call("VIF.get_by_uuid", run.args["uuid"])
    await run.call("VIF.move", vif, await run.call("network.get_by_uuid", run.args["network-uuid"]))


async def _vif_configure(run, method: str) -> None:
    modes = {"none": "None", "static": "Static"}
    mode = modes.get(run.args["mode"].lower())
    if mode is None:
        raise CliError(f"Expected 'none' or 'static', got {run.args['mode']}")
    vif = await run.call("VIF.get_by_uuid", run.args["uuid"])
    await run.call(method, vif, mode, run.args.get("address", ""), run.args.get("gateway", ""))


@command("vif-configure-ipv4", reqd=("uuid", "mode"), optn=("address", "gateway"),
         help="Sets the IPv4 address the VM's guest uses on the VIF: mode=static (address=a.b.c.d/n, "
              "gateway=) or none.")
async def vif_configure_ipv4(run) -> None:
    await _vif_configure(run, "VIF.configure_ipv4")


@command("vif-configure-ipv6", reqd=("uuid", "mode"), optn=("address", "gateway"),
         help="Sets the IPv6 address the VM's guest uses on the VIF: mode=static (address=, gateway=) or none.")
async def vif_configure_ipv6(run) -> None:
    await _vif_configure(run, "VIF.configure_ipv6")
