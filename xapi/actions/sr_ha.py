"""SR.assert_can_host_ha_statefile, as xha_statefile.ml: a PBD on every host (SR_NO_PBDS), each plugged
(SR_NO_PBDS too, as Helpers.assert_pbd_is_plugged), a driver with VDI_GENERATE_CONFIG or
VDI_ATTACH_OFFLINE (SR_OPERATION_NOT_SUPPORTED), and for each of the statefile and the redo-log either a
VDI of its type and size to reuse or room for both (SR_SOURCE_SPACE_INSUFFICIENT)."""
from __future__ import annotations

from xapi.datamodel.errors import XapiError
from xapi.pool import redolog
from xapi.sm import rows

STATEFILE_SIZE = 4096 + 64 * 4096           # global section and 64 host sections
_ALIGN = 4 << 20                            # SM's smallest VDI


def _round(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


MINIMUM_SR_SIZE = _round(STATEFILE_SIZE) + _round(redolog.VDI_SIZE)


def assert_every_host_plugged(db, sr) -> None:
    pbds = db.table("PBD")
    mine = [p for p in db.table("SR").get_field(sr, "PBDs") if p in pbds]
    if not set(db.table("host").refs()) <= {pbds.get_field(p, "host") for p in mine}:
        raise XapiError("SR_NO_PBDS", sr)
    if not all(pbds.get_field(p, "currently_attached") for p in mine):
        raise XapiError("SR_NO_PBDS", sr)


def _fits(db, sr, vdi_type: str, minimum: int) -> None:
    vdis = db.table("VDI")
    srs = db.table("SR")
    if any(v in vdis and vdis.get_field(v, "type") == vdi_type and vdis.get_field(v, "virtual_size") >= minimum
           for v in srs.get_field(sr, "VDIs")):
        return
    if srs.get_field(sr, "physical_size") - srs.get_field(sr, "physical_utilisation") < MINIMUM_SR_SIZE:
        raise XapiError("SR_SOURCE_SPACE_INSUFFICIENT", sr)


def assert_can_host_ha_statefile(ctx, session, sr):
    app = ctx.app
    db = app.db
    rows.check(db, "SR", sr)
    assert_every_host_plugged(db, sr)
    if not (app.storage.has_capability(sr, "VDI_GENERATE_CONFIG")
            or app.storage.has_capability(sr, "VDI_ATTACH_OFFLINE")):
        raise XapiError("SR_OPERATION_NOT_SUPPORTED", sr)
    _fits(db, sr, "ha_statefile", STATEFILE_SIZE)
    _fits(db, sr, "redo_log", redolog.VDI_SIZE)
    return ""


SR_MESSAGES = {"assert_can_host_ha_statefile": assert_can_host_ha_statefile}
