"""The management interface: host.management_reconfigure, host.local_management_reconfigure,
host.management_disable and pool.management_reconfigure, with xapi_host.ml / xapi_pool.ml's checks.

host.management_reconfigure(pif) (on the coordinator, the PIF's host doing its part):
HA_IS_ENABLED; for a managed PIF, xapi_pif's assert_usable_for_management (a bond member:
CANNOT_PLUG_BOND_SLAVE [pif]; primary address type IPv4 without IPv4 configuration:
PIF_HAS_NO_NETWORK_CONFIGURATION [pif]; IPv6 without IPv6 configuration:
PIF_HAS_NO_V6_NETWORK_CONFIGURATION [pif]) and the host's current management PIF must have the same
primary address type (PIF_INCOMPATIBLE_PRIMARY_ADDRESS_TYPE). A PIF that already is the management one
is left alone. Otherwise its network is attached (the PIF plugged), the host's inventory names the
bridge (MANAGEMENT_INTERFACE, MANAGEMENT_ADDRESS_TYPE) and update_management_flags marks exactly the
host's PIFs on that bridge as management; host.address becomes the PIF's address, as
on_dom0_networking_change reads it (kept when the PIF has none yet). A VLAN's untagged PIF serves as
well as a physical one (a management VLAN). The daemon listens on its configured address whatever
the management PIF (it does not rebind to the PIF's address).

host.management_disable (emergency call, on the host that receives it): HA_IS_ENABLED, a pool member
SLAVE_REQUIRES_MANAGEMENT_INTERFACE; then no PIF of the host is the management one, the inventory
names none and, as xapi_mgmt_iface.run ~mgmt_enabled:false, the daemon's HTTP/HTTPS listeners move to
the loopback (127.0.0.1; the Unix socket stays): xapi.server.listeners. A management_reconfigure puts
them back on the daemon's address. host.local_management_reconfigure(bridge) (emergency): only in
emergency mode (POOL_NOT_IN_EMERGENCY_MODE), it records the bridge in the inventory and listens on the
address again. At start the inventory decides both (xapi.startup, xapi.server.listeners).

pool.management_reconfigure(network): HA_IS_ENABLED; every host needs a PIF on the network
(PIF_NOT_PRESENT [host, network]), all of one primary address type
(PIF_INCOMPATIBLE_PRIMARY_ADDRESS_TYPE [pif]) and each usable for management; then members first and
the coordinator last get host.management_reconfigure.
"""
from __future__ import annotations

import ipaddress
import os

from xapi import atomic, startup
from xapi.actions import pif_links as links
from xapi.datamodel.errors import XapiError
from xapi.db.schema import NULL_REF
from xapi.pool import internal
from xapi.server import listeners


def _assert_no_ha(db) -> None:
    if links.ha_enabled(db):
        raise XapiError("HA_IS_ENABLED")


def assert_usable_for_management(rec: dict, ref: str, address_type: str) -> None:
    if rec["bond_slave_of"] != NULL_REF:
        raise XapiError("CANNOT_PLUG_BOND_SLAVE", ref)
    if address_type == "IPv4" and rec["ip_configuration_mode"] == "None":
        raise XapiError("PIF_HAS_NO_NETWORK_CONFIGURATION", ref)
    if address_type == "IPv6" and rec["ipv6_configuration_mode"] == "None":
        raise XapiError("PIF_HAS_NO_V6_NETWORK_CONFIGURATION", ref)


def _management_pif(db, host: str) -> str | None:
    pifs = db.table("PIF")
    return next((p for p in pifs.find("host", host) if pifs.get_field(p, "management")), None)


def _address(rec: dict) -> str:
    """The PIF's address of its primary type ("" when it has none yet)."""
    if rec["primary_address_type"] == "IPv6":
        for cidr in rec["IPv6"]:
            if cidr:
                try:
                    return str(ipaddress.IPv6Interface(cidr).ip)
                except ValueError:
                    continue
        return ""
    return rec["IP"]


def _write_inventory(app, **values: str) -> None:
    inventory = startup.read_inventory(app.config.data_dir)
    inventory.update(values)
    path = os.path.join(app.config.data_dir, "inventory")
    atomic.write_file(path, "".join(f"{k}='{v}'\n" for k, v in sorted(inventory.items())).encode(), 0o644)


