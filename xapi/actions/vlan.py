"""VLAN.create and destroy, with xapi_vlan.ml's checks in its order and its errors.

create(tagged_PIF, tag, network): the network must be managed (NETWORK_UNMANAGED), not yet reach the
PIF's host (NETWORK_ALREADY_CONNECTED [host, pif]); the tagged PIF managed (PIF_UNMANAGED), not a bond
member (CANNOT_ADD_VLAN_TO_BOND_SLAVE), not a VLAN itself (PIF_IS_VLAN), not a tunnel's access PIF
(IS_TUNNEL_ACCESS_PIF); 0 <= tag <= 4094 (VLAN_TAG_INVALID [tag]); one VLAN per tag on a PIF
(PIF_VLAN_EXISTS [device]). The new untagged PIF is on the tagged PIF's host with its device, MTU and
metrics, the dummy MAC fe:ff:ff:ff:ff:ff, VLAN = tag, and is plugged.

destroy: the untagged PIF goes (unplugged first, with PIF.unplug's checks), after
PIF_ALREADY_BONDED, a member's management interface and HA/redo-log checks; an orphaned VLAN row
(its untagged PIF gone) is simply removed.
"""
from __future__ import annotations

from xapi.actions import pif_links as links
from xapi.datamodel.errors import XapiError
from xapi.db.schema import insert

VLAN_MAC = "fe:ff:ff:ff:ff:ff"


def create_internal(db, host: str, tagged_PIF: str, tag: int, network: str, device: str):  # noqa: N803
    """The VLAN row and its untagged PIF, linked both ways; returns (vlan, untagged PIF)."""
    tagged = db.table("PIF").get(tagged_PIF)
    vlan = insert(db, "VLAN", tagged_PIF=tagged_PIF, tag=tag)
    untagged = links.new_pif(db, device=device, network=network, host=host, MAC=VLAN_MAC, MTU=tagged["MTU"],
                             VLAN=tag, metrics=tagged["metrics"], VLAN_master_of=vlan)
    db.table("VLAN").set_field(vlan, "untagged_PIF", untagged)
    links.link(db, "PIF", tagged_PIF, "VLAN_slave_of", vlan)
    return vlan, untagged


def create(ctx, session, tagged_PIF, tag, network):  # noqa: N803 - the API's names
    db = ctx.app.db
    links.assert_network_managed(db, network)
    rec = links.record(db, "PIF", tagged_PIF)
    host = rec["host"]
    links.assert_no_other_local_pifs(db, host, network)
    links.assert_managed(rec, tagged_PIF)
    kind = links.pif_type(db, rec)
    if kind is not None:
        if kind[0] == links.BOND_SLAVE:
            raise XapiError("CANNOT_ADD_VLAN_TO_BOND_SLAVE", tagged_PIF)
        if kind[0] == links.VLAN_MASTER:
            raise XapiError("PIF_IS_VLAN", tagged_PIF)
        if kind[0] == links.TUNNEL_ACCESS:
            raise XapiError("IS_TUNNEL_ACCESS_PIF", tagged_PIF)
    tag = int(tag)
    if not 0 <= tag <= 4094:                    # 4095 is reserved (802.1Q)
        raise XapiError("VLAN_TAG_INVALID", tag)
    vlans = db.table("VLAN")
    if any(vlans.get_field(v, "tag") == tag for v in vlans.find("tagged_PIF", tagged_PIF)):
        raise XapiError("PIF_VLAN_EXISTS", rec["device"])
    vlan, untagged = create_internal(db, host, tagged_PIF, tag, network, rec["device"])
    links.bring_up(db, untagged)
    return vlan


def destroy_rows(db, vlan: str, untagged: str) -> None:
    """The VLAN and its untagged PIF leave the database, and the tagged PIF's back link with them."""
    vlans = db.table("VLAN")
    links.unlink(db, "PIF", vlans.get_field(vlan, "tagged_PIF"), "VLAN_slave_of", vlan)
    vlans.remove(vlan)
    if untagged in db.table("PIF"):
        db.table("PIF").remove(untagged)


def destroy(ctx, session, self):
    from xapi.actions import pif as pif_actions
    app = ctx.app
    db = app.db
    rec = links.record(db, "VLAN", self)
    untagged = rec["untagged_PIF"]
    if not links.exists(db, "PIF", untagged):  # an orphaned record
        destroy_rows(db, self, untagged)
        return ""
    prec = db.table("PIF").get(untagged)
    links.assert_not_in_bond(db, prec, untagged)
    links.assert_not_member_management(app, prec, untagged)
    links.assert_no_protection(db, prec)
    if prec["VLAN"] < 0:
        raise XapiError("PIF_IS_PHYSICAL")
    pif_actions.unplug(ctx, session, untagged)
    destroy_rows(db, self, untagged)
    return ""
