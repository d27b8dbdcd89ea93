"""tunnel.create and destroy, with xapi_tunnel.ml's checks in its order and its errors.

create(transport_PIF, network, protocol): the network must be managed (NETWORK_UNMANAGED); the
transport PIF managed (PIF_UNMANAGED), not a bond member (CANNOT_ADD_TUNNEL_TO_BOND_SLAVE); the network
not yet on its host (NETWORK_ALREADY_CONNECTED [host, pif]); every host on the openvswitch network
backend (OPENVSWITCH_NOT_ACTIVE: software_version network_backend); the transport not a tunnel's
access PIF itself (IS_TUNNEL_ACCESS_PIF). The access PIF is "tunnel<N>" (the first N free among the
host's tunnel access PIFs) on the transport's host, with a generated MAC, MTU -1 as xapi leaves it, the
transport's metrics; the tunnel's status is active=false; the access PIF is plugged, which needs the
transport configured (TRANSPORT_PIF_NOT_CONFIGURED; the new rows are then removed again).

destroy: the access PIF is unplugged (PIF.unplug's checks) and removed with the tunnel.
"""
from __future__ import annotations

import uuid

from xapi.actions import pif_links as links
from xapi.actions.vif import gen_mac
from xapi.datamodel.errors import XapiError
from xapi.db.schema import insert


def create_internal(db, transport_PIF: str, network: str, host: str, protocol: str = "gre"):  # noqa: N803
    """The tunnel row and its access PIF, linked both ways; returns (tunnel, access PIF)."""
    metrics = db.table("PIF").get_field(transport_PIF, "metrics")
    device = links.free_device(db, host, "tunnel", "tunnel_access_PIF_of")
    access = links.new_pif(db, device=device, network=network, host=host,
                           MAC=gen_mac(0, str(uuid.uuid4())), MTU=-1, VLAN=-1, metrics=metrics)
    tunnel = insert(db, "tunnel", access_PIF=access, transport_PIF=transport_PIF, status={"active": "false"},
                    protocol=protocol)
    links.link(db, "PIF", access, "tunnel_access_PIF_of", tunnel)
    links.link(db, "PIF", transport_PIF, "tunnel_transport_PIF_of", tunnel)
    return tunnel, access


def destroy_rows(db, tunnel: str) -> None:
    tunnels = db.table("tunnel")
    rec = tunnels.get(tunnel)
    links.unlink(db, "PIF", rec["transport_PIF"], "tunnel_transport_PIF_of", tunnel)
    tunnels.remove(tunnel)
    if rec["access_PIF"] in db.table("PIF"):
        db.table("PIF").remove(rec["access_PIF"])


def create(ctx, session, transport_PIF, network, protocol):  # noqa: N803 - the API's names
    from xapi.actions import pif as pif_actions
    db = ctx.app.db
    links.assert_network_managed(db, network)
    rec = links.record(db, "PIF", transport_PIF)
    links.assert_managed(rec, transport_PIF)
    kind = links.pif_type(db, rec)
    if kind is not None and kind[0] == links.BOND_SLAVE:
        raise XapiError("CANNOT_ADD_TUNNEL_TO_BOND_SLAVE", transport_PIF)
    host = rec["host"]
    links.assert_no_other_local_pifs(db, host, network)
    hosts = db.table("host")
    for h in hosts.refs():
        if hosts.get_field(h, "software_version").get("network_backend") != "openvswitch":
            raise XapiError("OPENVSWITCH_NOT_ACTIVE")
    if kind is not None and kind[0] == links.TUNNEL_ACCESS:
        raise XapiError("IS_TUNNEL_ACCESS_PIF", transport_PIF)
    tunnel, access = create_internal(db, transport_PIF, network, host, protocol)
    try:
        pif_actions.plug(ctx, session, access)
    except XapiError:                       # xapi keeps the unplugged tunnel; nothing half-made stays here
        destroy_rows(db, tunnel)
        raise
    return tunnel


def destroy(ctx, session, self):
    from xapi.actions import pif as pif_actions
    db = ctx.app.db
    rec = links.record(db, "tunnel", self)
    if links.exists(db, "PIF", rec["access_PIF"]):
        pif_actions.unplug(ctx, session, rec["access_PIF"])
    destroy_rows(db, self)
    return ""
