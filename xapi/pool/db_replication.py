"""Database replication for disaster recovery (xapi_vdi_helpers.ml, xapi_dr.ml): the coordinator keeps
the pool database, in state.db's format, in every metadata VDI of its own pool
(<SR folder>/<vdi uuid>.metadata/state.db beside the VDI's file), rewritten at most every PERIOD
seconds after a change, so that another pool can read it from the SR (VDI.open_database).
SR.enable_database_replication makes the VDI and writes it at once; disable destroys it."""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os

from xapi.aiotask import cancel_and_wait
from xapi.db import persist
from xapi.pool import sr_folder

log = logging.getLogger("xapi.pool.db_replication")

PERIOD = 2.0                    # at most one write of each VDI this often
SUFFIX = "metadata"
FILE = "state.db"


def path_of(app, vdi: str) -> str | None:
    """This host's path of the database a metadata VDI holds (None when its SR is out of reach)."""
    folder = sr_folder.beside(app, vdi, SUFFIX)
    return os.path.join(folder, FILE) if folder else None


def replicated_vdis(app) -> list[str]:
    """The metadata VDIs of this pool (xapi: type metadata, metadata_of_pool the local pool)."""
    db = app.db
    pools = set(db.table("pool").refs())
    vdis = db.table("VDI")
    return [v for v in vdis.refs()
            if vdis.get_field(v, "type") == "metadata" and vdis.get_field(v, "metadata_of_pool") in pools]


def _write(snap, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    persist.write_snapshot(snap, path)


class Replicator:
    def __init__(self, app) -> None:
        self.app = app
        self.written: dict[str, int] = {}          # VDI -> generation last written there
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-replication")
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="database replication")

    async def write(self, vdi: str) -> None:
        """Writes the database into `vdi` now."""
        async with self._lock:
            path = path_of(self.app, vdi)
            if path is None:
                return
            snap = persist.snapshot(self.app.db)
            await asyncio.get_running_loop().run_in_executor(self._executor, _write, snap, path)
            self.written[vdi] = snap.generation

    def forget(self, vdi: str) -> None:
        self.written.pop(vdi, None)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(PERIOD)
            if not self.app.is_coordinator:
                continue
            gen = self.app.db.generation
            for vdi in replicated_vdis(self.app):
                if self.written.get(vdi, -1) >= gen:
                    continue
                try:
                    await self.write(vdi)
                except Exception:
                    log.exception("database replication to VDI %s failed", vdi)

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        # a cancelled write may still run in the worker: wait for it off the event loop
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)
