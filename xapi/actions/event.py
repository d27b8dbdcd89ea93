"""event.*: event.from (long poll on a token), inject, get_current_id, and the legacy
register/unregister/next queue per session."""
from __future__ import annotations

import asyncio
import time

from xapi import datamodel as dm
from xapi.datamodel.errors import XapiError
from xapi.db_errors import Change, EventsLost
from xapi.events import Subscription, parse_token, token

# The longest a legacy event.next waits before looking again (it then waits again: it never returns empty).
_NEXT_WAIT = 3600.0


def _counts(app) -> dict[str, int]:
    """valid_ref_counts: every table's row count, keyed by lowercase class name."""
    return {name: len(table) for name, table in app.hub.tables}


def _events(db, changes, sub: Subscription, timestamp: str) -> list[dict]:
    out = []
    for c in changes:
        if not sub.matches(c.table, c.ref):
            continue
        ev = {"id": str(c.generation), "timestamp": timestamp, "class": c.table.lower(),
              "operation": c.op, "ref": c.ref}
        if c.op != "del":
            ev["snapshot"] = db.table(c.table).get(c.ref)
        out.append(ev)
    return out


def _changes(db, since: int, sub: Subscription):
    tables = None if sub.everything else sub.tables
    try:
        if SCAN_EVERY_ROW:
            return _scan_changes(db, since, tables)
        return db.changes_since(since, tables)
    except EventsLost:
        raise XapiError("EVENTS_LOST") from None


# How xapi finds changes: fold over every row of every subscribed table comparing stamps, so a poll
# costs O(rows). Kept only as the baseline of benchmark E1; the change log makes a poll O(changes).
SCAN_EVERY_ROW = False


def _scan_changes(db, since: int, tables):
    out = []
    for name in (db.tables() if tables is None else tables):
        table = db.table(name)
        for ref in table.refs():
            created, modified = table.stamps(ref)
            if modified > since:
                out.append(Change(name, ref, "add" if created > since else "mod", modified))
    out.extend(c for c in db.changes_since(since, tables) if c.op == "del")   # tombstones
    out.sort(key=lambda c: c.generation)
    return out


async def from_(ctx, session, classes, token_text, timeout):
    app = ctx.app
    db = app.db
    since, message_generation = parse_token(token_text)
    sub = Subscription(classes)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, timeout)
    while True:
        now_gen = db.generation
        events = _events(db, _changes(db, since, sub), sub, "0.0") if (sub.everything or sub.tables) else []
        remaining = deadline - loop.time()
        if events or remaining <= 0:
            break
        await app.hub.wait(session.ref, sub, remaining)
    if events:
        now_gen = max(now_gen, max(int(e["id"]) for e in events))
    return {"events": events, "valid_ref_counts": _counts(app), "token": token(now_gen, message_generation)}


def inject(ctx, session, cls, ref):
    db = ctx.app.db
    table = dm.CLASS_BY_LOWER.get(cls.lower()) if type(cls) is str else None
    if table is None or not dm.CLASSES[table].fields or ref not in db.table(table):
        raise XapiError("HANDLE_INVALID", cls, ref)
    db.table(table).update(ref, {})
    return token(db.generation - 1, 0)


def get_current_id(ctx, session):
    return ctx.app.db.generation


class Registration:
    __slots__ = ("classes", "since")

    def __init__(self, since: int) -> None:
        self.classes: set[str] = set()
        self.since = since


def register(ctx, session, classes):
    regs = ctx.app.event_registrations
    reg = regs.get(session.ref)
    if reg is None:
        reg = regs[session.ref] = Registration(ctx.app.db.generation)
    Subscription(classes)                     # rejects malformed entries
    reg.classes.update(classes)
    return ""


def unregister(ctx, session, classes):
    reg = ctx.app.event_registrations.get(session.ref)
    if reg is not None:
        reg.classes.difference_update(classes)
    return ""


async def next(ctx, session):  # noqa: A001 - the XenAPI message is called next
    app = ctx.app
    db = app.db
    while True:
        reg = app.event_registrations.get(session.ref)
        if reg is None:
            raise XapiError("SESSION_NOT_REGISTERED", session.ref)
        sub = Subscription(reg.classes)
        try:
            changes = db.changes_since(reg.since, None if sub.everything else sub.tables)
        except EventsLost:
            reg.since = db.generation
            raise XapiError("EVENTS_LOST") from None
        events = _events(db, changes, sub, "%.6f" % time.time())
        if events:
            reg.since = max(c.generation for c in changes)
            return events
        if changes:
            reg.since = max(c.generation for c in changes)
        await app.hub.wait(session.ref, sub, _NEXT_WAIT)


