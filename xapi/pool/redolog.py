"""The redo-log: every committed write of the coordinator appended to a file on storage every host
sees (<XAPI_REDO_LOG folder>/<pool uuid>.log, e.g. in the shared nfs folder; `xapi sim --redo-log`
sets it), or, once pool.enable_redo_log has put it on a redo_log VDI, <SR folder>/<vdi uuid>.redo-log/
<pool uuid>.log (each host resolves the SR's folder from its own PBD), so a member
promoted after the coordinator died recovers even the writes its replica had not received yet
(xapi: redo_log.ml, a database and deltas on a shared VDI).

One JSON object a line: {"epoch", "g", "snapshot": {...}} (the whole replicated database) or
{"epoch", "g", "c": [changes]} (rows changed since the previous line, in the replica stream's form,
xapi.pool.replica). Each coordinator term writes under a new epoch, starting with a snapshot (the file is
replaced atomically; also when it grows past LIMIT). A call that may have written is answered only
after its changes are appended and synced (xapi.server.rpc waits for `durable`); background writes go out
within a second. A promoted member replays the lines of its replica's epoch past its generation.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import uuid

import orjson

from xapi import atomic
from xapi.aiotask import cancel_and_wait
from xapi.db_errors import EventsLost
from xapi.pool import replica

log = logging.getLogger("xapi.pool.redolog")

ENV = "XAPI_REDO_LOG"
LIMIT = 64 << 20            # bytes before the log restarts from a snapshot
PERIOD = 1.0                # background writes are logged within this


def configured() -> str | None:
    return os.environ.get(ENV) or None


# pool.enable_redo_log (xapi.actions.pool_redo_log): the log lives in a folder beside a redo_log VDI
VDI_SIZE = 256 << 20        # xapi's Redo_log.minimum_vdi_size
VDI_SUFFIX = "redo-log"     # <SR folder>/<vdi uuid>.redo-log/<pool uuid>.log


def folder_of_pool(app) -> str | None:
    """The folder of the redo-log pool.enable_redo_log switched on, on this host, or None when it is off
    (or HA's own log is in charge, as xapi's Redo_log_usage) or this host cannot reach its SR."""
    from xapi.pool import sr_folder
    pools = app.db.table("pool")
    for p in pools.refs():
        rec = pools.get(p)
        if rec["redo_log_enabled"] and not rec["ha_enabled"]:
            return sr_folder.beside(app, rec["redo_log_vdi"], VDI_SUFFIX)
    return None


def wanted(app) -> "RedoLog | None":
    """The redo-log this host should keep: XAPI_REDO_LOG's folder, else the pool's redo-log VDI's."""
    folder = configured() or folder_of_pool(app)
    return RedoLog(app, folder) if folder else None


async def switch(app, new: "RedoLog | None") -> None:
    """Replaces the running redo-log by `new` (kept as it is when both are the same log); on the
    coordinator a log without a term starts one."""
    old = getattr(app, "redo", None)
    if old is not None and new is not None and old.folder == new.folder:
        new = old
    elif old is not None:
        old.end()
        await old.close()
    app.redo = new
    if new is not None and app.is_coordinator and new.epoch is None:
        await new.begin()


def _append(path: str, data: bytes) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
        os.fdatasync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _changes(db, since: int, tables) -> list:
    out = []
    for c in db.changes_since(since, tables):
        t = db.table(c.table)
        if c.op == "del" or c.ref not in t:
            out.append([c.table, c.ref, "del", None])
        else:
            out.append([c.table, c.ref, c.op, replica._encode(c.table, t.get(c.ref))])
    return out


class RedoLog:
    def __init__(self, app, folder: str) -> None:
        self.app = app
        self.folder = folder
        self.epoch: str | None = None        # this host's term as the coordinator, while it is one
        self.logged = 0
        self._lock = asyncio.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="redo-log")
        self._task: asyncio.Task | None = None

    @property
    def path(self) -> str:
        pools = self.app.db.table("pool")
        refs = pools.refs()
        name = pools.get_field(refs[0], "uuid") if refs else "pool"
        return os.path.join(self.folder, f"{name}.log")

    # -- the coordinator -----------------------------------------------------------------------------
    async def begin(self) -> None:
        """A new term: the log restarts with a snapshot of the database."""
        async with self._lock:
            await self._restart()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._periodic(), name="redo-log")

    async def _restart(self) -> None:
        snap = replica.snapshot(self.app)
        self.epoch = self.epoch or str(uuid.uuid4())
        line = orjson.dumps({"epoch": self.epoch, "g": snap["generation"], "snapshot": snap["tables"]}) + b"\n"
        os.makedirs(self.folder, exist_ok=True)
        await asyncio.get_running_loop().run_in_executor(self._executor, atomic.write_file, self.path, line, 0o600)
        self.logged = snap["generation"]

    def durable(self):
        """The awaitable a call's answer waits for (xapi.server.rpc: Endpoints' `durable`): None when
        every write is already logged, so a call that wrote nothing pays one comparison."""
        if self.epoch is None or self.app.db.generation <= self.logged:
            return None
        return self.commit()

    async def commit(self) -> None:
        """Appends what changed since the last line; returns once it is on disk."""
        app = self.app
        if self.epoch is None or app.db.generation <= self.logged:
            return
        async with self._lock:
            db = app.db
            gen = db.generation
            if gen <= self.logged:
                return
            try:
                changes = _changes(db, self.logged, replica.replicated_tables(db))
            except EventsLost:
                await self._restart()
                return
            if changes:
                line = orjson.dumps({"epoch": self.epoch, "g": gen, "c": changes}) + b"\n"
                size = await asyncio.get_running_loop().run_in_executor(self._executor, _append, self.path, line)
                if size > LIMIT:
                    self.logged = gen
                    await self._restart()
                    return
            self.logged = gen

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(PERIOD)
            try:
                await self.commit()
            except Exception:
                log.exception("redo-log: append to %s failed", self.path)

    def end(self) -> None:
        """No longer the coordinator."""
        self.epoch = None

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        try:
            await self.commit()
        except Exception:
            log.exception("redo-log: last append failed")
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)

    # -- a member being promoted -----------------------------------------------------------------------
    async def replay(self, epoch: str | None, generation: int) -> int:
        """Applies the lines of `epoch` past `generation` to the database; returns how many."""
        if epoch is None:
            return 0
        try:        # the whole log (snapshots included) is read in the log's worker, not on the loop
            lines = (await asyncio.get_running_loop().run_in_executor(
                self._executor, _read, self.path)).splitlines()
        except FileNotFoundError:
            return 0
        applied = 0
        for raw in lines:
            try:
                entry = orjson.loads(raw)
            except orjson.JSONDecodeError:
                break                           # a torn last line: the write never completed
            if entry.get("epoch") != epoch or entry.get("g", -1) <= generation:
                continue
            if "snapshot" in entry:
                replica.apply_snapshot(self.app.db, {"tables": entry["snapshot"]})
            else:
                replica.apply_changes(self.app.db, entry["c"])
            generation = entry["g"]
            applied += 1
        return applied
