"""Changed block tracking and NBD access of VDIs, as xapi_vdi.ml and its operation checks:

* enable_cbt / disable_cbt: user and system VDIs (else VDI_INCOMPATIBLE_TYPE [vdi, type]), not a
  snapshot (OPERATION_NOT_ALLOWED), not on_boot=reset (VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION),
  on a VHD SR (ext, nfs; else SR_OPERATION_NOT_SUPPORTED [sr]); they set cbt_enabled;
* list_changed_blocks(vdi_from, vdi_to): vdi_to may not be attached to a VM (VDI_IN_USE), both need
  cbt_enabled (VDI_NO_CBT_METADATA [vdi]); the answer is SM's: base64 of a bitmap of 64 KiB blocks over
  vdi_to's virtual size, most significant bit first.
  How it is computed: no write log is kept. Snapshots here are VHD differencing chains, so every write
  made between two points of a disk's history lives in a VHD layer that one chain has and the other
  lacks; the blocks are the sectors allocated in those layers (both disks attached read-only through
  the storage access layer, the VHDs read in a worker thread). It is exact at 64 KiB granularity for
  what was written, and conservative (a rewrite of the same bytes counts as a change; a shared layer
  the GC coalesced a later layer into after the older snapshot counts as changed as a whole);
* data_destroy: a snapshot (else OPERATION_NOT_ALLOWED) with cbt_enabled (else VDI_NO_CBT_METADATA),
  not attached (VDI_IN_USE): its type becomes cbt_metadata; its own VHD layer stays, as the position in
  the chain that list_changed_blocks compares against;
* get_nbd_info: a cbt_metadata VDI has no data (VDI_INCOMPATIBLE_TYPE); otherwise one entry per network
  whose purpose includes nbd or insecure_nbd and per host with the SR plugged that has an addressed
  PIF on it: exportname "/<vdi uuid>?session_id=<session>", the address, port 10809, and for nbd (TLS)
  the host's certificate and its hostname as subject.
"""
from __future__ import annotations

import base64
import calendar
import os
import time

from xapi.actions import vdi_read
from xapi.datamodel.errors import XapiError

CHUNK = 64 * 1024                   # the granularity of CBT bitmaps
SECTOR = 512
NBD_PORT = 10809
_CBT_TYPES = ("user", "system")
_VHD_SR_TYPES = ("ext", "nfs")


def _rec(db, vdi) -> dict:
    try:
        return db.table("VDI").get(vdi)
    except (KeyError, TypeError):
        raise XapiError("HANDLE_INVALID", "VDI", vdi) from None


def _attached_to_vm(db, rec: dict) -> bool:
    vbds = db.table("VBD")
    return any(vbds.get_field(v, "currently_attached") for v in rec.get("VBDs") or [] if v in vbds)


def _check_cbt_op(db, vdi: str, rec: dict) -> None:
    if rec["is_a_snapshot"]:
        raise XapiError("OPERATION_NOT_ALLOWED", f"VDI is a snapshot: {vdi}")
    if rec["type"] not in _CBT_TYPES:
        raise XapiError("VDI_INCOMPATIBLE_TYPE", vdi, rec["type"])
    if rec["on_boot"] == "reset":
        raise XapiError("VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION")
    sr = rec["SR"]
    srs = db.table("SR")
    if sr not in srs or srs.get_field(sr, "type") not in _VHD_SR_TYPES:
        raise XapiError("SR_OPERATION_NOT_SUPPORTED", sr)


def enable_cbt(ctx, session, self):
    db = ctx.app.db
    _check_cbt_op(db, self, _rec(db, self))
    db.table("VDI").set_field(self, "cbt_enabled", True)
    return ""


def disable_cbt(ctx, session, self):
    db = ctx.app.db
    _check_cbt_op(db, self, _rec(db, self))
    db.table("VDI").set_field(self, "cbt_enabled", False)
    return ""


def data_destroy(ctx, session, self):
    db = ctx.app.db
    rec = _rec(db, self)
    if not rec["is_a_snapshot"]:
        raise XapiError("OPERATION_NOT_ALLOWED", f"VDI is not a snapshot: {self}")
    if not rec["cbt_enabled"]:
        raise XapiError("VDI_NO_CBT_METADATA", self)
    if _attached_to_vm(db, rec):
        raise XapiError("VDI_IN_USE", self, "data_destroy")
    db.table("VDI").set_field(self, "type", "cbt_metadata")
    return ""


