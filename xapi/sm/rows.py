"""Database helpers the storage actions share: adding and removing rows (the database keeps the
relation sets), handle checks, and the allowed_operations xapi computes for SRs and VDIs."""
from __future__ import annotations

from xapi.datamodel.errors import XapiError
from xapi.db.schema import NULL_REF, insert


def check(db, cls: str, ref) -> dict:
    try:
        return db.table(cls).get(ref)
    except (KeyError, TypeError):
        raise XapiError("HANDLE_INVALID", cls, ref) from None


def add(db, cls: str, **values) -> str:
    return insert(db, cls, **values)


def remove(db, cls: str, ref: str) -> None:
    table = db.table(cls)
    if ref in table:
        table.remove(ref)


def set_ref(db, cls: str, ref: str, field: str, value: str) -> None:
    """Sets a reference field; the database moves the row between the referenced objects' sets."""
    table = db.table(cls)
    if table.get_field(ref, field) != value:
        table.set_field(ref, field, value)


def destroy_vdi_row(db, vdi: str) -> None:
    """The VDI's record and its VBDs' (xapi destroys them with the VDI); snapshots keep no link."""
    table = db.table("VDI")
    if vdi not in table:
        return
    for vbd in list(table.get_field(vdi, "VBDs")):
        remove(db, "VBD", vbd)
    for snap in list(table.get_field(vdi, "snapshots")):
        if snap in table:
            table.set_field(snap, "snapshot_of", NULL_REF)
    remove(db, "VDI", vdi)


# -- allowed operations ---------------------------------------------------------------------------
SR_OPS = ("scan", "destroy", "forget", "plug", "unplug", "update", "vdi_create", "vdi_introduce",
          "vdi_destroy", "vdi_resize", "vdi_clone", "vdi_snapshot", "vdi_mirror", "vdi_enable_cbt",
          "vdi_disable_cbt", "vdi_data_destroy", "vdi_list_changed_blocks", "vdi_set_on_boot", "pbd_create",
          "pbd_destroy")
# operation -> the capability it needs (xapi's Xapi_sr_operations table)
_SR_CAPS = {"vdi_create": "VDI_CREATE", "vdi_destroy": "VDI_DELETE", "vdi_resize": "VDI_RESIZE",
            "vdi_introduce": "VDI_INTRODUCE", "update": "SR_UPDATE", "vdi_snapshot": "VDI_SNAPSHOT",
            "vdi_clone": "VDI_CLONE", "vdi_mirror": "VDI_MIRROR", "vdi_enable_cbt": "VDI_CONFIG_CBT",
            "vdi_disable_cbt": "VDI_CONFIG_CBT", "vdi_data_destroy": "VDI_CONFIG_CBT",
            "vdi_list_changed_blocks": "VDI_CONFIG_CBT", "vdi_set_on_boot": "VDI_RESET_ON_BOOT"}

VDI_OPS = ("snapshot", "copy", "clone", "destroy", "resize", "update", "generate_config", "resize_online",
           "enable_cbt", "disable_cbt", "data_destroy", "list_changed_blocks", "set_on_boot", "mirror", "forget")
_VDI_CAPS = {"destroy": "VDI_DELETE", "resize": "VDI_RESIZE", "update": "VDI_UPDATE",
             "resize_online": "VDI_RESIZE_ONLINE", "generate_config": "VDI_GENERATE_CONFIG",
             "clone": "VDI_CLONE", "snapshot": "VDI_SNAPSHOT", "mirror": "VDI_MIRROR",
             "enable_cbt": "VDI_CONFIG_CBT", "disable_cbt": "VDI_CONFIG_CBT", "data_destroy": "VDI_CONFIG_CBT",
             "list_changed_blocks": "VDI_CONFIG_CBT", "set_on_boot": "VDI_RESET_ON_BOOT"}
_LIVE = ("snapshot", "resize_online", "clone", "mirror", "list_changed_blocks", "enable_cbt", "disable_cbt",
         "copy")


def features(app, sr_type: str) -> dict[str, int]:
    storage = getattr(app, "storage", None)
    info = storage.executor.drivers.get(sr_type) if storage is not None else None
    if info is not None:
        return info.features
    sms = app.db.table("SM")
    for ref in sms.find("type", sr_type):
        return dict(sms.get_field(ref, "features"))
    return {}


def sr_allowed(app, sr: str) -> list[str]:
    db = app.db
    rec = db.table("SR").get(sr)
    feats = features(app, rec["type"])
    if rec["current_operations"]:
        return []
    pbds = db.table("PBD")
    attached = any(pbds.get_field(p, "currently_attached") for p in rec["PBDs"] if p in pbds)
    vdis = db.table("VDI")
    managed = any(vdis.get_field(v, "managed") for v in rec["VDIs"] if v in vdis)
    out = []
    for op in SR_OPS:
        cap = _SR_CAPS.get(op)
        if cap is not None and cap not in feats:
            continue
        if op in ("destroy", "forget") and attached:
            continue
        if op == "destroy" and (not rec["PBDs"] or managed):
            continue
        out.append(op)
    return out


def vdi_allowed(app, vdi: str) -> list[str]:
    db = app.db
    rec = db.table("VDI").get(vdi)
    if rec["current_operations"] or rec["SR"] not in db.table("SR"):
        return []
    sr = db.table("SR").get(rec["SR"])
    feats = features(app, sr["type"])
    pbds = db.table("PBD")
    attached_pbd = any(pbds.get_field(p, "currently_attached") for p in sr["PBDs"] if p in pbds)
    vbds = db.table("VBD")
    active = any(vbds.get_field(v, "currently_attached") for v in rec["VBDs"] if v in vbds)
    storage = getattr(app, "storage", None)
    if storage is not None and storage.access.in_use(rec["uuid"]):
        active = True
    out = []
    for op in VDI_OPS:
        cap = _VDI_CAPS.get(op)
        if cap is not None and cap not in feats:
            continue
        if not rec["managed"] and op != "forget":
            continue
        if active and op not in _LIVE:
            continue
        if op == "resize" and not attached_pbd:
            continue
        if op == "snapshot" and (rec["sharable"] or rec["on_boot"] == "reset"):
            continue
        if op == "destroy" and sr["type"] == "udev":
            continue
        if op == "copy" and rec["type"] in ("ha_statefile", "redo_log"):
            continue
        out.append(op)
    return out


def refresh_sr(app, sr: str) -> None:
    table = app.db.table("SR")
    if sr in table:
        allowed = sr_allowed(app, sr)
        if table.get_field(sr, "allowed_operations") != allowed:
            table.set_field(sr, "allowed_operations", allowed)


def refresh_vdi(app, vdi: str) -> None:
    table = app.db.table("VDI")
    if vdi in table:
        allowed = vdi_allowed(app, vdi)
        if table.get_field(vdi, "allowed_operations") != allowed:
            table.set_field(vdi, "allowed_operations", allowed)


def refresh_sr_and_vdis(app, sr: str) -> None:
    refresh_sr(app, sr)
    if sr in app.db.table("SR"):
        for vdi in app.db.table("SR").get_field(sr, "VDIs"):
            refresh_vdi(app, vdi)
