"""PBD.*: create (PBD_EXISTS), destroy (not while plugged), plug and unplug (xapi_pbd.ml).

plug attaches the SR on this host (sr_attach with the PBD's device-config) and, on the SR master, scans
it when the driver asked for a scan; unplug refuses while VDIs of the SR are in use on this host
(VDI_IN_USE [vdis]) and detaches it (xapi.sm.service).
"""
from __future__ import annotations

from xapi.actions import accessors
from xapi import datamodel as dm
from xapi.datamodel.errors import XapiError
from xapi.sm import rows
from xapi.sm.operations import locked, sr_of

_generic_create = None


# each marks its SR as message_forwarding.ml does (xapi.sm.operations)
@locked("pbd_create", target=lambda app, args: (args.get("SR") if isinstance(args, dict) else None, None))
def create(ctx, session, args):
    global _generic_create
    db = ctx.app.db
    sr, host = args.get("SR"), args.get("host")
    if isinstance(sr, str) and isinstance(host, str):
        pbds = db.table("PBD")
        for pbd in pbds.find("SR", sr):
            if pbds.get_field(pbd, "host") == host:
                raise XapiError("PBD_EXISTS", sr, host, pbd)
    if _generic_create is None:
        _generic_create = accessors.accessor(dm.CLASSES["PBD"].messages["create"], db)
    ref = _generic_create(ctx, session, args)
    if sr in db.table("SR"):
        rows.refresh_sr(ctx.app, sr)
    return ref


@locked("pbd_destroy", target=sr_of("PBD"))
def destroy(ctx, session, self):
    db = ctx.app.db
    rec = rows.check(db, "PBD", self)
    if rec["currently_attached"]:
        raise XapiError("OPERATION_NOT_ALLOWED", "PBD is currently attached")
    rows.remove(db, "PBD", self)
    if rec["SR"] in db.table("SR"):
        rows.refresh_sr(ctx.app, rec["SR"])
    return ""


def set_device_config(ctx, session, self, value):
    rows.check(ctx.app.db, "PBD", self)
    ctx.app.db.table("PBD").set_field(self, "device_config", dict(value))
    return ""


@locked("plug", target=sr_of("PBD"))
async def plug(ctx, session, self):
    return await _plug_or_unplug(ctx, self, plug=True)


@locked("unplug", target=sr_of("PBD"))
async def unplug(ctx, session, self):
    return await _plug_or_unplug(ctx, self, plug=False)


async def _plug_or_unplug(ctx, pbd, plug: bool):
    app = ctx.app
    rec = rows.check(app.db, "PBD", pbd)
    if rec["host"] != app.host_ref:
        raise XapiError("OPERATION_NOT_ALLOWED", "the PBD belongs to another host")
    await app.storage.ready()
    await (app.storage.plug if plug else app.storage.unplug)(pbd)
    rows.refresh_sr_and_vdis(app, rec["SR"])
    return ""
