"""Bond.create, destroy, set_mode and set_property, with xapi_bond.ml's checks in its order and errors.

create(network, members, MAC, mode, properties): the network managed (NETWORK_UNMANAGED), at least one
member (PIF_BOND_NEEDS_MORE_MEMBERS), the network not yet on the members' host
(NETWORK_ALREADY_CONNECTED [host, pif]), MAC empty or valid (MAC_INVALID), properties valid for the
mode (INVALID_VALUE ["properties", "k = v"]; lacp's defaults added); each member not bonded
(PIF_ALREADY_BONDED), no VLAN (PIF_VLAN_EXISTS [device]), no tunnel access PIF (IS_TUNNEL_ACCESS_PIF),
not the management PIF under HA (HA_CANNOT_CHANGE_BOND_STATUS_OF_MGMT_IFACE), managed (PIF_UNMANAGED);
one host (PIF_CANNOT_BOND_CROSS_HOST), equal properties (INCOMPATIBLE_PIF_PROPERTIES), at most one
member with an IP configuration (PIF_BOND_MORE_THAN_ONE_IP).
The master PIF "bond<N>" (first N free among the host's bond masters) gets the primary member's MAC
(the management member, else the one with an IP configuration, else the first) and IP configuration;
management moves to it (the host's inventory names the bond's bridge, as xapi's move_management), it is plugged (its members go down), and the members' VLANs, tunnels and local
VIFs move up onto it; disallow_unplug moves from the members to it.
destroy undoes it onto the primary member; set_mode keeps the properties valid for the new mode.
"""
from __future__ import annotations

import asyncio
import logging
import re

from xapi.actions import pif_links as links, tunnel as tunnel_actions, vlan as vlan_actions
from xapi.datamodel.errors import XapiError
from xapi.db.schema import NULL_REF, insert

log = logging.getLogger("xapi.bond")

_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


def _lacp_key(value: str) -> bool:
    try:
        int(value)
        return True
    except ValueError:
        return False


# mode -> property -> (default or None, is the value valid)
_REQUIREMENTS = {
    "lacp": {
        "hashing_algorithm": ("tcpudp_ports", lambda v: v in ("src_mac", "tcpudp_ports")),
        "lacp-time": ("slow", lambda v: v in ("fast", "slow")),
        "lacp-aggregation-key": (None, _lacp_key),
        "lacp-fallback-ab": ("true", lambda v: v in ("true", "false")),
    },
}


def _validate(mode: str, name: str, value: str) -> None:
    requirement = _REQUIREMENTS.get(mode, {}).get(name)
    if requirement is None or not requirement[1](value):
        raise XapiError("INVALID_VALUE", "properties", f"{name} = {value}")


def _with_defaults(mode: str, properties: dict) -> dict:
    out = dict(properties)
    for name, (default, _) in _REQUIREMENTS.get(mode, {}).items():
        if name not in out and default is not None:
            out[name] = default
    return out


def _move_management(app, src: str, dst: str) -> None:
    """The host's management interface moves (xapi: move_management, i.e. change_management_interface
    writing the host's inventory, then update_management_flags), so its next start keeps it there."""
    db = app.db
    pifs = db.table("PIF")
    pifs.set_field(dst, "management", True)
    links.bring_up(db, dst)
    pifs.set_field(src, "management", False)
    _follow_in_inventory(app, pifs.get_field(dst, "host"), dst)


_pending: set = set()       # inventory writes on other hosts under way (a reference keeps each task alive)


def _follow_in_inventory(app, host: str, pif: str) -> None:
    """The inventory of the PIF's host names the PIF's bridge as its management interface: written
    here for this host, through the host's internal call for a member (its own inventory file)."""
    from xapi.actions import host_mgmt
    db = app.db
    network = db.table("PIF").get_field(pif, "network")
    if not links.exists(db, "network", network):
        return
    bridge = db.table("network").get_field(network, "bridge")
    address_type = db.table("PIF").get_field(pif, "primary_address_type")
    if host == app.host_ref:
        host_mgmt._write_inventory(app, MANAGEMENT_INTERFACE=bridge, MANAGEMENT_ADDRESS_TYPE=address_type.lower())
        return
    task = asyncio.get_running_loop().create_task(
        app.pool.call(host, "host_mgmt.set_interface", bridge, address_type, timeout=30))
    _pending.add(task)
    task.add_done_callback(_written)


def _written(task) -> None:
    _pending.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("the host's inventory does not name its new management interface: %s", task.exception())


