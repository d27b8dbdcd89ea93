"""What a PIF is and the rows hanging off it, shared by the PIF, VLAN, Bond and tunnel actions
(xapi_pif_helpers.ml, the assertions of xapi_pif.ml, xapi_network.ml's assert_network_is_managed).

The links go both ways: VLAN.tagged_PIF <-> PIF.VLAN_slave_of, PIF.bond_slave_of <-> Bond.slaves,
Bond.master <-> PIF.bond_master_of, tunnel.access_PIF / transport_PIF <-> PIF.tunnel_*_PIF_of.
xapi's database keeps those sets as relations; ours does not declare them, so the writes here keep
them (a database that declares them ignores writes to its mirror sets, so these stay harmless).

Interfaces are simulated: bringing a PIF up or down is its currently_attached, with nm.ml's side
effects (a bond master up takes its members down, a member up takes its master down).
"""
from __future__ import annotations

from xapi.actions.lookup import record  # noqa: F401 - the PIF, VLAN, Bond and tunnel actions' links.record
from xapi.datamodel.errors import XapiError
from xapi.db.schema import NULL_REF, insert

# what a PIF is, in get_pif_type's order (one kind per PIF)
TUNNEL_ACCESS, BOND_SLAVE, BOND_MASTER, SRIOV_LOGICAL, VLAN_MASTER = \
    "tunnel_access", "bond_slave", "bond_master", "sriov_logical", "vlan_master"


def exists(db, cls: str, ref) -> bool:
    return type(ref) is str and ref != NULL_REF and ref in db.table(cls)


def link(db, cls: str, ref: str, field: str, value: str) -> None:
    """Adds `value` to the set field of a row (the back link of a new reference)."""
    table = db.table(cls)
    if ref in table:
        current = table.get_field(ref, field)
        if value not in current:
            table.set_field(ref, field, [*current, value])


def unlink(db, cls: str, ref: str, field: str, value: str) -> None:
    table = db.table(cls)
    if ref in table:
        current = table.get_field(ref, field)
        if value in current:
            table.set_field(ref, field, [v for v in current if v != value])


def pif_type(db, rec: dict) -> tuple[str, str] | None:
    """(kind, the row that makes it so), or None for a plain interface (get_pif_type)."""
    if rec["tunnel_access_PIF_of"]:
        return TUNNEL_ACCESS, rec["tunnel_access_PIF_of"][0]
    if rec["bond_slave_of"] != NULL_REF:
        return BOND_SLAVE, rec["bond_slave_of"]
    if rec["bond_master_of"]:
        return BOND_MASTER, rec["bond_master_of"][0]
    if rec["sriov_logical_PIF_of"]:
        return SRIOV_LOGICAL, rec["sriov_logical_PIF_of"][0]
    if rec["VLAN_master_of"] != NULL_REF:
        vlans = db.table("VLAN")
        tagged = vlans.get_field(rec["VLAN_master_of"], "tagged_PIF") if rec["VLAN_master_of"] in vlans \
            else NULL_REF
        return VLAN_MASTER, tagged
    return None


def assert_managed(rec: dict, ref: str) -> None:
    if not rec["managed"]:
        raise XapiError("PIF_UNMANAGED", ref)


def assert_network_managed(db, network) -> dict:
    rec = record(db, "network", network)
    if not rec["managed"]:
        raise XapiError("NETWORK_UNMANAGED", network)
    return rec


def assert_no_other_local_pifs(db, host: str, network: str) -> None:
    """A host has at most one PIF on a network (NETWORK_ALREADY_CONNECTED [host, that PIF])."""
    pifs = db.table("PIF")
    for pif in pifs.find("network", network):
        if pifs.get_field(pif, "host") == host:
            raise XapiError("NETWORK_ALREADY_CONNECTED", host, pif)


def assert_not_in_bond(db, rec: dict, ref: str) -> None:
    if exists(db, "Bond", rec["bond_slave_of"]) or rec["bond_master_of"]:
        raise XapiError("PIF_ALREADY_BONDED", ref)


def assert_no_protection(db, rec: dict) -> None:
    """While the PIF is attached, HA and the redo-log forbid reconfiguring it."""
    if rec["currently_attached"]:
        pools = db.table("pool")
        for pool in pools.refs():
            if pools.get_field(pool, "ha_enabled"):
                raise XapiError("HA_IS_ENABLED")
            if pools.get_field(pool, "redo_log_enabled"):
                raise XapiError("REDO_LOG_IS_ENABLED")


