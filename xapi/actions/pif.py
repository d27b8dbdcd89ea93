"""PIF.*: IP configuration, plug and unplug, properties, forget and the pool's db_introduce/db_forget,
with xapi_pif.ml's checks in its order and its errors:

* reconfigure_ip: unmanaged PIF -> PIF_UNMANAGED; while attached, HA or the redo-log on ->
  HA_IS_ENABLED / REDO_LOG_IS_ENABLED; Static needs an IPv4 IP and netmask, and every address given must
  be IPv4 (INVALID_IP_ADDRESS_SPECIFIED [field]); the management PIF cannot lose its IPv4 configuration
  (PIF_IS_MANAGEMENT_INTERFACE); reconfigure_ipv6 likewise with IPv6 (CIDR for the address);
* unplug: not the management PIF, no VIF of a VM running on its host attached to its network
  (VIF_IN_USE [network, vif]), disallow_unplug unset (PIF_DOES_NOT_ALLOW_UNPLUG); plug: not a bond slave;
* set_property: only "gro" = on|off (INVALID_VALUE ["properties", "name = value"]), only physical PIFs
  and bond masters (CANNOT_CHANGE_PIF_PROPERTIES); forget: not the management PIF, no bond, VLAN or tunnel.

The hosts' network interfaces are the simulated ones: there is no network daemon to reconfigure, so
plugging a PIF is its currently_attached; device discovery (scan, introduce) is left unimplemented.
"""
from __future__ import annotations

import ipaddress

from xapi.datamodel.errors import XapiError
from xapi.db.schema import NULL_REF, insert

PROPERTIES = {"gro": ("on", "off")}


def _rec(db, ref) -> dict:
    try:
        return db.table("PIF").get(ref)
    except (KeyError, TypeError):
        raise XapiError("HANDLE_INVALID", "PIF", ref) from None


def _managed(rec: dict, ref: str) -> None:
    if not rec["managed"]:
        raise XapiError("PIF_UNMANAGED", ref)


def _no_protection(db, rec: dict) -> None:
    """While the PIF is attached, HA and the redo-log forbid reconfiguring it."""
    if rec["currently_attached"]:
        pools = db.table("pool")
        for pool in pools.refs():
            if pools.get_field(pool, "ha_enabled"):
                raise XapiError("HA_IS_ENABLED")
            if pools.get_field(pool, "redo_log_enabled"):
                raise XapiError("REDO_LOG_IS_ENABLED")


def _valid_ip(kind, field: str, value: str) -> None:
    try:
        kind(value)
    except (ValueError, TypeError):
        raise XapiError("INVALID_IP_ADDRESS_SPECIFIED", field) from None


def _replug(db, ref: str, rec: dict) -> None:
    """A configuration change on an attached PIF brings it down and up again (Nm.bring_pif_up)."""
    if rec["currently_attached"]:
        db.table("PIF").set_field(ref, "currently_attached", True)


def reconfigure_ip(ctx, session, self, mode, IP, netmask, gateway, DNS):  # noqa: N803 - the API's names
    db = ctx.app.db
    rec = _rec(db, self)
    _managed(rec, self)
    _no_protection(db, rec)
    v4 = ipaddress.IPv4Address
    if mode == "Static":
        _valid_ip(v4, "IP", IP)
        _valid_ip(v4, "netmask", netmask)
    for field, value in (("IP", IP), ("netmask", netmask), ("gateway", gateway)):
        if value != "":
            _valid_ip(v4, field, value)
    if DNS != "":
        for address in DNS.split(","):
            _valid_ip(v4, "DNS", address)
    if rec["management"] and mode == "None" and rec["primary_address_type"] == "IPv4":
        raise XapiError("PIF_IS_MANAGEMENT_INTERFACE", self)
    db.table("PIF").update(self, {"ip_configuration_mode": mode, "IP": IP, "netmask": netmask,
                                  "gateway": gateway, "DNS": DNS})
    _replug(db, self, rec)
    return ""