@internal.method("host_mgmt.set_interface")
async def _set_interface(app, bridge: str, address_type: str) -> str:
    """On the host itself: the management interface its next start brings up, and its listeners back
    on its address if management_disable had left only the loopback."""
    _write_inventory(app, MANAGEMENT_INTERFACE=bridge, MANAGEMENT_ADDRESS_TYPE=address_type.lower())
    await listeners.listen(app, True)
    return ""


def update_management_flags(db, host: str, bridge: str) -> None:
    """Exactly the host's PIFs whose network has `bridge` are management PIFs ("" : none)."""
    pifs, nets = db.table("PIF"), db.table("network")
    for pif in pifs.find("host", host):
        net = pifs.get_field(pif, "network")
        on = bool(bridge) and net in nets and nets.get_field(net, "bridge") == bridge
        if pifs.get_field(pif, "management") != on:
            pifs.set_field(pif, "management", on)


async def management_reconfigure(ctx, session, pif):
    app = ctx.app
    db = app.db
    rec = links.record(db, "PIF", pif)
    _assert_no_ha(db)
    host = rec["host"]
    address_type = rec["primary_address_type"]
    if rec["managed"]:
        assert_usable_for_management(rec, pif, address_type)
        current = _management_pif(db, host)
        if current is not None and db.table("PIF").get_field(current, "primary_address_type") != address_type:
            raise XapiError("PIF_INCOMPATIBLE_PRIMARY_ADDRESS_TYPE")
    if rec["management"]:
        return ""
    bridge = links.record(db, "network", rec["network"])["bridge"]    # a dangling PIF: HANDLE_INVALID
    links.bring_up(db, pif)                       # Xapi_network.attach_internal
    await app.pool.call(host, "host_mgmt.set_interface", bridge, address_type)
    update_management_flags(db, host, bridge)
    address = _address(db.table("PIF").get(pif))
    hosts = db.table("host")
    if address and hosts.get_field(host, "address") != address:
        hosts.set_field(host, "address", address)
    return ""


async def management_disable(ctx, session):
    app = ctx.app
    db = app.db
    _assert_no_ha(db)
    if not app.is_coordinator:
        raise XapiError("SLAVE_REQUIRES_MANAGEMENT_INTERFACE")
    # the listeners first: a failed bind (INTERNAL_ERROR) leaves the inventory as it was for a restart
    await listeners.listen(app, False)           # xapi_mgmt_iface.run ~mgmt_enabled:false
    _write_inventory(app, MANAGEMENT_INTERFACE="")
    update_management_flags(db, app.host_ref, "")
    return ""


async def local_management_reconfigure(ctx, session, interface):
    from xapi.pool.api import host_is_in_emergency_mode
    app = ctx.app
    if not host_is_in_emergency_mode(ctx, session):
        raise XapiError("POOL_NOT_IN_EMERGENCY_MODE")
    await listeners.listen(app, True)            # first, as management_disable
    _write_inventory(app, MANAGEMENT_INTERFACE=str(interface))
    return ""


async def pool_management_reconfigure(ctx, session, network):
    app = ctx.app
    db = app.db
    links.record(db, "network", network)
    _assert_no_ha(db)
    pifs = db.table("PIF")
    on_network = [p for p in db.table("network").get_field(network, "PIFs") if p in pifs]
    by_host: dict[str, str] = {}
    for p in on_network:
        by_host.setdefault(pifs.get_field(p, "host"), p)
    for host in db.table("host").refs():
        if host not in by_host:
            raise XapiError("PIF_NOT_PRESENT", host, network)
    address_type = pifs.get_field(on_network[0], "primary_address_type")
    for p in on_network:
        rec = pifs.get(p)
        if rec["primary_address_type"] != address_type:
            raise XapiError("PIF_INCOMPATIBLE_PRIMARY_ADDRESS_TYPE", p)
        assert_usable_for_management(rec, p, address_type)
    members = [h for h in by_host if h != app.host_ref]
    for host in [*members, app.host_ref]:
        if host in by_host:
            await management_reconfigure(ctx, session, by_host[host])
    return ""


HOST_MESSAGES = {"management_reconfigure": management_reconfigure, "management_disable": management_disable,
                 "local_management_reconfigure": local_management_reconfigure}
POOL_MESSAGES = {"management_reconfigure": pool_management_reconfigure}
