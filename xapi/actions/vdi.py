"""VDI.*: create, destroy, resize, snapshot, clone, copy, introduce, forget, update and the setters
xapi implements itself (xapi_vdi.ml, storage_smapiv1.ml).

The drivers make and remove the records (VDI.db_introduce / db_forget over the local socket) and
keep the sizes; xapi's part is the checks (VDI_IN_USE, VDI_NOT_MANAGED, SR_HAS_NO_PBDS,
SR_OPERATION_NOT_SUPPORTED, VDI_READONLY, SR_FULL, VDI_TOO_SMALL) and the fields of the higher-level
API: on snapshot and clone the new VDI takes the original's name, description, type, sharable,
other-config (with its content_id), xenstore-data, on-boot and allow-caching; a snapshot gets
is_a_snapshot, snapshot_of (and the original's `snapshots`) and snapshot_time.

VDI.copy makes the destination (or writes into `into_vdi`), attaches both through the access layer
on a `copy/...` datapath, and copies the bytes in a bounded thread pool (xapi.sm.copy).
"""
from __future__ import annotations

import logging
import re
import uuid as _uuid

from xapi import datamodel as dm
from xapi.datamodel.errors import XapiError
from xapi.datamodel.types import datetime_now
from xapi.db.schema import NULL_REF, new_uuid
from xapi.dispatch.convert import converter
from xapi.sm import copy as sm_copy, gc_service, rows
from xapi.sm.operations import locked

log = logging.getLogger("xapi.vdi")

NEVER = "19700101T00:00:00Z"
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _vdi(ctx, vdi) -> dict:
    return rows.check(ctx.app.db, "VDI", vdi)


def _managed(vdi, rec) -> None:
    if not rec["managed"]:
        raise XapiError("VDI_NOT_MANAGED", vdi)


def _capability(app, sr, capability) -> None:
    if not app.storage.has_capability(sr, capability):
        raise XapiError("SR_OPERATION_NOT_SUPPORTED", sr)


def _active(app, vdi, rec) -> bool:
    """As xapi's destroy: a VBD attached or reserved (ours show a plug under way by an operation in
    progress) holds the VDI; other VBDs go with it (rows.destroy_vdi_row)."""
    vbds = app.db.table("VBD")
    for v in rec["VBDs"]:
        if v in vbds:
            r = vbds.get(v)
            if r["currently_attached"] or r.get("reserved") or r["current_operations"]:
                return True
    return app.storage.access.in_use(rec["uuid"])


async def _not_in_use(app, vdi, rec, op) -> None:
    # an export that sent its last byte may still be releasing the VDI: waited for, not refused
    await app.storage.access.wait_released(rec["uuid"])
    if _active(app, vdi, rec):
        raise XapiError("VDI_IN_USE", vdi, op)


def _by_uuid(app, result) -> str:
    uuid = result.get("uuid") if isinstance(result, dict) else None
    refs = app.db.table("VDI").find("uuid", uuid) if uuid else []
    if not refs:
        raise XapiError("INTERNAL_ERROR", f"the SM backend returned no VDI record ({result!r})")
    return refs[0]


def _free(app, sr) -> int | None:
    rec = app.db.table("SR").get(sr)
    if rec["physical_size"] < 0 or rec["physical_utilisation"] < 0:
        return None
    return max(0, rec["physical_size"] - rec["physical_utilisation"])


def _assert_fits(app, sr, needed: int, *, thin_ok: bool) -> None:
    """SR_FULL [requested, maximum] when `needed` bytes cannot be stored (thin SRs provision later,
    so only real data counts for them)."""
    if thin_ok and app.storage.has_capability(sr, "THIN_PROVISIONING"):
        return
    free = _free(app, sr)
    if free is not None and needed > free:
        raise XapiError("SR_FULL", needed, free)


# -- create / destroy ----------------------------------------------------------------------------
_CTOR = tuple((name, f, converter(f.type, name)) for name, f in dm.CLASSES["VDI"].fields.items()
              if f.qualifier in ("RW", "RO/constructor"))


def _record_fields(record: dict) -> dict:
    out = {}
    for name, f, conv in _CTOR:
        if name in record:
            out[name] = conv(record[name])
        elif f.default is not None:
            out[name] = f.initial()
        else:
            raise XapiError("INTERNAL_ERROR", f'Server_helpers.Dispatcher_FieldNotFound("{name}")')
    return out