def reconfigure_ipv6(ctx, session, self, mode, IPv6, gateway, DNS):  # noqa: N803 - the API's names
    db = ctx.app.db
    rec = _rec(db, self)
    _managed(rec, self)
    _no_protection(db, rec)
    v6 = ipaddress.IPv6Address
    if gateway != "":
        _valid_ip(v6, "gateway", gateway)
    if IPv6 != "":
        try:
            if "/" not in IPv6:
                raise ValueError(IPv6)
            ipaddress.IPv6Interface(IPv6)
        except ValueError:
            raise XapiError("INVALID_CIDR_ADDRESS_SPECIFIED", "IPv6") from None
    if DNS != "":
        for address in DNS.split(","):
            _valid_ip(v6, "DNS", address)
    if rec["management"] and mode == "None" and rec["primary_address_type"] == "IPv6":
        raise XapiError("PIF_IS_MANAGEMENT_INTERFACE", self)
    values = {"ipv6_configuration_mode": mode, "ipv6_gateway": gateway, "IPv6": [IPv6]}
    if DNS != "":
        values["DNS"] = DNS
    db.table("PIF").update(self, values)
    _replug(db, self, rec)
    return ""


def set_primary_address_type(ctx, session, self, primary_address_type):
    db = ctx.app.db
    rec = _rec(db, self)
    _no_protection(db, rec)
    if rec["management"]:
        raise XapiError("PIF_IS_MANAGEMENT_INTERFACE", self)
    db.table("PIF").set_field(self, "primary_address_type", primary_address_type)
    return ""


def set_property(ctx, session, self, name, value):
    db = ctx.app.db
    rec = _rec(db, self)
    if value not in PROPERTIES.get(name, ()):
        raise XapiError("INVALID_VALUE", "properties", f"{name} = {value}")
    if not (rec["bond_master_of"] or rec["physical"]) or rec["bond_slave_of"] != NULL_REF:
        raise XapiError("CANNOT_CHANGE_PIF_PROPERTIES", self)
    properties = {**rec["properties"], name: value}
    pifs = db.table("PIF")
    pifs.set_field(self, "properties", properties)
    bonds = db.table("Bond")
    for bond in rec["bond_master_of"]:               # a bond's members follow its master
        if bond in bonds:
            for slave in bonds.get_field(bond, "slaves"):
                if slave in pifs:
                    pifs.set_field(slave, "properties", properties)
    return ""


def set_disallow_unplug(ctx, session, self, value):
    db = ctx.app.db
    rec = _rec(db, self)
    if rec["disallow_unplug"] != bool(value):
        db.table("PIF").set_field(self, "disallow_unplug", bool(value))
    return ""


# -- plug and unplug -------------------------------------------------------------------------------
def _vifs_in_use(db, rec: dict) -> None:
    """No VIF on the PIF's network may be attached for a VM running on the PIF's host."""
    network, host = rec["network"], rec["host"]
    nets, vifs, vms = db.table("network"), db.table("VIF"), db.table("VM")
    if network not in nets:
        return
    for vif in nets.get_field(network, "VIFs"):
        if vif not in vifs:
            continue
        vm = vifs.get_field(vif, "VM")
        if vm in vms and vms.get_field(vm, "resident_on") == host and vifs.get_field(vif, "currently_attached"):
            raise XapiError("VIF_IN_USE", network, vif)


def unplug(ctx, session, self):
    db = ctx.app.db
    rec = _rec(db, self)
    _managed(rec, self)
    _no_protection(db, rec)
    if rec["management"]:
        raise XapiError("PIF_IS_MANAGEMENT_INTERFACE", self)
    _vifs_in_use(db, rec)
    if rec["disallow_unplug"]:
        raise XapiError("PIF_DOES_NOT_ALLOW_UNPLUG", self)
    tunnels = db.table("tunnel")
    for tunnel in rec["tunnel_transport_PIF_of"]:    # a tunnel goes down with its transport
        if tunnel in tunnels:
            access = tunnels.get_field(tunnel, "access_PIF")
            if access in db.table("PIF") and access != self:
                unplug(ctx, session, access)
    if rec["bond_slave_of"] == NULL_REF:             # a bond's members go down with its master
        db.table("PIF").set_field(self, "currently_attached", False)
    return ""


