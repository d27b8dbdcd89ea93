"""SR and VDI allowed_operations and current_operations: xapi_sr_operations.ml's and xapi_vdi.ml's
valid operations, and message_forwarding.ml's with_sr_andor_vdi.

SR (first blocking rule wins): an op whose SM feature the driver lacks (SR_OPERATION_NOT_SUPPORTED
[sr]; vdi_clone needs none, xapi clones by itself); destroy and forget while a PBD is attached
(SR_HAS_PBD [sr]); destroy without PBDs (SR_HAS_NO_PBDS [sr]) or with managed VDIs (SR_NOT_EMPTY);
anything while another op runs (OTHER_OPERATION_IN_PROGRESS [SR, sr, op]): one at a time.

VDI: any running op but copy blocks the rest (OTHER_OPERATION_IN_PROGRESS [VDI, vdi]; a destroy may
join a mirror); resize needs an attached PBD (SR_HAS_NO_PBDS); an attached (or reserved) VBD or a
datapath in use lets only the live ops through (snapshot, resize_online, clone, mirror, the CBT ops;
copy unless attached read-write), else VDI_IN_USE [vdi, op]; a VBD with an operation under way blocks
(OTHER_OPERATION_IN_PROGRESS); then the SM feature, and the per-op rules (VDI_IS_A_PHYSICAL_DEVICE,
VDI_HAS_RRDS, VDI_IS_SHARABLE, VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION, OPERATION_NOT_ALLOWED
for a snapshot during a copy or a copy of an HA statefile / redo log). Unmanaged VDIs offer forget only.

`with_sr_andor_vdi` marks the SR and/or the VDI for the body, the SR first (released again when the VDI
refuses). Refused with OTHER_OPERATION_IN_PROGRESS, it waits and checks again as xapi's
retry_with_global_lock does with its standard policy (woken early when the object's op ends, 1-20 s
otherwise); every other error is raised at once. Operations of the caller's own task on the object
don't count, so an action may call another on the same object. PBD.unplug also waits while a VDI of
the SR has an operation under way (with_unplug_locks).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import uuid as uuidlib

from xapi.datamodel.errors import XapiError
from xapi.forwarding import locks

SR_OPS = ("scan", "destroy", "forget", "plug", "unplug", "update", "vdi_create", "vdi_introduce",
          "vdi_destroy", "vdi_resize", "vdi_clone", "vdi_snapshot", "vdi_mirror", "vdi_enable_cbt",
          "vdi_disable_cbt", "vdi_data_destroy", "vdi_list_changed_blocks", "vdi_set_on_boot", "pbd_create",
          "pbd_destroy")
# operation -> the SM feature it needs (xapi_sr_operations.sm_cap_table)
_SR_CAPS = {"vdi_create": "VDI_CREATE", "vdi_destroy": "VDI_DELETE", "vdi_resize": "VDI_RESIZE",
            "vdi_introduce": "VDI_INTRODUCE", "update": "SR_UPDATE", "vdi_snapshot": "VDI_SNAPSHOT",
            "vdi_mirror": "VDI_MIRROR", "vdi_enable_cbt": "VDI_CONFIG_CBT", "vdi_disable_cbt": "VDI_CONFIG_CBT",
            "vdi_data_destroy": "VDI_CONFIG_CBT", "vdi_list_changed_blocks": "VDI_CONFIG_CBT",
            "vdi_set_on_boot": "VDI_RESET_ON_BOOT"}

VDI_OPS = ("snapshot", "copy", "clone", "destroy", "resize", "update", "generate_config", "resize_online",
           "enable_cbt", "disable_cbt", "data_destroy", "list_changed_blocks", "set_on_boot", "mirror", "forget")
_VDI_CAPS = {"destroy": "VDI_DELETE", "resize": "VDI_RESIZE", "update": "VDI_UPDATE",
             "resize_online": "VDI_RESIZE_ONLINE", "generate_config": "VDI_GENERATE_CONFIG",
             "clone": "VDI_CLONE", "snapshot": "VDI_SNAPSHOT", "mirror": "VDI_MIRROR",
             "enable_cbt": "VDI_CONFIG_CBT", "disable_cbt": "VDI_CONFIG_CBT", "data_destroy": "VDI_CONFIG_CBT",
             "list_changed_blocks": "VDI_CONFIG_CBT", "set_on_boot": "VDI_RESET_ON_BOOT"}
_LIVE = ("snapshot", "resize_online", "blocked", "clone", "mirror", "enable_cbt", "disable_cbt", "data_destroy")
_HA_TYPES = ("ha_statefile", "redo_log")
# xapi's standard retry policy
_MIN_DELAY, _MAX_DELAY, _MAX_TOTAL_WAIT = 1.0, 20.0, 7200.0


def features(app, sr_type: str) -> dict[str, int]:
    storage = getattr(app, "storage", None)
    info = storage.executor.drivers.get(sr_type) if storage is not None else None
    if info is not None:
        return info.features
    sms = app.db.table("SM")
    for ref in sms.find("type", sr_type):
        return dict(sms.get_field(ref, "features"))
    return {}


def _others(rec: dict, own: str | None) -> list[str]:
    """The ops under way on the object, but the caller's own task's."""
    return [op for key, op in (rec.get("current_operations") or {}).items() if key != own]


def sr_valid_operations(app, sr: str, own: str | None = None) -> locks.Verdicts:
    db = app.db
    rec = db.table("SR").get(sr)
    table = locks.Verdicts(SR_OPS)
    feats = features(app, rec["type"])
    table.block(["SR_OPERATION_NOT_SUPPORTED", sr], [op for op, cap in _SR_CAPS.items() if cap not in feats])
    pbds = db.table("PBD")
    if any(pbds.get_field(p, "currently_attached") for p in rec["PBDs"] if p in pbds):
        table.block(["SR_HAS_PBD", sr], ("destroy", "forget"))
    if not rec["PBDs"]:
        table.block(["SR_HAS_NO_PBDS", sr], ("destroy",))
    vdis = db.table("VDI")
    if any(vdis.get_field(v, "managed") and vdis.get_field(v, "type") != "rrd" for v in rec["VDIs"] if v in vdis):
        table.block(["SR_NOT_EMPTY"], ("destroy",))
    running = _others(rec, own)
    if running:
        table.block(["OTHER_OPERATION_IN_PROGRESS", "SR", sr, running[0]], SR_OPS)
    return table


def vdi_valid_operations(app, vdi: str, own: str | None = None) -> locks.Verdicts:
    db = app.db
    rec = db.table("VDI").get(vdi)
    table = locks.Verdicts(VDI_OPS)
    running = _others(rec, own)
    busy = ["OTHER_OPERATION_IN_PROGRESS", "VDI", vdi]
    if any(op != "copy" for op in running):
        table.block(busy, [op for op in VDI_OPS if not (op == "destroy" and "mirror" in running)])
    srs = db.table("SR")
    if rec["SR"] not in srs:
        table.block(["HANDLE_INVALID", "SR", rec["SR"]], VDI_OPS)
        return table
    sr = srs.get(rec["SR"])
    pbds = db.table("PBD")
    if not any(pbds.get_field(p, "currently_attached") for p in sr["PBDs"] if p in pbds):
        table.block(["SR_HAS_NO_PBDS", rec["SR"]], ("resize",))
    vbds = db.table("VBD")
    mine = [vbds.get(v) for v in rec["VBDs"] if v in vbds]
    active = [v for v in mine if v["currently_attached"] or v.get("reserved")]
    rw = any(v["currently_attached"] and v["mode"] == "RW" for v in active)
    storage = getattr(app, "storage", None)
    if storage is not None and storage.access.in_use(rec["uuid"]):
        entry = storage.access.vdis.get(rec["uuid"]) or {}
        active.append(None)
        rw = rw or any(str(st).endswith("RW") for st in (entry.get("dps") or {}).values())
    if active:
        table.block(["VDI_IN_USE", vdi, "copy"], ("copy",) if rw else ())
        for op in VDI_OPS:
            if op not in _LIVE and op != "copy":
                table.block(["VDI_IN_USE", vdi, op], (op,))
    if any(v["current_operations"] for v in mine):
        table.block(busy, [op for op in VDI_OPS if op != "data_destroy"])
    feats = features(app, sr["type"])
    for op, cap in _VDI_CAPS.items():
        if cap not in feats:
            table.block(["SR_OPERATION_NOT_SUPPORTED", rec["SR"]], (op,))
    if not rec["managed"]:
        table.block(["VDI_NOT_MANAGED", vdi], [op for op in VDI_OPS if op != "forget"])
    if sr["type"] == "udev":
        table.block(["VDI_IS_A_PHYSICAL_DEVICE", vdi], ("destroy",))
    if sr.get("is_tools_sr"):
        table.block(["SR_OPERATION_NOT_SUPPORTED", rec["SR"]], ("destroy",))
    if rec["type"] == "rrd":
        table.block(["VDI_HAS_RRDS", vdi], ("destroy", "forget"))
    if rec["sharable"]:
        table.block(["VDI_IS_SHARABLE", vdi], ("snapshot",))
    if rec["on_boot"] == "reset":
        table.block(["VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION"], ("snapshot", "copy"))
    if "copy" in running:
        table.block(["OPERATION_NOT_ALLOWED", "Snapshot operation not allowed during copy."], ("snapshot",))
    if rec["type"] in _HA_TYPES:
        table.block(["OPERATION_NOT_ALLOWED", "VDI containing HA statefile or redo log cannot be copied "
                     "(check the VDI's allowed operations)."], ("copy",))
    return table


def refresh_sr(app, sr: str) -> None:
    if sr in app.db.table("SR"):
        locks.store_allowed(app.db, "SR", sr, sr_valid_operations(app, sr).allowed())


def refresh_vdi(app, vdi: str) -> None:
    if vdi in app.db.table("VDI"):
        locks.store_allowed(app.db, "VDI", vdi, vdi_valid_operations(app, vdi).allowed())


def _check(app, cls: str, ref: str, op: str, own: str | None) -> None:
    db = app.db
    if type(ref) is not str or ref not in db.table(cls):
        raise XapiError("HANDLE_INVALID", cls, ref)
    valid = sr_valid_operations if cls == "SR" else vdi_valid_operations
    valid(app, ref, own).check(op)


def _mark(app, cls: str, ref: str, op: str, own: str | None) -> str:
    """Checks and adds the entry; its key is the task's, or a fresh ref when the task already has one there."""
    _check(app, cls, ref, op, own)
    if cls == "SR" and op == "unplug":
        # message_forwarding.ml's with_unplug_locks: no VDI of the SR may have an operation under way
        vdis = app.db.table("VDI")
        for v in app.db.table("SR").get_field(ref, "VDIs"):
            if v in vdis and _others(vdis.get(v), own):
                raise XapiError("OTHER_OPERATION_IN_PROGRESS", "VDI", v)
    held = app.db.table(cls).get_field(ref, "current_operations") or {}
    key = own if own is not None and own not in held else f"OpaqueRef:{uuidlib.uuid4()}"
    refresh = (lambda db, r: refresh_sr(app, r)) if cls == "SR" else (lambda db, r: refresh_vdi(app, r))
    locks.hold(app, cls, ref, op, check=None, refresh=refresh, key=key)
    return key