def assert_not_member_management(app, rec: dict, ref: str) -> None:
    """A pool member's attached management interface stays (it is the member's way to the coordinator)."""
    if rec["host"] != app.host_ref and rec["currently_attached"] and rec["management"]:
        raise XapiError("PIF_IS_MANAGEMENT_INTERFACE", ref)


def ha_enabled(db) -> bool:
    pools = db.table("pool")
    return any(pools.get_field(p, "ha_enabled") for p in pools.refs())


def new_metrics(db) -> str:
    """A PIF_metrics row as make_pif_metrics creates it (the monitor fills it in later)."""
    return insert(db, "PIF_metrics")


def free_device(db, host: str, stem: str, kind_field: str) -> str:
    """The first `<stem><n>` no PIF of `host` that is a `kind_field` (bond_master_of, ...) is named
    (xapi's choose_bond_device_name / choose_tunnel_device_name)."""
    pifs = db.table("PIF")
    used = {pifs.get_field(p, "device") for p in pifs.find("host", host) if pifs.get_field(p, kind_field)}
    n = 0
    while f"{stem}{n}" in used:
        n += 1
    return f"{stem}{n}"


def new_pif(db, **fields) -> str:
    """A PIF that is not a physical NIC's (VLAN, bond master, tunnel access): xapi's defaults for those."""
    row = dict(physical=False, currently_attached=False, ip_configuration_mode="None", IP="", netmask="",
               gateway="", DNS="", bond_slave_of=NULL_REF, VLAN_master_of=NULL_REF, management=False,
               other_config={}, disallow_unplug=False, ipv6_configuration_mode="None", IPv6=[""],
               ipv6_gateway="", primary_address_type="IPv4", managed=True, properties={}, capabilities=[],
               igmp_snooping_status="unknown")
    row.update(fields)
    return insert(db, "PIF", **row)


def move_configuration(db, src: str, dst: str) -> None:
    """The IPv4 configuration moves from one PIF to another (xapi_bond.ml move_configuration)."""
    pifs = db.table("PIF")
    fields = ("ip_configuration_mode", "IP", "netmask", "gateway", "DNS")
    values = {f: pifs.get_field(src, f) for f in fields}
    pifs.update(dst, values)
    pifs.update(src, {"ip_configuration_mode": "None", "IP": "", "netmask": "", "gateway": "", "DNS": ""})


def bring_up(db, pif: str) -> None:
    """Nm.bring_pif_up on the simulated host: attached with its bridge's MTU; a bond's master and its
    members exclude each other."""
    pifs = db.table("PIF")
    rec = pifs.get(pif)
    if not rec["currently_attached"]:
        pifs.set_field(pif, "currently_attached", True)
    nets = db.table("network")
    if rec["network"] in nets:                  # the PIF takes its bridge's MTU
        mtu = nets.get_field(rec["network"], "MTU")
        if mtu > 0 and mtu != rec["MTU"]:
            pifs.set_field(pif, "MTU", mtu)
    bonds = db.table("Bond")
    for bond in rec["bond_master_of"]:
        if bond in bonds:
            for member in bonds.get_field(bond, "slaves"):
                if member in pifs and pifs.get_field(member, "currently_attached"):
                    pifs.set_field(member, "currently_attached", False)
    bond = rec["bond_slave_of"]
    if bond in bonds:
        master = bonds.get_field(bond, "master")
        if master in pifs and pifs.get_field(master, "currently_attached"):
            pifs.set_field(master, "currently_attached", False)


def bring_down(db, pif: str) -> None:
    pifs = db.table("PIF")
    if pifs.get_field(pif, "currently_attached"):
        pifs.set_field(pif, "currently_attached", False)


def local_vifs(db, host: str, networks) -> list[str]:
    """The VIFs on `networks` of VMs that are local to `host` (xapi_bond.ml get_local_vifs): resident
    there, or not running and able to start only there (here: the pool has that one host)."""
    vifs, vms, nets = db.table("VIF"), db.table("VM"), db.table("network")
    only_host = len(db.table("host").refs()) == 1
    found = []
    for net in networks:
        if net not in nets:
            continue
        for vif in nets.get_field(net, "VIFs"):
            vm = vifs.get_field(vif, "VM") if vif in vifs else NULL_REF
            if vm not in vms:
                continue
            resident = vms.get_field(vm, "resident_on")
            if resident == host or (resident == NULL_REF and only_host):
                found.append(vif)
    return found


def move_vifs(db, vifs, network: str) -> None:
    """Xapi_vif.move_internal: the VIF now belongs to `network` (the simulated bridge follows)."""
    table = db.table("VIF")
    for vif in vifs:
        if vif in table and table.get_field(vif, "network") != network:
            table.set_field(vif, "network", network)