def plug(ctx, session, self):
    db = ctx.app.db
    rec = _rec(db, self)
    _managed(rec, self)
    tunnels = db.table("tunnel")
    for tunnel in rec["tunnel_access_PIF_of"]:      # a tunnel needs its transport up and configured
        if tunnel in tunnels:
            transport = tunnels.get_field(tunnel, "transport_PIF")
            if _rec(db, transport)["ip_configuration_mode"] == "None":
                raise XapiError("TRANSPORT_PIF_NOT_CONFIGURED", transport)
            plug(ctx, session, transport)
    if rec["bond_slave_of"] != NULL_REF:
        raise XapiError("CANNOT_PLUG_BOND_SLAVE", self)
    db.table("PIF").set_field(self, "currently_attached", True)
    return ""


# -- records ---------------------------------------------------------------------------------------
def forget(ctx, session, self):
    app = ctx.app
    db = app.db
    rec = _rec(db, self)
    if rec["management"]:
        raise XapiError("PIF_IS_MANAGEMENT_INTERFACE", self)
    if (rec["bond_slave_of"] != NULL_REF and rec["bond_slave_of"] in db.table("Bond")) or rec["bond_master_of"]:
        raise XapiError("PIF_ALREADY_BONDED", self)
    if rec["VLAN_slave_of"] or rec["VLAN"] != -1:
        raise XapiError("PIF_VLAN_STILL_EXISTS", self)
    if rec["tunnel_transport_PIF_of"] or rec["tunnel_access_PIF_of"]:
        raise XapiError("PIF_TUNNEL_STILL_EXISTS", self)
    _no_protection(db, rec)
    if rec["sriov_logical_PIF_of"]:
        raise XapiError("CANNOT_FORGET_SRIOV_LOGICAL", self)
    if rec["sriov_physical_PIF_of"]:
        raise XapiError("PIF_SRIOV_STILL_EXISTS", self)
    metrics = db.table("PIF_metrics")
    if rec["metrics"] in metrics:
        metrics.remove(rec["metrics"])
    db.table("PIF").remove(self)
    return ""


def db_introduce(ctx, session, device, network, host, MAC, MTU, VLAN, physical,  # noqa: N803 - API names
                 ip_configuration_mode, IP, netmask, gateway, DNS, bond_slave_of, VLAN_master_of,
                 management, other_config, disallow_unplug, ipv6_configuration_mode, IPv6, ipv6_gateway,
                 primary_address_type, managed=True, properties=None):
    """The record alone, as the pool's join copies it (xapi: pool_introduce); not yet attached."""
    db = ctx.app.db
    for cls, ref in (("network", network), ("host", host)):
        if type(ref) is not str or ref not in db.table(cls):
            raise XapiError("HANDLE_INVALID", cls, ref)
    metrics = insert(db, "PIF_metrics")
    return insert(db, "PIF", device=device, network=network, host=host, MAC=MAC, MTU=int(MTU), VLAN=int(VLAN),
                  metrics=metrics, physical=bool(physical), currently_attached=False,
                  ip_configuration_mode=ip_configuration_mode, IP=IP, netmask=netmask, gateway=gateway, DNS=DNS,
                  bond_slave_of=NULL_REF, VLAN_master_of=VLAN_master_of if VLAN_master_of in db.table("VLAN")
                  else NULL_REF, management=bool(management), other_config=dict(other_config),
                  disallow_unplug=bool(disallow_unplug), ipv6_configuration_mode=ipv6_configuration_mode,
                  IPv6=list(IPv6), ipv6_gateway=ipv6_gateway, primary_address_type=primary_address_type,
                  managed=bool(managed), properties=dict(properties or {}))


def db_forget(ctx, session, self):
    db = ctx.app.db
    _rec(db, self)
    db.table("PIF").remove(self)
    return ""
