"""SR.*: create, introduce, forget, destroy, scan, probe, update, get_supported_types, and the setters
xapi implements itself (xapi_sr.ml).

SR.create makes the record first (so the driver can read it), then the PBDs (one per host for a
shared SR, one on the given host otherwise), runs sr_create, and plugs the PBDs; when sr_create
fails the records go again. SR.destroy needs every PBD unplugged (SR_HAS_PBD), attaches the SR,
runs sr_delete (SR_NOT_EMPTY while VDIs remain), detaches, and removes the SR, its PBDs and VDIs.
The drivers write the VDI records and the SR's sizes themselves (xapi.sm).
"""
from __future__ import annotations

import logging
import re

from xapi.datamodel.errors import XapiError
from xapi.db.schema import NULL_REF, new_uuid
from xapi.sm import gc_service, rows
from xapi.sm.operations import locked
from xapi.sm.exec import Call, NotImplementedInBackend

log = logging.getLogger("xapi.sr")

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _sr(ctx, sr) -> dict:
    return rows.check(ctx.app.db, "SR", sr)


def _introduce(app, uuid, name_label, name_description, type, content_type, shared, sm_config) -> str:
    ref = rows.add(app.db, "SR", uuid=uuid, name_label=name_label, name_description=name_description,
                   type=type.lower(), content_type=content_type, shared=shared, sm_config=dict(sm_config),
                   physical_size=-1, physical_utilisation=-1, virtual_allocation=0, other_config={})
    return ref


def introduce(ctx, session, uuid, name_label, name_description, type, content_type, shared, sm_config):
    app = ctx.app
    uuid = uuid or new_uuid()
    if not _UUID_RE.match(uuid):
        raise XapiError("UUID_INVALID", "SR", uuid)
    if app.db.table("SR").find("uuid", uuid):
        raise XapiError("SR_UUID_EXISTS", uuid)
    ref = _introduce(app, uuid, name_label, name_description, type, content_type, shared, sm_config)
    rows.refresh_sr(app, ref)
    return ref


def make(ctx, session, host, device_config, physical_size, name_label, name_description, type, content_type,
         sm_config):
    raise XapiError("MESSAGE_DEPRECATED")


async def create(ctx, session, host, device_config, physical_size, name_label, name_description, type,
                 content_type, shared, sm_config):
    app = ctx.app
    storage = app.storage
    rows.check(app.db, "host", host)
    await storage.ready()
    sr_type = type.lower()
    await storage.driver(sr_type)             # SR_UNKNOWN_DRIVER, after one rescan of the folder
    sr = _introduce(app, new_uuid(), name_label, name_description, sr_type, content_type, shared, sm_config)
    hosts = app.db.table("host").refs() if shared else [host]
    pbds = [rows.add(app.db, "PBD", host=h, SR=sr, device_config=dict(device_config), other_config={},
                     currently_attached=False) for h in hosts]
    try:
        await storage.sr_command(sr, "sr_create", [str(physical_size)],
                                 device_config={**device_config, "SRmaster": "true"})
    except BaseException:
        for pbd in pbds:
            rows.remove(app.db, "PBD", pbd)
        for vdi in list(app.db.table("SR").get_field(sr, "VDIs")):
            rows.destroy_vdi_row(app.db, vdi)
        rows.remove(app.db, "SR", sr)
        raise
    for pbd in pbds:
        if app.db.table("PBD").get_field(pbd, "host") != app.host_ref:
            continue                          # another member plugs its own (with the pool)
        try:
            await storage.plug(pbd)
        except XapiError as e:
            log.warning("could not plug PBD %s: %s", pbd, e.args)   # as xapi: the SR stays, unplugged
    rows.refresh_sr_and_vdis(app, sr)
    return sr


def _attached_pbds(db, sr) -> list[str]:
    pbds = db.table("PBD")
    return [p for p in db.table("SR").get_field(sr, "PBDs") if p in pbds and pbds.get_field(p, "currently_attached")]


@locked("forget", target=lambda app, sr: (sr, None))
async def forget(ctx, session, sr):
    app = ctx.app
    _sr(ctx, sr)
    if _attached_pbds(app.db, sr):
        raise XapiError("SR_HAS_PBD", sr)
    _forget_rows(app.db, sr)
    return ""


