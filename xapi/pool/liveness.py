"""Members' heartbeats and host_metrics.live (xapi: db_gc's host heartbeat checks).

A member calls `host.heartbeat` on its coordinator every XAPI_HOST_HEARTBEAT_INTERVAL seconds (xapi's
host_heartbeat_interval, 30) with its free memory. The coordinator marks a host live when a beat
arrives and not live when none came for XAPI_HOST_ASSUMED_DEAD seconds (xapi's
host_assumed_dead_interval, 600), counted from when it became the coordinator. Its own host is live.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time

from xapi.aiotask import cancel_and_wait
from xapi.datamodel.errors import XapiError
from xapi.datamodel.types import datetime_now
from xapi.pool.internal import method

log = logging.getLogger("xapi.pool.liveness")

PAGE = 4096


def interval() -> float:
    return float(os.environ.get("XAPI_HOST_HEARTBEAT_INTERVAL", "30"))


def dead_after() -> float:
    return float(os.environ.get("XAPI_HOST_ASSUMED_DEAD", "600"))


def _set_metrics(app, host: str, values: dict) -> None:
    db = app.db
    hosts = db.table("host")
    if host not in hosts:
        return
    metrics = hosts.get_field(host, "metrics")
    table = db.table("host_metrics")
    if metrics not in table:
        return
    row = table.get(metrics)
    changed = {k: v for k, v in values.items() if row.get(k) != v}
    if changed:
        if "live" in changed:
            changed["last_updated"] = datetime_now()
        table.update(metrics, changed)
        app.hub.poke()


@method("host.heartbeat")
def heartbeat(app, host: str, memory_free: int | None = None) -> str:
    if not app.is_coordinator:
        raise XapiError("HOST_IS_SLAVE", app.coordinator_address)
    if host not in app.db.table("host"):
        raise XapiError("HANDLE_INVALID", "host", host)
    app.liveness.seen[host] = time.monotonic()
    values = {"live": True}
    if isinstance(memory_free, int):
        values["memory_free"] = memory_free
    _set_metrics(app, host, values)
    return app.host_ref


class Liveness:
    def __init__(self, app) -> None:
        self.app = app
        self.seen: dict[str, float] = {}
        self.since = time.monotonic()          # when this host last became the coordinator
        self.was_coordinator = app.is_coordinator
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="pool liveness")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                if self.app.is_coordinator:
                    self._check()
                else:
                    self.was_coordinator = False
                    await self._beat()
            except asyncio.CancelledError:
                raise
            except XapiError as e:
                log.debug("heartbeat: %s", e.description)
            except Exception:
                log.exception("liveness check failed")
            await asyncio.sleep(min(interval(), max(0.05, dead_after() / 4)) if self.app.is_coordinator
                                else interval())

    async def _beat(self) -> None:
        app = self.app
        info = app.hypervisor.physinfo()
        await app.pool.coordinator_peer().call("host.heartbeat", app.host_ref, info["free_pages"] * PAGE,
                                               timeout=max(5.0, interval()))

    def _check(self) -> None:
        app = self.app
        now = time.monotonic()
        if not self.was_coordinator:           # just became the coordinator: everyone gets a grace period
            self.was_coordinator = True
            self.since = now
            self.seen.clear()
        _set_metrics(app, app.host_ref, {"live": True})
        limit = dead_after()
        for host in app.db.table("host").refs():
            if host == app.host_ref:
                continue
            last = self.seen.get(host, self.since)
            if now - last > limit:
                _set_metrics(app, host, {"live": False})
