"""Where a file SR (ext, nfs) lives on this host, and the folders the pool keeps beside a VDI's file
there: the redo-log's (xapi.pool.redolog) and a metadata VDI's database (xapi.pool.db_replication).
Each host resolves the path from its own PBD: an nfs SR with a server is mounted per host."""
from __future__ import annotations

import os

from xapi.sm.gc import sr_folder


def here(app, sr: str) -> str | None:
    """The SR's folder on this host, or None when this host has no plugged PBD or it is not a file SR."""
    db = app.db
    pbds = db.table("PBD")
    srs = db.table("SR")
    if sr not in srs:
        return None
    for pbd in srs.get_field(sr, "PBDs"):
        if pbd in pbds and pbds.get_field(pbd, "host") == app.host_ref and pbds.get_field(pbd, "currently_attached"):
            return sr_folder(srs.get_field(sr, "type"), pbds.get_field(pbd, "device_config"),
                             srs.get_field(sr, "uuid"), app.config.data_dir)
    return None


def beside(app, vdi: str, suffix: str) -> str | None:
    """`<SR folder>/<vdi uuid>.<suffix>` on this host (a name the SR's scan ignores), or None."""
    vdis = app.db.table("VDI")
    if vdi not in vdis:
        return None
    folder = here(app, vdis.get_field(vdi, "SR"))
    return os.path.join(folder, f"{vdis.get_field(vdi, 'uuid')}.{suffix}") if folder else None