# each marks the SR and/or the VDI as message_forwarding.ml does (xapi.sm.operations)
@locked("vdi_create", target=lambda app, args: (args.get("SR") if isinstance(args, dict) else None, None))
async def create(ctx, session, args):
    app = ctx.app
    f = _record_fields(args)
    sr = f["SR"]
    rows.check(app.db, "SR", sr)
    await app.storage.ready()
    app.storage.assert_plugged(sr)
    _capability(app, sr, "VDI_CREATE")
    _assert_fits(app, sr, f["virtual_size"], thin_ok=True)
    async with gc_service.sr_lock(app.storage, sr):
        result = await app.storage.sr_command(
            sr, "vdi_create",
            [str(f["virtual_size"]), f["name_label"], f["name_description"], NULL_REF, "false", NEVER, "",
             "true" if f["read_only"] else "false"],
            vdi_sm_config=f["sm_config"], vdi_type=f["type"])
    ref = _by_uuid(app, result)
    app.db.table("VDI").update(ref, {"other_config": f["other_config"], "xenstore_data": f["xenstore_data"],
                                     "sharable": f["sharable"], "tags": f["tags"], "type": f["type"]})
    rows.refresh_vdi(app, ref)
    rows.refresh_sr(app, sr)
    return ref


@locked("vdi_destroy", "destroy")
async def destroy(ctx, session, self):
    app = ctx.app
    rec = _vdi(ctx, self)
    sr = rec["SR"]
    await app.storage.ready()
    app.storage.assert_plugged(sr)
    _managed(self, rec)
    if app.db.table("SR").get_field(sr, "type") == "udev":
        raise XapiError("VDI_IS_A_PHYSICAL_DEVICE", self)
    _capability(app, sr, "VDI_DELETE")
    await _not_in_use(app, self, rec, "destroy")
    async with app.storage.lock(f"vdi/{rec['uuid']}"), gc_service.sr_lock(app.storage, sr):
        await app.storage.vdi_command(self, "vdi_delete")
        rows.destroy_vdi_row(app.db, self)
    rows.refresh_sr_and_vdis(app, sr)
    gc_service.kick(app, sr)
    return ""


@locked(None, "forget")
def forget(ctx, session, vdi):
    app = ctx.app
    rec = _vdi(ctx, vdi)
    rows.destroy_vdi_row(app.db, vdi)
    if rec["SR"] in app.db.table("SR"):
        rows.refresh_sr(app, rec["SR"])
    return ""


# -- introduce -----------------------------------------------------------------------------------
def db_introduce(ctx, session, uuid, name_label, name_description, SR, type, sharable, read_only, other_config,
                 location, xenstore_data, sm_config, managed, virtual_size, physical_utilisation,
                 metadata_of_pool, is_a_snapshot, snapshot_time, snapshot_of, cbt_enabled=False):
    """The record only (xapi's introduce_dbonly): LOCATION_NOT_UNIQUE, UUID_INVALID."""
    app = ctx.app
    db = app.db
    rows.check(db, "SR", SR)
    vdis = db.table("VDI")
    for v in db.table("SR").get_field(SR, "VDIs"):
        if v in vdis and vdis.get_field(v, "location") == location:
            raise XapiError("LOCATION_NOT_UNIQUE", SR, location)
    if not _UUID_RE.match(uuid):
        raise XapiError("UUID_INVALID", "VDI", uuid)
    if vdis.find("uuid", uuid):
        raise XapiError("UUID_INVALID", "VDI", uuid)
    if snapshot_of != NULL_REF and snapshot_of not in vdis:
        snapshot_of = NULL_REF
    if metadata_of_pool != NULL_REF and metadata_of_pool not in db.table("pool"):
        metadata_of_pool = NULL_REF
    ref = rows.add(db, "VDI", uuid=uuid.lower(), name_label=name_label, name_description=name_description,
                   SR=SR, type=type, sharable=sharable, read_only=read_only, other_config=dict(other_config),
                   location=location, xenstore_data=dict(xenstore_data), sm_config=dict(sm_config),
                   managed=managed, virtual_size=virtual_size, physical_utilisation=physical_utilisation,
                   metadata_of_pool=metadata_of_pool, is_a_snapshot=is_a_snapshot, snapshot_time=snapshot_time,
                   snapshot_of=snapshot_of, cbt_enabled=cbt_enabled, on_boot="persist", missing=False,
                   storage_lock=False, parent=NULL_REF, allow_caching=False, metadata_latest=False)
    rows.refresh_vdi(app, ref)
    return ref


