"""network.add_purpose, remove_purpose and set_default_locking_mode, as xapi_network.ml:

* a purpose is added once; "nbd" and "insecure_nbd" exclude each other across the whole pool
  (NETWORK_INCOMPATIBLE_PURPOSES [new, conflicting]); removing an absent purpose does nothing;
* the default locking mode cannot change while a VIF on the network is attached (VIF_IN_USE [network, vif]).
"""
from __future__ import annotations

from xapi.datamodel.errors import XapiError

# purpose -> the purposes no network of the pool may have alongside it
_EXCLUDES = {"nbd": ("insecure_nbd",), "insecure_nbd": ("nbd",)}


def _rec(db, ref) -> dict:
    try:
        return db.table("network").get(ref)
    except (KeyError, TypeError):
        raise XapiError("HANDLE_INVALID", "network", ref) from None


def add_purpose(ctx, session, self, value):
    db = ctx.app.db
    current = _rec(db, self)["purpose"]
    if value in current:
        return ""
    nets = db.table("network")
    for net in nets.refs():
        for suspect in nets.get_field(net, "purpose"):
            if suspect in _EXCLUDES.get(value, ()):
                raise XapiError("NETWORK_INCOMPATIBLE_PURPOSES", value, suspect)
    nets.set_field(self, "purpose", [value, *current])
    return ""


def remove_purpose(ctx, session, self, value):
    db = ctx.app.db
    current = _rec(db, self)["purpose"]
    if value in current:
        db.table("network").set_field(self, "purpose", [p for p in current if p != value])
    return ""


def set_default_locking_mode(ctx, session, network, value):
    db = ctx.app.db
    rec = _rec(db, network)
    vifs = db.table("VIF")
    for vif in rec["VIFs"]:
        if vif in vifs and vifs.get_field(vif, "currently_attached"):
            raise XapiError("VIF_IN_USE", network, vif)
    db.table("network").set_field(network, "default_locking_mode", value)
    return ""


__all__ = ["add_purpose", "remove_purpose", "set_default_locking_mode"]
