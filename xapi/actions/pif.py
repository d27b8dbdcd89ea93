"""PIF.*: IP configuration, plug and unplug, properties, forget and the pool's db_introduce/db_forget,
with xapi_pif.ml's checks in its order and its errors:

* reconfigure_ip: unmanaged PIF -> PIF_UNMANAGED; while attached, HA or the redo-log on ->
  HA_IS_ENABLED / REDO_LOG_IS_ENABLED; Static needs an IPv4 IP and netmask, and every address given must
  be IPv4 (INVALID_IP_ADDRESS_SPECIFIED [field]); the management PIF cannot lose its IPv4 configuration
  (PIF_IS_MANAGEMENT_INTERFACE); reconfigure_ipv6 likewise with IPv6 (CIDR for the address);
* unplug: not the management PIF, no VIF of a VM running on its host attached to its network
  (VIF_IN_USE [network, vif]), disallow_unplug unset (PIF_DOES_NOT_ALLOW_UNPLUG); plug: not a bond slave;
* set_property: only "gro" = on|off (INVALID_VALUE ["properties", "name = value"]), only physical PIFs
  and bond masters (CANNOT_CHANGE_PIF_PROPERTIES); forget: not the management PIF, no bond, VLAN or tunnel;
* scan: a PIF for each of the host's NICs (xapi.actions.host_nics) that has none, physical MACs refreshed;
  introduce(host, MAC, device, managed): MAC empty (the device's) or valid (MAC_INVALID), no physical PIF
  with that device yet (DUPLICATE_PIF_DEVICE_NAME), the NIC there
  (COULD_NOT_FIND_NETWORK_INTERFACE_WITH_SPECIFIED_DEVICE_NAME_AND_MAC_ADDRESS [device, MAC]); a new
  NIC's PIF joins the network of bridge xenbr<N> for eth<N> (br<device> otherwise), made when missing;
* create_VLAN and destroy: the deprecated forms of VLAN.create (on the host's untagged PIF of the
  device, else INVALID_VALUE ["device", device]) and VLAN.destroy (not on a physical PIF: PIF_IS_PHYSICAL).

The hosts' network interfaces are the simulated ones: there is no network daemon to reconfigure, so
plugging a PIF is its currently_attached (xapi.actions.pif_links.bring_up).
"""
from __future__ import annotations

import ipaddress
import re

from xapi.actions import host_nics, pif_links as links
from xapi.datamodel.errors import XapiError
from xapi.db.schema import NULL_REF, insert

PROPERTIES = {"gro": ("on", "off")}
PROPERTY_DEFAULTS = {"gro": "on"}      # a new NIC's PIF


def _rec(db, ref) -> dict:
    try:
        return db.table("PIF").get(ref)
    except (KeyError, TypeError):
        raise XapiError("HANDLE_INVALID", "PIF", ref) from None


def _managed(rec: dict, ref: str) -> None:
    if not rec["managed"]:
        raise XapiError("PIF_UNMANAGED", ref)


_no_protection = links.assert_no_protection


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
            trec = _rec(db, transport)
            if trec["ip_configuration_mode"] == "None" and trec["ipv6_configuration_mode"] == "None":
                raise XapiError("TRANSPORT_PIF_NOT_CONFIGURED", transport)
            plug(ctx, session, transport)
    if rec["bond_slave_of"] != NULL_REF:
        raise XapiError("CANNOT_PLUG_BOND_SLAVE", self)
    links.bring_up(db, self)
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


# -- the host's NICs -------------------------------------------------------------------------------
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def _bridge_of(device: str) -> str:
    """xapi's bridge naming convention: eth<N> -> xenbr<N>, anything else -> br<device>."""
    return "xenbr" + device[3:] if device.startswith("eth") else "br" + device