pool_introduce = db_introduce


def db_forget(ctx, session, vdi):
    _vdi(ctx, vdi)
    rows.destroy_vdi_row(ctx.app.db, vdi)
    return ""


@locked("vdi_introduce", target=lambda app, uuid, name_label, name_description, SR, *a, **k: (SR, None))
async def introduce(ctx, session, uuid, name_label, name_description, SR, type, sharable, read_only,
                    other_config, location, xenstore_data, sm_config, managed, virtual_size,
                    physical_utilisation, metadata_of_pool, is_a_snapshot, snapshot_time, snapshot_of):
    app = ctx.app
    rows.check(app.db, "SR", SR)
    if uuid and not _UUID_RE.match(uuid):
        raise XapiError("UUID_INVALID", "VDI", uuid)
    await app.storage.ready()
    app.storage.assert_plugged(SR)
    async with gc_service.sr_lock(app.storage, SR):
        result = await app.storage.sr_command(SR, "vdi_introduce", new_uuid=uuid or new_uuid(),
                                              vdi_location=location, vdi_sm_config=dict(sm_config))
    ref = _by_uuid(app, result)
    values = {"other_config": dict(other_config), "xenstore_data": dict(xenstore_data), "sharable": sharable,
              "type": type}
    if name_label:
        values["name_label"] = name_label
    if name_description:
        values["name_description"] = name_description
    app.db.table("VDI").update(ref, values)
    rows.refresh_vdi(app, ref)
    return ref


@locked(None, "update")
async def update(ctx, session, vdi):
    app = ctx.app
    rec = _vdi(ctx, vdi)
    await app.storage.ready()
    app.storage.assert_plugged(rec["SR"])
    _capability(app, rec["SR"], "VDI_UPDATE")
    async with gc_service.sr_lock(app.storage, rec["SR"]):
        await app.storage.vdi_command(vdi, "vdi_update")
    return ""


# -- resize --------------------------------------------------------------------------------------
@locked("vdi_resize", "resize")
async def resize(ctx, session, vdi, size):
    app = ctx.app
    rec = _vdi(ctx, vdi)
    sr = rec["SR"]
    await app.storage.ready()
    app.storage.assert_plugged(sr)
    _managed(vdi, rec)
    _capability(app, sr, "VDI_RESIZE")
    await _not_in_use(app, vdi, rec, "resize")
    if rec["read_only"]:
        raise XapiError("VDI_READONLY", vdi)
    _assert_fits(app, sr, max(0, size - rec["virtual_size"]), thin_ok=True)
    async with app.storage.lock(f"vdi/{rec['uuid']}"), gc_service.sr_lock(app.storage, sr):
        await app.storage.vdi_command(vdi, "vdi_resize", [str(size)])
    rows.refresh_sr(app, sr)
    return ""


async def resize_online(ctx, session, vdi, size):
    app = ctx.app
    rec = _vdi(ctx, vdi)
    await app.storage.ready()
    app.storage.assert_plugged(rec["SR"])
    _managed(vdi, rec)
    _capability(app, rec["SR"], "VDI_RESIZE_ONLINE")
    await app.storage.vdi_command(vdi, "vdi_resize_online", [str(size)])
    return ""


