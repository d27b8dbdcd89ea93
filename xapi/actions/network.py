"""network: create with xapi's bridge naming, destroy with its checks (xapi_network.ml).

An empty bridge gets the first free ``xapi<N>`` name (a counter kept per daemon, skipping names
in use); a given one must be at most 15 characters, not start with a name the host uses for its
own devices, and not be in use already.  Destroy refuses while VIFs are attached
(NETWORK_CONTAINS_VIF) or PIFs exist (NETWORK_CONTAINS_PIF), and takes its unattached VIFs along.
"""
from __future__ import annotations

import itertools

from xapi.actions import records
from xapi.datamodel.errors import XapiError

_BLACKLIST = ("xen", "xapi", "vif", "tap", "eth")
_counter = itertools.count()


def _rec(db, ref) -> dict:
    try:
        return db.table("network").get(ref)
    except (KeyError, TypeError):
        raise XapiError("HANDLE_INVALID", "network", ref) from None


def _choose_bridge(bridges: set) -> str:
    while True:
        name = f"xapi{next(_counter)}"
        if name not in bridges:
            return name


def create(ctx, session, args):
    db = ctx.app.db
    args = records.unmarshal("network", args)
    nets = db.table("network")
    bridges = {nets.get_field(r, "bridge") for r in nets.refs()}
    bridge = args["bridge"]
    if bridge == "":
        bridge = _choose_bridge(bridges)
    else:
        if len(bridge) > 15 or bridge.startswith(_BLACKLIST):
            raise XapiError("INVALID_VALUE", "bridge", bridge)
        if bridge in bridges:
            raise XapiError("BRIDGE_NAME_EXISTS", bridge)
    from xapi import datamodel as dm
    from xapi.actions import accessors
    generic = accessors.accessor(dm.CLASSES["network"].messages["create"], db)
    ref = generic(ctx, session, {**args, "bridge": bridge})
    if int(nets.get_field(ref, "MTU")) <= 0:
        nets.set_field(ref, "MTU", 1500)
    return ref


def destroy(ctx, session, self):
    db = ctx.app.db
    rec = _rec(db, self)
    vifs = db.table("VIF")
    mine = [v for v in rec.get("VIFs") or [] if v in vifs]
    attached = [v for v in mine if vifs.get_field(v, "currently_attached")]
    if attached:
        raise XapiError("NETWORK_CONTAINS_VIF", *attached)
    pifs = [p for p in rec.get("PIFs") or [] if p in db.table("PIF")]
    if pifs:
        raise XapiError("NETWORK_CONTAINS_PIF", *pifs)
    if (rec.get("other_config") or {}).get("is_host_internal_management_network") == "true":
        raise XapiError("CANNOT_DESTROY_SYSTEM_NETWORK", self)
    for v in mine:                           # the unattached VIFs go with it, as in xapi
        metrics = vifs.get_field(v, "metrics")
        if metrics in db.table("VIF_metrics"):
            db.table("VIF_metrics").remove(metrics)
        vifs.remove(v)
    db.table("network").remove(self)
    return ""
from xapi.actions.network_extra import *  # noqa: E402,F401,F403 - purposes, default locking mode (network_extra.__all__)
