"""xapi reading a VDI's content itself: the VDI attached read-only on a transient datapath of the
storage access layer (attached_readonly), and its checksum (xapi's internal VDI.checksum: the MD5 of
the whole disk as a guest sees it, through its VHD chain), computed in a worker thread."""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import secrets

from xapi.datamodel.errors import XapiError

_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vdi-read")


@contextlib.asynccontextmanager
async def attached_readonly(app, vdi: str, kind: str):
    """The activated datapath's info ("params": the disk's path, "format": vhd or raw); released after."""
    storage = app.storage.access
    dp = f"{kind}/{app.db.table('VDI').get_field(vdi, 'uuid')}/{secrets.token_hex(4)}"
    try:
        await storage.attach(dp, vdi, False)
        info = await storage.activate(dp, vdi) or {}
        if not info.get("params"):
            raise XapiError("SR_OPERATION_NOT_SUPPORTED", app.db.table("VDI").get_field(vdi, "SR"))
        yield info
    finally:
        try:
            await storage.deactivate(dp, vdi)
        finally:
            await storage.detach(dp, vdi)
            storage.released(dp, vdi)


def in_worker(fn, *args):
    return asyncio.get_running_loop().run_in_executor(_pool, fn, *args)


def _md5(path: str, fmt: str) -> str:
    from xapi.sm import vhd
    h = hashlib.md5(usedforsecurity=False)
    if fmt == "vhd":
        for data in vhd.read_all(path):
            h.update(data)
    else:
        with open(path, "rb") as f:
            while data := f.read(vhd.BLOCK_SIZE):
                h.update(data)
    return h.hexdigest()


async def checksum(app, vdi: str) -> str:
    async with attached_readonly(app, vdi, "checksum") as info:
        return await in_worker(_md5, info["params"], info.get("format", "vhd"))
