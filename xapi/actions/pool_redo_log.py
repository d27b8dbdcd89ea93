"""pool.enable_redo_log(sr) and pool.disable_redo_log(), as xapi_pool.ml.

enable: reuses a redo_log VDI of the SR at least Redo_log.minimum_vdi_size (256 MiB), else creates
"Metadata redo-log" (sharable, sm_config type=raw); a failure there is CANNOT_ENABLE_REDO_LOG
"failed to create a VDI ...". Every host must reach the VDI (xapi attaches it statically on each host:
here a plugged PBD of a file SR on every host), else CANNOT_ENABLE_REDO_LOG "failed to make VDI static.".
Then pool.redo_log_vdi and redo_log_enabled are set and, unless HA is on (HA's own log is in use), the
coordinator's log moves there (xapi.pool.redolog, in a folder beside the VDI's file); members open it
when promoted (xapi.pool.transitions). No error when it is already on: xapi switches to the SR given.

disable: redo_log_enabled false; unless HA is on, the log stops and its folder goes. As xapi, the VDI
and pool.redo_log_vdi stay (a later enable reuses the VDI). XAPI_REDO_LOG, when set, stays in force.
"""
from __future__ import annotations

import asyncio
import logging
import shutil

from xapi.actions import vdi as vdi_actions
from xapi.datamodel.errors import XapiError
from xapi.pool import redolog, sr_folder
from xapi.sm import rows

log = logging.getLogger("xapi.pool")

_NO_VDI = "failed to create a VDI for the redo log on the SR with the given UUID."
_NOT_STATIC = "failed to make VDI static."


def _pool(db) -> str:
    return db.table("pool").refs()[0]


async def _find_or_create(ctx, session, sr) -> str:
    vdis = ctx.app.db.table("VDI")
    for v in ctx.app.db.table("SR").get_field(sr, "VDIs"):
        if v in vdis and vdis.get_field(v, "type") == "redo_log" and vdis.get_field(v, "virtual_size") >= redolog.VDI_SIZE:
            log.info("re-using existing redo-log VDI %s", vdis.get_field(v, "uuid"))
            return v
    try:
        return await vdi_actions.create(ctx, session, {
            "name_label": "Metadata redo-log",
            "name_description": "Used when HA is disabled, while extra security is still desired",
            "SR": sr, "virtual_size": redolog.VDI_SIZE, "type": "redo_log", "sharable": True, "read_only": False,
            "other_config": {}, "xenstore_data": {}, "sm_config": {"type": "raw"}, "tags": []})
    except XapiError as e:
        log.warning("enable_redo_log: creating the VDI failed: %s %s", e.code, e.params)
        raise XapiError("CANNOT_ENABLE_REDO_LOG", _NO_VDI) from None


def _assert_every_host_reaches(app, sr) -> None:
    db = app.db
    pbds = db.table("PBD")
    plugged = {pbds.get_field(p, "host") for p in db.table("SR").get_field(sr, "PBDs")
               if p in pbds and pbds.get_field(p, "currently_attached")}
    if not set(db.table("host").refs()) <= plugged or sr_folder.here(app, sr) is None:
        raise XapiError("CANNOT_ENABLE_REDO_LOG", _NOT_STATIC)


async def enable_redo_log(ctx, session, sr):
    app = ctx.app
    db = app.db
    rows.check(db, "SR", sr)
    vdi = await _find_or_create(ctx, session, sr)
    _assert_every_host_reaches(app, sr)
    pools = db.table("pool")
    pool = _pool(db)
    pools.update(pool, {"redo_log_vdi": vdi, "redo_log_enabled": True})
    if not pools.get_field(pool, "ha_enabled"):
        await redolog.switch(app, redolog.wanted(app))
    log.info("the redo log is now enabled on VDI %s", db.table("VDI").get_field(vdi, "uuid"))
    return ""


async def disable_redo_log(ctx, session):
    app = ctx.app
    db = app.db
    pools = db.table("pool")
    pool = _pool(db)
    folder = redolog.folder_of_pool(app)
    pools.set_field(pool, "redo_log_enabled", False)
    if not pools.get_field(pool, "ha_enabled"):
        await redolog.switch(app, redolog.wanted(app))
        if folder is not None and folder != redolog.configured():
            # the log of a term that is over
            await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, folder, True)
    log.info("the redo log is now disabled")
    return ""


POOL_MESSAGES = {"enable_redo_log": enable_redo_log, "disable_redo_log": disable_redo_log}