# -- snapshot / clone ----------------------------------------------------------------------------
async def _snapshot_or_clone(ctx, vdi, driver_params, *, snapshot: bool):
    app = ctx.app
    db = app.db
    rec = _vdi(ctx, vdi)
    sr = rec["SR"]
    await app.storage.ready()
    app.storage.assert_plugged(sr)
    _managed(vdi, rec)
    _capability(app, sr, "VDI_SNAPSHOT" if snapshot else "VDI_CLONE")
    if snapshot and rec["sharable"]:
        raise XapiError("VDI_IS_SHARABLE", vdi)
    if snapshot and rec["on_boot"] == "reset":
        raise XapiError("VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION")
    command = "vdi_snapshot" if snapshot else "vdi_clone"
    async with app.storage.lock(f"vdi/{rec['uuid']}"), gc_service.sr_lock(app.storage, sr):
        result = await app.storage.vdi_command(vdi, command, driver_params=dict(driver_params))
    new = _by_uuid(app, result)
    original = db.table("VDI").get(vdi)
    content_id = original["other_config"].get("content_id") or str(_uuid.uuid4())
    db.table("VDI").update(new, {
        "name_label": original["name_label"], "name_description": original["name_description"],
        "type": original["type"], "sharable": original["sharable"],
        "other_config": {**original["other_config"], "content_id": content_id},
        "xenstore_data": dict(original["xenstore_data"]), "on_boot": original["on_boot"],
        "allow_caching": original["allow_caching"], "snapshot_time": datetime_now(),
        "is_a_snapshot": snapshot, "cbt_enabled": snapshot and original["cbt_enabled"]})  # SM copies the CBT log
    rows.set_ref(db, "VDI", new, "snapshot_of", vdi if snapshot else NULL_REF)
    rows.refresh_sr_and_vdis(app, sr)
    gc_service.kick(app, sr)
    return new


@locked("vdi_snapshot", "snapshot")
async def snapshot(ctx, session, vdi, driver_params):
    return await _snapshot_or_clone(ctx, vdi, driver_params, snapshot=True)


@locked("vdi_clone", "clone")
async def clone(ctx, session, vdi, driver_params):
    return await _snapshot_or_clone(ctx, vdi, driver_params, snapshot=False)


# -- copy ----------------------------------------------------------------------------------------
def _chain_bytes(db, vdi: str) -> int:
    """The bytes a VDI's data can take: its file and those of the base copies under it."""
    vdis = db.table("VDI")
    rec = vdis.get(vdi)
    total, seen = max(0, rec["physical_utilisation"]), {rec["location"]}
    parent = rec["sm_config"].get("vhd-parent")
    while parent and parent not in seen:
        seen.add(parent)
        refs = [r for r in vdis.find("location", parent) if vdis.get_field(r, "SR") == rec["SR"]]
        if not refs:
            break
        p = vdis.get(refs[0])
        total += max(0, p["physical_utilisation"])
        parent = p["sm_config"].get("vhd-parent")
    if rec["sm_config"].get("vdi_type") != "vhd" and not rec["sm_config"].get("vhd-parent"):
        total = max(total, rec["virtual_size"])
    return total


@locked(None, "copy")
async def copy(ctx, session, vdi, sr, base_vdi=NULL_REF, into_vdi=NULL_REF):
    app = ctx.app
    db = app.db
    storage = app.storage
    src = _vdi(ctx, vdi)
    _managed(vdi, src)
    await storage.ready()
    into = into_vdi if into_vdi not in ("", NULL_REF) else None
    base = base_vdi if base_vdi not in ("", NULL_REF) else None
    if into is not None:
        dst_rec = rows.check(db, "VDI", into)
        if dst_rec["read_only"]:
            raise XapiError("VDI_READONLY", into)
        if dst_rec["virtual_size"] < src["virtual_size"]:
            raise XapiError("VDI_TOO_SMALL", into, src["virtual_size"])
        await _not_in_use(app, into, dst_rec, "copy")
        target_sr = dst_rec["SR"]
    else:
        rows.check(db, "SR", sr)
        target_sr = sr
    if base is not None:
        rows.check(db, "VDI", base)
    if src["type"] in ("ha_statefile", "redo_log"):
        raise XapiError("OPERATION_NOT_ALLOWED",
                        "VDI containing HA statefile or redo log cannot be copied (check the VDI's allowed operations).")
    storage.assert_plugged(src["SR"])
    storage.assert_plugged(target_sr)
    _assert_fits(app, target_sr, _chain_bytes(db, vdi), thin_ok=False)
    created = None
    if into is None:
        created = await create(ctx, session, {
            "name_label": src["name_label"], "name_description": src["name_description"], "SR": target_sr,
            "virtual_size": src["virtual_size"], "type": src["type"], "sharable": src["sharable"],
            "read_only": False, "other_config": dict(src["other_config"]),
            "xenstore_data": dict(src["xenstore_data"]), "sm_config": {}, "tags": []})
        db.table("VDI").update(created, {"allow_caching": src["allow_caching"], "on_boot": src["on_boot"]})
    dst = into or created
    dp = f"copy/{_uuid.uuid4()}"
    held: list[str] = []
    try:
        src_info = await _open(storage, dp, vdi, False, held)
        dst_info = await _open(storage, dp, dst, True, held)
        base_info = await _open(storage, dp, base, False, held) if base is not None else None
        await sm_copy.copy(src_info, dst_info, src["virtual_size"], base=base_info,
                           dst_is_empty=created is not None)
    except BaseException:
        await _close(storage, dp, held)
        if created is not None and not storage.access.closed and created in db.table("VDI"):
            try:
                await storage.vdi_command(created, "vdi_delete")
                rows.destroy_vdi_row(db, created)
            except Exception as e:  # noqa: BLE001 - the original error matters more
                log.warning("could not remove the copy %s after a failure: %s", created, e)
        raise
    await _close(storage, dp, held)
    rows.refresh_vdi(app, dst)
    rows.refresh_sr(app, target_sr)
    return dst


