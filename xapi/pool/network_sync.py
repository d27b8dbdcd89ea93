"""The coordinator's bonds, VLANs and tunnels copied onto a member's matching NICs, as xapi's
sync_networking does when a member starts (and so right after it joined): the member inherits the
pool's network set-up wherever it has the NICs for it.

* bonds: for each bond of the coordinator, the member's physical PIFs of the same devices become a
  bond on the same network with the same mode and properties (partial when the member lacks some
  devices; the member's PIF of the device whose MAC the coordinator's bond took goes first, so its
  bond takes that NIC's MAC); a member's bond on that network with other members is made again;
* VLANs: for each VLAN of the coordinator, unless the member has one with the same tag on the same
  network over a PIF on the same network, a VLAN on the member's PIF of the network under the
  coordinator's (nothing when it has none);
* tunnels: for each tunnel of the coordinator, unless the member has a tunnel access PIF on its
  network, a tunnel over the member's PIF on the network of the coordinator's transport PIF, with its
  protocol; a transport without an IP configuration leaves it unplugged (xapi keeps the rows when
  the plug fails).

Bonds go first (a VLAN or tunnel may sit on a bond's network). Each copy that fails is logged and the
others go on, as xapi's are. The rows are written through the same actions as the API calls.
"""
from __future__ import annotations

import logging

from xapi.actions import bond as bond_actions, tunnel as tunnel_actions, vlan as vlan_actions
from xapi.datamodel.errors import XapiError

log = logging.getLogger("xapi.pool.network_sync")


class _Request:
    """The context the copies run in on the coordinator, for the member at `peer`."""

    __slots__ = ("app", "peer", "local")

    def __init__(self, app, peer: str) -> None:
        self.app, self.peer, self.local = app, peer, False


def copy_from_coordinator(app, host: str) -> None:
    """Makes `host` (a member) carry the coordinator's bonds, then VLANs, then tunnels."""
    coordinator = app.host_ref
    if host == coordinator or host not in app.db.table("host"):
        return
    ctx = _Request(app, app.db.table("host").get_field(host, "address"))
    for copy in (_copy_bonds, _copy_vlans, _copy_tunnels):
        copy(ctx, coordinator, host)


def _pifs_of(db, host: str) -> dict[str, dict]:
    pifs = db.table("PIF")
    return {p: pifs.get(p) for p in pifs.find("host", host)}


def _attempt(what: str, fn, *args) -> None:
    try:
        fn(*args)
    except XapiError as e:
        log.warning("%s: %s", what, e.description)


# -- bonds -----------------------------------------------------------------------------------------
def _copy_bonds(ctx, coordinator: str, host: str) -> None:
    db = ctx.app.db
    bonds, pifs = db.table("Bond"), db.table("PIF")
    for bond in list(bonds.refs()):
        rec = bonds.get(bond)
        if rec["master"] in pifs and pifs.get_field(rec["master"], "host") == coordinator:
            _attempt(f"copying bond {bond} to host {host}", _copy_bond, ctx, host, rec)


def _copy_bond(ctx, host: str, rec: dict) -> None:
    db = ctx.app.db
    pifs = db.table("PIF")
    network = pifs.get_field(rec["master"], "network")
    slaves = [pifs.get(s) for s in rec["slaves"] if s in pifs]
    devices = [s["device"] for s in slaves]
    # the device the coordinator's bond took its MAC from, when exactly one member has it
    same_mac = [s["device"] for s in slaves if s["MAC"] == pifs.get_field(rec["master"], "MAC")]
    mine = _pifs_of(db, host)
    members = [p for p, r in mine.items() if r["device"] in devices and r["VLAN"] == -1]
    if len(same_mac) == 1:
        primary = [p for p in members if mine[p]["device"] == same_mac[0]]
        if len(primary) == 1:
            members = primary + [p for p in members if p != primary[0]]
    on_network = [p for p, r in mine.items() if r["network"] == network]
    if not on_network:
        if not members:
            log.warning("cannot copy bond on %s to host %s: it has none of %s", network, host, devices)
            return
        bond_actions.create(ctx, None, network, members, "", rec["mode"], dict(rec["properties"]))
        return
    existing = mine[on_network[0]]["bond_master_of"] if len(on_network) == 1 else []
    if len(existing) != 1:
        log.warning("cannot copy bond on %s to host %s: its PIF %s is on that network already",
                    network, host, on_network[0])
        return
    if set(db.table("Bond").get_field(existing[0], "slaves")) != set(members):
        bond_actions.destroy(ctx, None, existing[0])    # a partial bond, made again with the members there are
        bond_actions.create(ctx, None, network, members, "", rec["mode"], dict(rec["properties"]))


# -- VLANs -----------------------------------------------------------------------------------------
def _network_under(db, vlan_pif: dict):
    """The network of the PIF a VLAN PIF is tagged onto (None for a VLAN row gone astray)."""
    vlans, pifs = db.table("VLAN"), db.table("PIF")
    vlan = vlan_pif["VLAN_master_of"]
    if vlan not in vlans:
        return None
    tagged = vlans.get_field(vlan, "tagged_PIF")
    return pifs.get_field(tagged, "network") if tagged in pifs else None


def _copy_vlans(ctx, coordinator: str, host: str) -> None:
    db = ctx.app.db
    for ref, rec in _pifs_of(db, coordinator).items():
        if rec["VLAN"] != -1:
            _attempt(f"copying VLAN PIF {ref} to host {host}", _copy_vlan, ctx, host, rec)


def _copy_vlan(ctx, host: str, rec: dict) -> None:
    db = ctx.app.db
    under = _network_under(db, rec)
    if under is None:
        return
    mine = _pifs_of(db, host)
    if any(r["VLAN"] == rec["VLAN"] and r["network"] == rec["network"] and _network_under(db, r) == under
           for r in mine.values() if r["VLAN"] != -1):
        return
    base = [p for p, r in mine.items() if r["network"] == under]
    if len(base) == 1:                  # else: no PIF to tag (a host has one PIF per network at most)
        vlan_actions.create(ctx, None, base[0], rec["VLAN"], rec["network"])


# -- tunnels ---------------------------------------------------------------------------------------
def _copy_tunnels(ctx, coordinator: str, host: str) -> None:
    db = ctx.app.db
    tunnels = db.table("tunnel")
    for rec in _pifs_of(db, coordinator).values():
        for tunnel in rec["tunnel_access_PIF_of"][:1]:
            if tunnel in tunnels:
                _attempt(f"copying tunnel {tunnel} to host {host}", _copy_tunnel, ctx, host, rec,
                         tunnels.get(tunnel))


def _copy_tunnel(ctx, host: str, access: dict, tunnel: dict) -> None:
    db = ctx.app.db
    pifs = db.table("PIF")
    mine = _pifs_of(db, host)
    if any(r["tunnel_access_PIF_of"] and r["network"] == access["network"] for r in mine.values()):
        return
    if tunnel["transport_PIF"] not in pifs:
        return
    under = pifs.get_field(tunnel["transport_PIF"], "network")
    transport = [p for p, r in mine.items() if r["network"] == under]
    if len(transport) != 1:
        return
    try:
        tunnel_actions.create(ctx, None, transport[0], access["network"], tunnel["protocol"])
    except XapiError as e:
        if e.code != "TRANSPORT_PIF_NOT_CONFIGURED":
            raise
        # xapi's tunnel stays, unplugged, when the plug fails
        tunnel_actions.create_internal(db, transport[0], access["network"], host, tunnel["protocol"])
        log.warning("tunnel on %s copied to host %s unplugged: %s", access["network"], host, e.description)