def _network_for(db, device: str) -> str:
    """The network of the device's bridge, made (as xapi names it) unless exactly one is there."""
    bridge = _bridge_of(device)
    nets = db.table("network")
    found = [n for n in nets.refs() if nets.get_field(n, "bridge") == bridge]
    if len(found) == 1:
        return found[0]
    return insert(db, "network", name_label=f"Pool-wide network associated with {device}", name_description="",
                  MTU=1500, bridge=bridge, managed=True)


def _physical_devices(db, host: str) -> set:
    pifs = db.table("PIF")
    return {pifs.get_field(p, "device") for p in pifs.find("host", host) if pifs.get_field(p, "physical")}


def _introduce(db, host: str, nic, managed: bool, disallow_unplug: bool = False) -> str:
    metrics = insert(db, "PIF_metrics", **nic.metrics)
    return insert(db, "PIF", device=nic.device, network=_network_for(db, nic.device), host=host, MAC=nic.MAC,
                  MTU=nic.MTU, VLAN=-1, metrics=metrics, physical=True, currently_attached=False,
                  ip_configuration_mode="None", bond_slave_of=NULL_REF, VLAN_master_of=NULL_REF,
                  management=False, disallow_unplug=disallow_unplug, ipv6_configuration_mode="None", IPv6=[],
                  primary_address_type="IPv4", managed=bool(managed), properties=dict(PROPERTY_DEFAULTS),
                  capabilities=[])


def introduce(ctx, session, host, MAC, device, managed):  # noqa: N803 - the API's names
    app = ctx.app
    db = app.db
    links.record(db, "host", host)
    mac = MAC.lower()
    found = host_nics.nics(app, host)
    if mac == "":
        mac = found[device].MAC if device in found else ""
    if not _MAC.fullmatch(mac):
        raise XapiError("MAC_INVALID", mac)
    if device in _physical_devices(db, host):
        raise XapiError("DUPLICATE_PIF_DEVICE_NAME", device)
    nic = found.get(device)
    if nic is None or nic.MAC != mac:
        raise XapiError("COULD_NOT_FIND_NETWORK_INTERFACE_WITH_SPECIFIED_DEVICE_NAME_AND_MAC_ADDRESS", device, mac)
    return _introduce(db, host, nic, managed)


def scan(ctx, session, host):
    app = ctx.app
    db = app.db
    links.record(db, "host", host)
    found = host_nics.nics(app, host)
    pifs = db.table("PIF")
    for pif in pifs.find("host", host):         # refresh_all: a physical PIF follows its NIC's MAC
        if pifs.get_field(pif, "physical"):
            nic = found.get(pifs.get_field(pif, "device"))
            if nic is not None and pifs.get_field(pif, "MAC") != nic.MAC:
                pifs.set_field(pif, "MAC", nic.MAC)
    known = _physical_devices(db, host)
    for device, nic in found.items():
        if device not in known:
            _introduce(db, host, nic, managed=True)
    return ""


# -- the deprecated VLAN calls ---------------------------------------------------------------------
def create_VLAN(ctx, session, device, network, host, VLAN):  # noqa: N802,N803 - the API's names
    from xapi.actions import vlan as vlan_actions
    db = ctx.app.db
    hrec = links.record(db, "host", host)
    pifs = db.table("PIF")
    base = [p for p in hrec["PIFs"] if p in pifs and pifs.get_field(p, "device") == device
            and pifs.get_field(p, "VLAN") == -1]
    if not base:
        raise XapiError("INVALID_VALUE", "device", device)
    vlan = vlan_actions.create(ctx, session, base[0], VLAN, network)
    return db.table("VLAN").get_field(vlan, "untagged_PIF")


def destroy(ctx, session, self):
    from xapi.actions import vlan as vlan_actions
    db = ctx.app.db
    rec = _rec(db, self)
    if rec["VLAN"] < 0:
        raise XapiError("PIF_IS_PHYSICAL")
    return vlan_actions.destroy(ctx, session, rec["VLAN_master_of"])