def _move_vlan(db, host: str, new_slave: str, vlan: str) -> None:
    """A VLAN moves onto another tagged PIF: reused when that one has the tag already, else remade."""
    vlans, pifs = db.table("VLAN"), db.table("PIF")
    old_master = vlans.get_field(vlan, "untagged_PIF")
    tag = vlans.get_field(vlan, "tag")
    if old_master not in pifs:
        vlan_actions.destroy_rows(db, vlan, old_master)
        return
    network = pifs.get_field(old_master, "network")
    plugged = pifs.get_field(old_master, "currently_attached")
    management = pifs.get_field(old_master, "management")
    if plugged and not management:
        links.bring_down(db, old_master)
    same_tag = [v for v in pifs.get_field(new_slave, "VLAN_slave_of")
                if v in vlans and vlans.get_field(v, "tag") == tag]
    if same_tag:
        new_master = vlans.get_field(same_tag[0], "untagged_PIF")
        links.move_vifs(db, links.local_vifs(db, host, [network]), pifs.get_field(new_master, "network"))
    else:
        _, new_master = vlan_actions.create_internal(db, host, new_slave, tag, network,
                                                     pifs.get_field(new_slave, "device"))
    links.move_configuration(db, old_master, new_master)
    vlan_actions.destroy_rows(db, vlan, old_master)
    if plugged:
        if management:
            pifs.set_field(new_master, "management", True)
        links.bring_up(db, new_master)


def _move_tunnel(db, host: str, new_transport: str, tunnel: str) -> None:
    tunnels, pifs = db.table("tunnel"), db.table("PIF")
    old_access = tunnels.get_field(tunnel, "access_PIF")
    if old_access not in pifs:
        tunnel_actions.destroy_rows(db, tunnel)
        return
    network = pifs.get_field(old_access, "network")
    plugged = pifs.get_field(old_access, "currently_attached")
    _, new_access = tunnel_actions.create_internal(db, new_transport, network, host,
                                                   tunnels.get_field(tunnel, "protocol"))
    tunnel_actions.destroy_rows(db, tunnel)
    if plugged:
        links.bring_up(db, new_access)


def _links_up(db, members) -> int:
    """The members with a carrier, as xapi's monitor counts them (the simulated NICs report theirs)."""
    pifs, metrics = db.table("PIF"), db.table("PIF_metrics")
    return sum(1 for m in members
               if pifs.get_field(m, "metrics") in metrics and metrics.get_field(pifs.get_field(m, "metrics"), "carrier"))


def _vlans_of(db, pif_refs) -> list[str]:
    pifs, vlans = db.table("PIF"), db.table("VLAN")
    return [v for p in pif_refs for v in pifs.get_field(p, "VLAN_slave_of") if v in vlans]


def _tunnels_of(db, pif_refs) -> list[str]:
    pifs, tunnels = db.table("PIF"), db.table("tunnel")
    return [t for p in pif_refs for t in pifs.get_field(p, "tunnel_transport_PIF_of") if t in tunnels]


def _management_on_vlan(db, vlans) -> bool:
    pifs, table = db.table("PIF"), db.table("VLAN")
    return any(pifs.get_field(u, "management") for u in (table.get_field(v, "untagged_PIF") for v in vlans)
               if u in pifs)


def create(ctx, session, network, members, MAC, mode, properties):  # noqa: N803 - the API's names
    db = ctx.app.db
    links.assert_network_managed(db, network)
    if not members:
        raise XapiError("PIF_BOND_NEEDS_MORE_MEMBERS")
    members = list(dict.fromkeys(members))  # the same PIF twice must not pass for two members
    recs = {m: links.record(db, "PIF", m) for m in members}
    host = recs[members[0]]["host"]
    links.assert_no_other_local_pifs(db, host, network)
    if MAC != "" and not _MAC.fullmatch(MAC):
        raise XapiError("MAC_INVALID", MAC)
    for name, value in properties.items():
        _validate(mode, name, value)
    properties = _with_defaults(mode, properties)

    member_networks = [recs[m]["network"] for m in members]
    vifs = links.local_vifs(db, host, member_networks)
    vlans = _vlans_of(db, members)
    tunnels = _tunnels_of(db, members)
    management_on_vlan = _management_on_vlan(db, vlans)
    management = next((m for m in members if recs[m]["management"]), None)
    with_ip = [m for m in members if recs[m]["ip_configuration_mode"] != "None"]
    primary = management or (with_ip[0] if with_ip else members[0])
    mac = MAC or recs[primary]["MAC"]
    disallow_unplug = any(recs[m]["disallow_unplug"] for m in members)

    ha = links.ha_enabled(db)
    for m in members:
        rec = recs[m]
        if links.exists(db, "Bond", rec["bond_slave_of"]):
            raise XapiError("PIF_ALREADY_BONDED", m)
        if rec["VLAN"] != -1:
            raise XapiError("PIF_VLAN_EXISTS", rec["device"])
        if rec["tunnel_access_PIF_of"]:
            raise XapiError("IS_TUNNEL_ACCESS_PIF", m)
        if ha and rec["management"]:
            raise XapiError("HA_CANNOT_CHANGE_BOND_STATUS_OF_MGMT_IFACE")
        if not rec["managed"]:
            raise XapiError("PIF_UNMANAGED", m)
    if len({recs[m]["host"] for m in members}) != 1:
        raise XapiError("PIF_CANNOT_BOND_CROSS_HOST")
    pif_properties = recs[members[0]]["properties"]
    if any(recs[m]["properties"] != pif_properties for m in members):
        raise XapiError("INCOMPATIBLE_PIF_PROPERTIES")
    if len(with_ip) > 1:
        raise XapiError("PIF_BOND_MORE_THAN_ONE_IP")

    device = links.free_device(db, host, "bond", "bond_master_of")
    master = links.new_pif(db, device=device, network=network, host=host, MAC=mac, MTU=-1,
                           VLAN=-1, metrics=links.new_metrics(db), properties=dict(pif_properties))
    bond = insert(db, "Bond", master=master, primary_slave=primary, mode=mode, properties=properties,
                  links_up=_links_up(db, members), auto_update_mac=MAC == "")
    links.link(db, "PIF", master, "bond_master_of", bond)
    pifs = db.table("PIF")
    for m in members:
        pifs.set_field(m, "bond_slave_of", bond)
        links.link(db, "Bond", bond, "slaves", m)
    links.move_configuration(db, primary, master)
    if management is not None:
        _move_management(ctx.app, management, master)
    elif not management_on_vlan:
        links.bring_up(db, master)
    for vlan in vlans:
        _move_vlan(db, host, master, vlan)
    if management_on_vlan:
        links.bring_up(db, master)
    for tunnel in tunnels:
        _move_tunnel(db, host, master, tunnel)
    links.move_vifs(db, vifs, network)
    if disallow_unplug:
        pifs.set_field(master, "disallow_unplug", True)
        for m in members:
            pifs.set_field(m, "disallow_unplug", False)
    return bond