async def _open(storage, dp, vdi, rw, held) -> dict:
    await storage.access.attach(dp, vdi, rw)
    held.append(vdi)
    return await storage.access.activate(dp, vdi)


async def _close(storage, dp, held) -> None:
    for vdi in reversed(held):
        if storage.access.closed:
            return
        try:
            await storage.access.release(dp, vdi)
        except Exception as e:  # noqa: BLE001 - kept as leaked, retried at the next start
            log.error("releasing %s of %s failed: %s", dp, vdi, e)
            await storage.access.destroy_dp(dp, allow_leak=True)
    held.clear()


# -- setters xapi implements by hand -------------------------------------------------------------
def _set(ctx, vdi, field, value):
    _vdi(ctx, vdi)
    ctx.app.db.table("VDI").set_field(vdi, field, value)
    return ""


def set_name_label(ctx, session, self, value):
    return _set(ctx, self, "name_label", value)


def set_name_description(ctx, session, self, value):
    return _set(ctx, self, "name_description", value)


def set_read_only(ctx, session, self, value):
    return _set(ctx, self, "read_only", value)


def set_sharable(ctx, session, self, value):
    _set(ctx, self, "sharable", value)
    rows.refresh_vdi(ctx.app, self)
    return ""


@locked("vdi_set_on_boot", "set_on_boot")
def set_on_boot(ctx, session, self, value):
    rec = _vdi(ctx, self)
    _capability(ctx.app, rec["SR"], "VDI_RESET_ON_BOOT")
    ctx.app.storage.assert_plugged(rec["SR"])
    _set(ctx, self, "on_boot", value)
    rows.refresh_vdi(ctx.app, self)
    return ""


def set_allow_caching(ctx, session, self, value):
    return _set(ctx, self, "allow_caching", value)


# internal (drivers): fields the published API keeps read-only
def set_virtual_size(ctx, session, self, value):
    return _set(ctx, self, "virtual_size", value)


def set_physical_utilisation(ctx, session, self, value):
    return _set(ctx, self, "physical_utilisation", value)


def set_is_a_snapshot(ctx, session, self, value):
    return _set(ctx, self, "is_a_snapshot", value)


def set_snapshot_time(ctx, session, self, value):
    return _set(ctx, self, "snapshot_time", value)


def set_snapshot_of(ctx, session, self, value):
    _vdi(ctx, self)
    if value != NULL_REF:
        _vdi(ctx, value)
    rows.set_ref(ctx.app.db, "VDI", self, "snapshot_of", value)
    return ""


def set_managed(ctx, session, self, value):
    _set(ctx, self, "managed", value)
    rows.refresh_vdi(ctx.app, self)
    return ""


def set_missing(ctx, session, self, value):
    return _set(ctx, self, "missing", value)


def set_metadata_of_pool(ctx, session, self, value):
    return _set(ctx, self, "metadata_of_pool", value)


def set_metadata_latest(ctx, session, self, value):
    return _set(ctx, self, "metadata_latest", value)