def _forget_rows(db, sr) -> None:
    for pbd in list(db.table("SR").get_field(sr, "PBDs")):
        rows.remove(db, "PBD", pbd)
    for vdi in list(db.table("VDI").find("SR", sr)):
        rows.destroy_vdi_row(db, vdi)
    rows.remove(db, "SR", sr)
    for t, fields in (("pool", ("default_SR", "suspend_image_SR", "crash_dump_SR")),
                      ("host", ("suspend_image_sr", "crash_dump_sr", "local_cache_sr"))):
        table = db.table(t)
        for ref in table.refs():
            for f in fields:
                if table.get_field(ref, f) == sr:
                    table.set_field(ref, f, NULL_REF)


@locked("destroy", target=lambda app, sr: (sr, None))
async def destroy(ctx, session, sr):
    app = ctx.app
    storage = app.storage
    rec = _sr(ctx, sr)
    if _attached_pbds(app.db, sr):
        raise XapiError("SR_HAS_PBD", sr)
    if rec["other_config"].get("indestructible") == "true":
        raise XapiError("SR_INDESTRUCTIBLE", sr)
    await storage.ready()
    pbd = storage.my_pbd(sr)
    if pbd is None:
        raise XapiError("SR_HAS_NO_PBDS", sr)
    async with storage.lock(f"sr/{sr}"):
        dc = storage.device_config(sr, pbd)
        await storage.sr_command(sr, "sr_attach", device_config=dc)
        try:
            await storage.sr_command(sr, "sr_delete", device_config=dc)
        except BaseException:
            try:
                await storage.sr_command(sr, "sr_detach", device_config=dc)
            except XapiError:
                pass
            raise
        await storage.sr_command(sr, "sr_detach", device_config=dc)
        _forget_rows(app.db, sr)
    return ""


# marked as message_forwarding.ml does (xapi.sm.operations)
@locked("scan", target=lambda app, sr: (sr, None))
async def scan(ctx, session, sr):
    app = ctx.app
    _sr(ctx, sr)
    await app.storage.ready()
    await app.storage.scan(sr)
    rows.refresh_sr_and_vdis(app, sr)
    gc_service.kick(app, sr)
    return ""


@locked("update", target=lambda app, sr: (sr, None))
async def update(ctx, session, sr):
    app = ctx.app
    _sr(ctx, sr)
    await app.storage.ready()
    app.storage.assert_plugged(sr)
    if not app.storage.has_capability(sr, "SR_UPDATE"):
        raise XapiError("SR_OPERATION_NOT_SUPPORTED", sr)
    await app.storage.sr_command(sr, "sr_update")
    return ""


async def probe(ctx, session, host, device_config, type, sm_config):
    app = ctx.app
    rows.check(app.db, "host", host)
    storage = app.storage
    await storage.ready()
    sr_type = type.lower()
    await storage.driver(sr_type)
    call = Call("sr_probe", [], {**device_config, "SRmaster": "true"}, host_ref=app.host_ref,
                sr_sm_config=dict(sm_config))
    try:
        return await storage.executor.run(sr_type, call)
    except NotImplementedInBackend:
        raise XapiError("SR_OPERATION_NOT_SUPPORTED", NULL_REF) from None


async def get_supported_types(ctx, session):
    storage = ctx.app.storage
    await storage.ready()
    drivers = await storage.sync_drivers()
    return sorted(drivers)


# -- setters xapi implements by hand -------------------------------------------------------------
def _set(ctx, sr, field, value):
    _sr(ctx, sr)
    ctx.app.db.table("SR").set_field(sr, field, value)
    return ""


def set_name_label(ctx, session, sr, value):
    return _set(ctx, sr, "name_label", value)


def set_name_description(ctx, session, sr, value):
    return _set(ctx, sr, "name_description", value)


def set_shared(ctx, session, sr, value):
    rec = _sr(ctx, sr)
    if not value and len(rec["PBDs"]) > 1:
        raise XapiError("SR_HAS_MULTIPLE_PBDS", *rec["PBDs"])
    return _set(ctx, sr, "shared", value)


def set_physical_size(ctx, session, self, value):
    return _set(ctx, self, "physical_size", value)


def set_physical_utilisation(ctx, session, self, value):
    return _set(ctx, self, "physical_utilisation", value)


def set_virtual_allocation(ctx, session, self, value):
    return _set(ctx, self, "virtual_allocation", value)