def _unmark(app, cls: str, ref: str, key: str) -> None:
    refresh = (lambda db, r: refresh_sr(app, r)) if cls == "SR" else (lambda db, r: refresh_vdi(app, r))
    locks.release(app, cls, ref, key, refresh)


@contextlib.asynccontextmanager
async def with_sr_andor_vdi(app, *, sr: tuple[str, str] | None = None, vdi: tuple[str, str] | None = None):
    """Holds (sr ref, storage op) and/or (vdi ref, vdi op) for the body of the `async with`."""
    # outside a task: a key of this coroutine's own, so that its nested calls still see their entries
    own = locks.current_task(app) or f"OpaqueRef:{uuidlib.uuid5(uuidlib.NAMESPACE_OID, str(id(asyncio.current_task())))}"
    storage = getattr(app, "storage", None)
    vdis = app.db.table("VDI")
    if vdi is not None and storage is not None and type(vdi[0]) is str and vdi[0] in vdis:
        # an export that sent its last byte may still be releasing the VDI: waited for, not refused
        await storage.access.wait_released(vdis.get_field(vdi[0], "uuid"))
    waited = 0.0
    loop = asyncio.get_running_loop()
    while True:
        marked = []
        try:
            if sr is not None:
                marked.append(("SR", sr[0], _mark(app, "SR", sr[0], sr[1], own)))
            if vdi is not None:
                marked.append(("VDI", vdi[0], _mark(app, "VDI", vdi[0], vdi[1], own)))
            break
        except XapiError as e:
            for cls, ref, key in reversed(marked):
                _unmark(app, cls, ref, key)
            if e.code != "OTHER_OPERATION_IN_PROGRESS" or waited >= _MAX_TOTAL_WAIT:
                raise
            start = loop.time()
            await locks.wait_released(app, e.params[0], e.params[1],
                                      _MIN_DELAY + (_MAX_DELAY - _MIN_DELAY) * random.random())
            waited += loop.time() - start
        except BaseException:
            for cls, ref, key in reversed(marked):
                _unmark(app, cls, ref, key)
            raise
    try:
        yield
    finally:
        for cls, ref, key in reversed(marked):
            _unmark(app, cls, ref, key)


