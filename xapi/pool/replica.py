"""A member's read replica of the pool database, fed continuously from the coordinator.

Coordinator side, two internal methods: `db.snapshot` (every replicated row) and `db.since(generation,
timeout)` (a long poll: the rows changed after `generation`, in their current state, or deleted).
Rows travel in xapi's database string form (xapi.db.persist encoders), so every type round-trips.

Member side, `Replica.run`: one snapshot, then changes as they come, written into the member's own
database (the same Database object every component holds, so it is updated in place). Sessions and
tasks are host-local and not replicated. The member's periodic flush writes the replica to its own
state.db; it is what `pool.emergency_transition_to_master` promotes.
"""
from __future__ import annotations

import asyncio
import logging

from xapi import datamodel as dm
from xapi.aiotask import cancel_and_wait
from xapi.datamodel.db_names import NOT_PERSISTED
from xapi.datamodel.errors import XapiError
from xapi.db import persist
from xapi.db_errors import EventsLost
from xapi.events import Subscription
from xapi.pool.internal import method

log = logging.getLogger("xapi.pool.replica")

POLL_SLICE = 0.25           # writes nobody pokes the event hub for are seen within this
LONG_POLL = 20.0


def replicated_tables(db) -> list[str]:
    return [t for t in persist.persisted_tables(db) if t not in NOT_PERSISTED]


def _encode(cls: str, row: dict) -> dict:
    fields = dm.CLASSES[cls].fields
    return {k: persist.encoder(fields[k].type)(v) for k, v in row.items() if k in fields}


def _decode(cls: str, row: dict) -> dict:
    fields = dm.CLASSES[cls].fields
    out = {}
    for k, v in row.items():
        f = fields.get(k)
        if f is not None:
            try:
                out[k] = persist.decoder(f.type)(v)
            except ValueError:
                out[k] = f.initial()
    return out


# -- coordinator side ----------------------------------------------------------------------------
@method("db.snapshot")
def snapshot(app) -> dict:
    db = app.db
    tables = {t: {ref: _encode(t, row) for ref, row in db.table(t).all_records().items()}
              for t in replicated_tables(db)}
    return {"generation": db.generation, "tables": tables, "epoch": _epoch(app)}


def _epoch(app):
    """The coordinator's redo-log term (None without a redo-log): a replica of another term starts over."""
    redo = getattr(app, "redo", None)
    return redo.epoch if redo is not None else None


_EVERYTHING = Subscription(["*"])


@method("db.since")
async def since(app, generation: int, timeout: float = LONG_POLL):
    db = app.db
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(max(0.0, float(timeout)), 60.0)
    wanted = set(replicated_tables(db))
    while True:
        now = db.generation
        if now > generation:
            try:
                changes = db.changes_since(generation, wanted)
            except EventsLost:
                return {"lost": True, "generation": now, "epoch": _epoch(app)}
            if changes:
                out = []
                for c in changes:
                    t = db.table(c.table)
                    if c.op == "del" or c.ref not in t:
                        out.append([c.table, c.ref, "del", None])
                    else:
                        out.append([c.table, c.ref, c.op, _encode(c.table, t.get(c.ref))])
                return {"generation": now, "changes": out, "epoch": _epoch(app)}
            generation = now
        left = deadline - loop.time()
        if left <= 0:
            return {"generation": generation, "changes": [], "epoch": _epoch(app)}
        await app.hub.wait("replica", _EVERYTHING, min(POLL_SLICE, left))


# -- member side ---------------------------------------------------------------------------------
def _put(db, cls: str, ref: str, row: dict) -> None:
    table = db.table(cls)
    if ref in table:
        current = table.get(ref)
        changed = {k: v for k, v in row.items() if current.get(k) != v}
        if changed:
            table.update(ref, changed)
    else:
        table.add(ref, row)


def apply_snapshot(db, snap: dict) -> None:
    """Makes the replicated tables hold exactly the snapshot's rows (in place)."""
    for cls, rows in snap["tables"].items():
        if cls not in dm.CLASSES:
            continue
        table = db.table(cls)
        for ref in [r for r in table.refs() if r not in rows]:
            table.remove(ref)
        for ref, row in rows.items():
            _put(db, cls, ref, _decode(cls, row))


def apply_changes(db, changes: list) -> None:
    for cls, ref, op, row in changes:
        if cls not in dm.CLASSES:
            continue
        table = db.table(cls)
        if op == "del":
            if ref in table:
                table.remove(ref)
        else:
            _put(db, cls, ref, _decode(cls, row))


class Replica:
    """Follows the coordinator; `generation` is the coordinator's generation applied so far."""

    def __init__(self, app) -> None:
        self.app = app
        self.generation = -1
        self.epoch = None                   # the coordinator's redo-log term this replica follows
        self.synced = asyncio.Event()
        self.connected = False
        self._task: asyncio.Task | None = None

    async def caught_up(self, generation: int, timeout: float = 10.0) -> None:
        """Returns once the coordinator's writes up to `generation` are here (the coordinator passes
        its generation with calls that read what it just wrote). Woken by the poke of this host's
        event hub after each batch applied (`run`), not by a polling interval: a member's write
        (xapi.pool.relay) waits about one replica round trip."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.generation < generation:
            left = deadline - loop.time()
            if left <= 0:
                raise XapiError("HOST_OFFLINE", self.app.host_ref)
            # a batch without replicated changes moves the generation without a poke: seen within a slice
            await self.app.hub.wait("replica catch-up", _EVERYTHING, min(left, POLL_SLICE))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="pool replica")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def run(self) -> None:
        app = self.app
        delay = 0.2
        while True:
            try:
                peer = app.pool.coordinator_peer()
                if self.generation < 0:
                    snap = await peer.call("db.snapshot", timeout=60)
                    apply_snapshot(app.db, snap)
                    self.generation = snap["generation"]
                    self.epoch = snap.get("epoch")
                    app.hub.poke()
                while True:
                    batch = await peer.call("db.since", self.generation, LONG_POLL, timeout=LONG_POLL + 30)
                    if batch.get("lost") or batch.get("epoch") != self.epoch:
                        self.generation = -1
                        break
                    if batch["changes"]:
                        apply_changes(app.db, batch["changes"])
                        app.hub.poke()
                    self.generation = batch["generation"]
                    self.connected = True
                    self.synced.set()
                    delay = 0.2
            except asyncio.CancelledError:
                raise
            except XapiError as e:
                if self.connected:
                    log.warning("replica: coordinator unreachable (%s); retrying", e.description[0])
                self.connected = False
            except Exception:
                log.exception("replica: update failed; starting over with a snapshot")
                self.generation = -1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
