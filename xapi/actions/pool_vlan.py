"""pool.create_VLAN and pool.create_VLAN_from_PIF: one VLAN on every host, as xapi_pool.ml makes them.

create_VLAN(device, network, VLAN): PIF.create_VLAN on each host (the host's untagged PIF of that
device); create_VLAN_from_PIF(pif, network, VLAN): VLAN.create on each PIF of `pif`'s network whose host
is live (so it follows bonds across the pool). Either way the first error undoes what was made
(best effort) and is raised; the new untagged PIFs are then plugged, best effort, and returned.
"""
from __future__ import annotations

import logging

from xapi.actions import pif as pif_actions, pif_links as links, vlan as vlan_actions
from xapi.datamodel.errors import XapiError

log = logging.getLogger("xapi.pool")


def _plug_all(ctx, session, pifs: list) -> None:
    for p in pifs:
        try:
            pif_actions.plug(ctx, session, p)
        except XapiError as e:                   # CA-22381: left unplugged, nothing undone
            log.warning("plugging VLAN PIF %s: %s", p, e.description)


def create_VLAN(ctx, session, device, network, VLAN):  # noqa: N802,N803 - the API's names
    db = ctx.app.db
    links.record(db, "network", network)
    created: list[str] = []
    try:
        for host in db.table("host").refs():
            created.append(pif_actions.create_VLAN(ctx, session, device, network, host, VLAN))
    except XapiError:
        for p in created:
            try:
                pif_actions.destroy(ctx, session, p)
            except XapiError as e:
                log.warning("undoing pool.create_VLAN: PIF %s: %s", p, e.description)
        raise
    _plug_all(ctx, session, created)
    return created


def _live(db, host: str) -> bool:
    hosts, metrics = db.table("host"), db.table("host_metrics")
    if host not in hosts:
        return False
    m = hosts.get_field(host, "metrics")
    return m in metrics and bool(metrics.get_field(m, "live"))


def create_VLAN_from_PIF(ctx, session, pif, network, VLAN):  # noqa: N802,N803 - the API's names
    db = ctx.app.db
    rec = links.record(db, "PIF", pif)
    links.record(db, "network", network)
    pifs = db.table("PIF")
    nets = db.table("network")
    base = [p for p in nets.get_field(rec["network"], "PIFs") if p in pifs] if rec["network"] in nets else [pif]
    created: list[str] = []
    try:
        for p in base:
            if _live(db, pifs.get_field(p, "host")):
                created.append(vlan_actions.create(ctx, session, p, VLAN, network))
    except XapiError:
        for v in created:
            try:
                vlan_actions.destroy(ctx, session, v)
            except XapiError as e:
                log.warning("undoing pool.create_VLAN_from_PIF: VLAN %s: %s", v, e.description)
        raise
    vlans = db.table("VLAN")
    untagged = [vlans.get_field(v, "untagged_PIF") for v in created]
    _plug_all(ctx, session, untagged)
    return untagged


POOL_MESSAGES = {"create_VLAN": create_VLAN, "create_VLAN_from_PIF": create_VLAN_from_PIF}
