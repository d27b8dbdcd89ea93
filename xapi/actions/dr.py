"""Disaster recovery's database replication, as xapi_sr.ml, xapi_vdi.ml and xapi_dr.ml.

- SR.assert_supports_database_replication(sr): a PBD on every host, each plugged (SR_NO_PBDS), and a
  driver with SR_METADATA (SR_OPERATION_NOT_SUPPORTED).
- SR.enable_database_replication(sr): reuses a metadata VDI of this pool of at least 256 MiB, else
  creates "Metadata for DR" (metadata_of_pool this pool, metadata_latest false); the coordinator writes
  the database into it now and after changes (xapi.pool.db_replication); with 8 VDIs replicated
  already (xapi's redo_log_max_instances, checked first as xapi does), NO_MORE_REDO_LOGS_ALLOWED.
- SR.disable_database_replication(sr): stops writing to this pool's metadata VDIs of the SR and
  destroys them.
- VDI.open_database(self): a metadata VDI only (VDI_INCOMPATIBLE_TYPE [vdi, type]); a read-only
  "disaster-recovery" session whose reads see the database in the VDI (xapi.foreign_db); a VDI whose
  database cannot be read gives COULD_NOT_IMPORT_DATABASE [reason].
- VDI.read_database_pool_uuid(self): the uuid of the pool whose database the VDI holds, "" when it
  holds none (xapi answers from its cache of metadata VDIs, "" when unknown).
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil

from xapi.actions import vdi as vdi_actions
from xapi.actions.sr_ha import assert_every_host_plugged
from xapi.datamodel.errors import XapiError
from xapi.db import persist
from xapi.pool import db_replication, redolog, sr_folder
from xapi.sm import rows

log = logging.getLogger("xapi.dr")

MAX_INSTANCES = 8               # xapi's redo_log_max_instances: metadata VDIs replicated at once


def assert_supports_database_replication(ctx, session, sr):
    app = ctx.app
    rows.check(app.db, "SR", sr)
    assert_every_host_plugged(app.db, sr)
    if not app.storage.has_capability(sr, "SR_METADATA"):
        raise XapiError("SR_OPERATION_NOT_SUPPORTED", sr)
    return ""


def _pool(db) -> str:
    return db.table("pool").refs()[0]


def _metadata_vdis(db, sr) -> list[str]:
    vdis = db.table("VDI")
    pool = _pool(db)
    return [v for v in db.table("SR").get_field(sr, "VDIs")
            if v in vdis and vdis.get_field(v, "type") == "metadata" and vdis.get_field(v, "metadata_of_pool") == pool]


async def enable_database_replication(ctx, session, sr):
    app = ctx.app
    db = app.db
    assert_supports_database_replication(ctx, session, sr)
    if len(db_replication.replicated_vdis(app)) >= MAX_INSTANCES:
        raise XapiError("NO_MORE_REDO_LOGS_ALLOWED")
    vdis = db.table("VDI")
    found = [v for v in _metadata_vdis(db, sr) if vdis.get_field(v, "virtual_size") >= redolog.VDI_SIZE]
    if found:
        vdi = found[0]
    else:
        vdi = await vdi_actions.create(ctx, session, {
            "name_label": "Metadata for DR", "name_description": "Used for disaster recovery",
            "SR": sr, "virtual_size": redolog.VDI_SIZE, "type": "metadata", "sharable": False,
            "read_only": False, "other_config": {}, "xenstore_data": {}, "sm_config": {"type": "raw"},
            "tags": []})
        vdis.update(vdi, {"metadata_latest": False, "metadata_of_pool": _pool(db)})
    await app.db_replication.write(vdi)
    return ""


async def disable_database_replication(ctx, session, sr):
    app = ctx.app
    rows.check(app.db, "SR", sr)
    for vdi in _metadata_vdis(app.db, sr):
        app.db_replication.forget(vdi)
        folder = sr_folder.beside(app, vdi, db_replication.SUFFIX)
        await vdi_actions.destroy(ctx, session, vdi)
        if folder is not None:
            await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, folder, True)
    return ""


def _database_path(ctx, vdi) -> str | None:
    rec = rows.check(ctx.app.db, "VDI", vdi)
    if rec["type"] != "metadata":
        raise XapiError("VDI_INCOMPATIBLE_TYPE", vdi, rec["type"])
    return db_replication.path_of(ctx.app, vdi)


async def _load(path: str):
    return await asyncio.get_running_loop().run_in_executor(None, persist.load, path)


async def open_database(ctx, session, self):
    path = _database_path(ctx, self)
    try:
        if path is None:
            raise FileNotFoundError(f"the SR of VDI {self} is not plugged on this host")
        if not os.path.exists(path):
            raise FileNotFoundError(f"no database in VDI {self}")
        db = await _load(path)
    except Exception as e:  # noqa: BLE001 - any unreadable database is xapi's COULD_NOT_IMPORT_DATABASE
        log.info("VDI.open_database %s: %s", self, e)
        raise XapiError("COULD_NOT_IMPORT_DATABASE", str(e)) from None
    return ctx.app.dispatcher.open(ctx.app, db)


async def read_database_pool_uuid(ctx, session, self):
    rows.check(ctx.app.db, "VDI", self)
    path = db_replication.path_of(ctx.app, self)
    if path is None or not os.path.exists(path):
        return ""
    try:
        db = await _load(path)
    except Exception as e:  # noqa: BLE001 - an unreadable database names no pool
        log.info("VDI.read_database_pool_uuid %s: %s", self, e)
        return ""
    pools = db.table("pool")
    refs = pools.refs()
    return pools.get_field(refs[0], "uuid") if refs else ""


SR_MESSAGES = {"assert_supports_database_replication": assert_supports_database_replication,
               "enable_database_replication": enable_database_replication,
               "disable_database_replication": disable_database_replication}
VDI_MESSAGES = {"open_database": open_database, "read_database_pool_uuid": read_database_pool_uuid}