def destroy(ctx, session, self):
    db = ctx.app.db
    rec = links.record(db, "Bond", self)
    pifs = db.table("PIF")
    master = rec["master"]
    members = [m for m in rec["slaves"] if m in pifs]
    if master not in pifs:                      # nothing left to move down
        for m in members:
            pifs.set_field(m, "bond_slave_of", NULL_REF)
        db.table("Bond").remove(self)
        return ""
    mrec = pifs.get(master)
    host = mrec["host"]
    primary = rec["primary_slave"] if rec["primary_slave"] in pifs else (members[0] if members else NULL_REF)
    vifs = links.local_vifs(db, host, [mrec["network"]])
    vlans = _vlans_of(db, [master])
    tunnels = _tunnels_of(db, [master])
    management_on_vlan = _management_on_vlan(db, vlans)
    if links.ha_enabled(db) and mrec["management"]:
        raise XapiError("HA_CANNOT_CHANGE_BOND_STATUS_OF_MGMT_IFACE")
    if primary != NULL_REF:
        links.move_configuration(db, master, primary)
    # the members are no bond's any more before they come up
    for m in members:
        pifs.set_field(m, "bond_slave_of", NULL_REF)
    if mrec["management"] and primary != NULL_REF:
        _move_management(ctx.app, master, primary)
        for m in members:
            links.bring_up(db, m)
    elif mrec["currently_attached"] and not management_on_vlan:
        for m in members:
            links.bring_up(db, m)
    if primary != NULL_REF:
        for vlan in vlans:
            _move_vlan(db, host, primary, vlan)
        if management_on_vlan:
            for m in members:
                links.bring_up(db, m)
        links.move_vifs(db, vifs, pifs.get_field(primary, "network"))
        for tunnel in tunnels:
            _move_tunnel(db, host, primary, tunnel)
        if mrec["disallow_unplug"]:
            pifs.set_field(primary, "disallow_unplug", True)
    db.table("Bond").remove(self)
    metrics = db.table("PIF_metrics")
    if mrec["metrics"] in metrics:
        metrics.remove(mrec["metrics"])
    pifs.remove(master)
    return ""


def set_mode(ctx, session, self, value):
    db = ctx.app.db
    rec = links.record(db, "Bond", self)
    kept = {}
    for name, v in rec["properties"].items():
        try:
            _validate(value, name, v)
            kept[name] = v
        except XapiError:
            pass
    db.table("Bond").update(self, {"mode": value, "properties": _with_defaults(value, kept)})
    if links.exists(db, "PIF", rec["master"]):
        links.bring_up(db, rec["master"])
    return ""


def set_property(ctx, session, self, name, value):
    db = ctx.app.db
    rec = links.record(db, "Bond", self)
    _validate(rec["mode"], name, value)
    db.table("Bond").set_field(self, "properties", {**rec["properties"], name: value})
    if links.exists(db, "PIF", rec["master"]):
        links.bring_up(db, rec["master"])
    return ""