# -- list_changed_blocks ---------------------------------------------------------------------------
def _layers(path: str) -> tuple[int, dict, dict]:
    """The disk's virtual size and, per VHD layer uuid of its chain, the 64 KiB chunks it has data in
    and its file's modification time."""
    from xapi.sm import vhd
    per_block = vhd.BLOCK_SIZE // CHUNK
    bytes_per_chunk = CHUNK // SECTOR // 8
    top = vhd.open(path, readonly=True)
    try:
        out, mtimes = {}, {}
        for layer in top.chain():
            chunks: set[int] = set()
            for b in layer.blocks():
                if layer.header is None:        # a fixed disk: all there
                    chunks.update(range(b * per_block, (b + 1) * per_block))
                    continue
                bm = layer.bitmap(b)
                for i in range(per_block):
                    if any(bm[i * bytes_per_chunk:(i + 1) * bytes_per_chunk]):
                        chunks.add(b * per_block + i)
            out[layer.uuid] = chunks
            mtimes[layer.uuid] = os.stat(layer.path).st_mtime
        return top.virtual_size, out, mtimes
    finally:
        for layer in top.chain():
            layer.close()


def _bitmap(size: int, chunks: set[int]) -> str:
    n = -(-size // CHUNK)
    bits = bytearray(-(-n // 8))
    for c in chunks:
        if c < n:
            bits[c // 8] |= 0x80 >> (c % 8)
    return base64.b64encode(bytes(bits)).decode()


async def _vhd_layers(app, vdi: str) -> tuple[int, dict, dict]:
    async with vdi_read.attached_readonly(app, vdi, "cbt") as info:
        if info.get("format", "vhd") != "vhd":
            raise XapiError("SR_OPERATION_NOT_SUPPORTED", app.db.table("VDI").get_field(vdi, "SR"))
        return await vdi_read.in_worker(_layers, info["params"])


async def list_changed_blocks(ctx, session, vdi_from, vdi_to):
    app = ctx.app
    db = app.db
    recs = {v: _rec(db, v) for v in (vdi_from, vdi_to)}
    if _attached_to_vm(db, recs[vdi_to]):
        raise XapiError("VDI_IN_USE", vdi_to, "list_changed_blocks")
    for v, rec in recs.items():
        if not rec["cbt_enabled"]:
            raise XapiError("VDI_NO_CBT_METADATA", v)
        srs = db.table("SR")
        if srs.get_field(rec["SR"], "type") not in _VHD_SR_TYPES:
            raise XapiError("SR_OPERATION_NOT_SUPPORTED", rec["SR"])
    size_to, to_layers, mtimes = await _vhd_layers(app, vdi_to)
    _, from_layers, _ = await _vhd_layers(app, vdi_from)
    changed: set[int] = set()
    for uuid in to_layers.keys() ^ from_layers.keys():
        changed |= to_layers.get(uuid) or from_layers.get(uuid) or set()
    # A shared (hidden, read-only) layer is written again only when the GC coalesces a later layer into
    # it: then it holds writes made after the older snapshot, and all its blocks count as changed.
    taken = [_epoch(r["snapshot_time"]) for r in recs.values() if r["is_a_snapshot"]]
    if taken:
        since = min(taken) + 1.0            # snapshot_time has whole seconds
        for uuid in to_layers.keys() & from_layers.keys():
            if mtimes[uuid] > since:
                changed |= to_layers[uuid]
    return _bitmap(size_to, changed)


def _epoch(stamp) -> float:
    return calendar.timegm(time.strptime(str(stamp).rstrip("Z"), "%Y%m%dT%H:%M:%S"))


# -- NBD -------------------------------------------------------------------------------------------
def get_nbd_info(ctx, session, self):
    from xapi.actions import host as host_mod
    db = ctx.app.db
    rec = _rec(db, self)
    if rec["type"] == "cbt_metadata":
        raise XapiError("VDI_INCOMPATIBLE_TYPE", self, "cbt_metadata")
    pbds, pifs, hosts = db.table("PBD"), db.table("PIF"), db.table("host")
    plugged = [pbds.get_field(p, "host") for p in db.table("SR").get_field(rec["SR"], "PBDs") or []
               if p in pbds and pbds.get_field(p, "currently_attached")]
    out = []
    networks = db.table("network")
    for net in networks.refs():
        purpose = networks.get_field(net, "purpose") or []
        if "nbd" not in purpose and "insecure_nbd" not in purpose:
            continue
        for pif in networks.get_field(net, "PIFs") or []:
            if pif not in pifs:
                continue
            p = pifs.get(pif)
            if p["host"] not in plugged or not (p["IP"] or p["IPv6"]):
                continue
            address = p["IP"] or (p["IPv6"][0].split("/")[0] if p["IPv6"] else "")
            h = hosts.get(p["host"])
            secure = "nbd" in purpose
            out.append({"exportname": f"/{rec['uuid']}?session_id={session}", "address": address,
                        "port": NBD_PORT,
                        "cert": host_mod.get_server_certificate(ctx, session, p["host"]) if secure else "",
                        "subject": h["hostname"] if secure else ""})
    return out