def locked(sr_op: str | None = None, vdi_op: str | None = None, *, target=None):
    """Decorates an action (ctx, session, ...) to run inside with_sr_andor_vdi. `target(app, *args)`
    gives (sr, vdi) from the action's arguments after ctx and session; by default the first is the
    VDI and the SR is its SR. A ref that isn't there is left to the action's own checks."""
    def wrap(fn):
        @functools.wraps(fn)
        async def run(ctx, session, *args, **kw):
            app = ctx.app
            db = app.db
            if target is not None:
                sr, vdi = target(app, *args, **kw)
            else:
                vdi = args[0] if args else next(iter(kw.values()), None)
                sr = db.table("VDI").get_field(vdi, "SR") if type(vdi) is str and vdi in db.table("VDI") else None
            s_op, v_op = sr_op, vdi_op
            if (s_op and (type(sr) is not str or sr not in db.table("SR"))) or \
                    (v_op and (type(vdi) is not str or vdi not in db.table("VDI"))):
                s_op = v_op = None          # the action raises HANDLE_INVALID (or its own error) itself
            async with with_sr_andor_vdi(app, sr=(sr, s_op) if s_op else None,
                                         vdi=(vdi, v_op) if v_op else None):
                result = fn(ctx, session, *args, **kw)
                return await result if asyncio.iscoroutine(result) else result
        return run
    return wrap


def sr_of(table: str, field: str = "SR", index: int = 0):
    """A `target` for `locked`: the SR of the `table` row given as argument `index`."""
    def target(app, *args, **kw):
        ref = args[index] if len(args) > index else None
        rows = app.db.table(table)
        return (rows.get_field(ref, field) if type(ref) is str and ref in rows else None), None
    return target
