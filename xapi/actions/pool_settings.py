"""pool.set_ha_host_failures_to_tolerate and pool.sync_database, as xapi_pool.ml:

* the number of host failures to tolerate cannot be negative (INVALID_VALUE
  ["ha_host_failures_to_tolerate", value]); with no HA plan there is nothing more to check;
* sync_database writes the database to disk on every host of the pool now (xapi: Host.request_backup on
  each online host), not at the next periodic flush.
"""
from __future__ import annotations

import asyncio

from xapi.datamodel.errors import XapiError
from xapi.pool import internal


def _pool(db, ref) -> None:
    if type(ref) is not str or ref not in db.table("pool"):
        raise XapiError("HANDLE_INVALID", "pool", ref)


def set_ha_host_failures_to_tolerate(ctx, session, self, value):
    db = ctx.app.db
    _pool(db, self)
    value = int(value)
    if value < 0:
        raise XapiError("INVALID_VALUE", "ha_host_failures_to_tolerate", str(value))
    if int(db.table("pool").get_field(self, "ha_plan_exists_for")) > 0:
        # a plan exists only under HA, which this daemon does not run yet: nothing could check it
        raise XapiError("NOT_IMPLEMENTED", "set_ha_host_failures_to_tolerate with an HA plan")
    db.table("pool").set_field(self, "ha_host_failures_to_tolerate", value)
    return ""


@internal.method("pool_settings.flush_database")
async def _flush(app) -> bool:
    persister = getattr(app, "persister", None)
    return bool(persister is not None and await persister.flush_now())


async def sync_database(ctx, session):
    app = ctx.app
    hosts = app.db.table("host")
    metrics = app.db.table("host_metrics")

    def live(h: str) -> bool:
        m = hosts.get_field(h, "metrics")
        return h == app.host_ref or (m in metrics and bool(metrics.get_field(m, "live")))

    await asyncio.gather(*(app.pool.call(h, "pool_settings.flush_database") for h in hosts.refs() if live(h)))
    return ""


__all__ = ["set_ha_host_failures_to_tolerate", "sync_database"]
