"""Pool-wide settings, as xapi_pool.ml makes them:

* the number of host failures to tolerate cannot be negative (INVALID_VALUE
  ["ha_host_failures_to_tolerate", value]); with no HA plan there is nothing more to check;
* sync_database writes the database to disk on every host of the pool now (xapi: Host.request_backup on
  each online host), not at the next periodic flush;
* disable_ssl_legacy sets every host's ssl_legacy false (host.set_ssl_legacy, the coordinator last);
  enable_ssl_legacy was removed from the API (MESSAGE_REMOVED);
* set_https_only runs host.set_https_only on every host;
* get_license_state: the lowest edition of the hosts and the earliest license expiry ("never" when no
  host's license_params has one); apply_edition runs host.apply_edition on every host;
* has_extension: true only when every host has it (each host asked where it runs);
* set_igmp_snooping_enabled: enabling needs the openvswitch backend on every host (OPENVSWITCH_NOT_ACTIVE);
* add_to/remove_from_guest_agent_config: the map, then the guest agent features it gives
  (Guest_agent_auto_update: enabled unless auto_update_enabled is false, its update_url) pushed to
  every host's xenopsd, which writes them under /guest_agent_features;
* rotate_secret (coordinator; HA_IS_ENABLED under HA): a new pool secret, taken by every member over
  its internal endpoint (CANNOT_CONTACT_HOST [host] for a member that is not live, before any change),
  then by the coordinator.
"""
from __future__ import annotations

import asyncio

from xapi.datamodel.errors import XapiError
from xapi.pool import internal, secret


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


def _live_hosts(app) -> list[str]:
    hosts = app.db.table("host")
    metrics = app.db.table("host_metrics")

    def live(h: str) -> bool:
        m = hosts.get_field(h, "metrics")
        return h == app.host_ref or (m in metrics and bool(metrics.get_field(m, "live")))
    return [h for h in hosts.refs() if live(h)]


def _coordinator_last(app) -> list[str]:
    hosts = app.db.table("host").refs()
    return sorted(hosts, key=lambda h: h == app.host_ref)


# -- TLS and plain HTTP ----------------------------------------------------------------------------
def enable_ssl_legacy(ctx, session, self):
    _pool(ctx.app.db, self)
    raise XapiError("MESSAGE_REMOVED")


def disable_ssl_legacy(ctx, session, self):
    from xapi.actions import host_settings
    _pool(ctx.app.db, self)
    for h in _coordinator_last(ctx.app):
        host_settings.set_ssl_legacy(ctx, session, h, False)
    return ""


async def set_https_only(ctx, session, self, value):
    from xapi.actions import host_settings
    _pool(ctx.app.db, self)
    for h in ctx.app.db.table("host").refs():
        await host_settings.set_https_only(ctx, session, h, value)
    return ""


# -- licensing -------------------------------------------------------------------------------------
def get_license_state(ctx, session, self):
    from xapi.actions import host_settings
    db = ctx.app.db
    _pool(db, self)
    hosts = [db.table("host").get(h) for h in db.table("host").refs()]
    rank = {e: i for i, e in enumerate(host_settings.EDITIONS)}
    editions = [h["edition"] for h in hosts]
    edition = min(editions, key=lambda e: rank.get(e, -1)) if editions else ""
    expiries = sorted(p["expiry"] for p in (h["license_params"] or {} for h in hosts) if p.get("expiry"))
    return {"edition": edition, "expiry": expiries[0] if expiries else "never"}


def apply_edition(ctx, session, self, edition):
    from xapi.actions import host_settings
    _pool(ctx.app.db, self)
    for h in ctx.app.db.table("host").refs():
        host_settings.apply_edition(ctx, session, h, edition, False)
    return ""


async def has_extension(ctx, session, self, name):
    """xapi_pool.ml: Host.has_extension on every host, each asked where it runs (a member over the
    pool's internal calls); true only if all have it."""
    from xapi.actions import host_plugins
    _pool(ctx.app.db, self)
    for h in ctx.app.db.table("host").refs():
        if not await host_plugins.has_extension(ctx, session, h, name):
            return False
    return True


# -- networking ------------------------------------------------------------------------------------
def set_igmp_snooping_enabled(ctx, session, self, value):
    db = ctx.app.db
    _pool(db, self)
    if value:
        for h in db.table("host").refs():
            if (db.table("host").get_field(h, "software_version") or {}).get("network_backend") != "openvswitch":
                raise XapiError("OPENVSWITCH_NOT_ACTIVE")
    db.table("pool").set_field(self, "igmp_snooping_enabled", bool(value))
    return ""


# -- guest agent configuration ---------------------------------------------------------------------
def guest_agent_features(config: dict) -> dict:
    """Xapi_xenops.Guest_agent_features.of_config: the auto-update feature and its parameters."""
    enabled = config.get("auto_update_enabled", "true").lower() != "false"
    params = {"update_url": config["auto_update_url"]} if "auto_update_url" in config else {}
    return {"Guest_agent_auto_update": {"licensed": True, "enabled": enabled, "parameters": params}}


async def _apply_guest_agent_config(app, pool: str) -> None:
    features = guest_agent_features(dict(app.db.table("pool").get_field(pool, "guest_agent_config") or {}))
    await asyncio.gather(*(app.pool.xenops(h).call("HOST.update_guest_agent_features", features)
                           for h in _live_hosts(app)))


async def add_to_guest_agent_config(ctx, session, self, key, value):
    db = ctx.app.db
    _pool(db, self)
    config = dict(db.table("pool").get_field(self, "guest_agent_config") or {})
    db.table("pool").set_field(self, "guest_agent_config", {**config, key: value})
    await _apply_guest_agent_config(ctx.app, self)
    return ""


async def remove_from_guest_agent_config(ctx, session, self, key):
    db = ctx.app.db
    _pool(db, self)
    config = dict(db.table("pool").get_field(self, "guest_agent_config") or {})
    config.pop(key, None)
    db.table("pool").set_field(self, "guest_agent_config", config)
    await _apply_guest_agent_config(ctx.app, self)
    return ""


# -- the pool secret -------------------------------------------------------------------------------
@internal.method("pool_settings.take_secret")
def _take_secret(app, value: str) -> str:
    secret.store(app.config.data_dir, value)
    app.pool_secret = value
    return ""


async def rotate_secret(ctx, session):
    app = ctx.app
    db = app.db
    pools = db.table("pool").refs()
    if any(db.table("pool").get_field(p, "ha_enabled") for p in pools):
        raise XapiError("HA_IS_ENABLED")
    members = [h for h in db.table("host").refs() if h != app.host_ref]
    live = set(_live_hosts(app))
    for h in members:
        if h not in live:
            raise XapiError("CANNOT_CONTACT_HOST", h)
    value = secret.new()
    for h in members:
        await app.pool.call(h, "pool_settings.take_secret", value)
    _take_secret(app, value)
    return ""


__all__ = ["set_ha_host_failures_to_tolerate", "sync_database", "enable_ssl_legacy", "disable_ssl_legacy",
           "set_https_only", "get_license_state", "apply_edition", "has_extension", "set_igmp_snooping_enabled",
           "add_to_guest_agent_config", "remove_from_guest_agent_config", "rotate_secret"]
