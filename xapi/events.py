"""Event delivery: who is waiting for which tables, and waking them when a write touches those.

Every call that may have written ends with `poke()`: one integer comparison when nothing changed.
When the generation moved, the changed tables are read from the database's change log (cost in
proportion to the changes) and only the waiters of those tables are woken. Thousands of idle long
polls therefore cost nothing per call.
"""
from __future__ import annotations

import asyncio
from collections import defaultdict

from xapi import datamodel as dm
from xapi.datamodel.errors import XapiError


def token(db_generation: int, message_generation: int = 0) -> str:
    return "%020d,%020d" % (db_generation, message_generation)


def parse_token(text) -> tuple[int, int]:
    if text == "":
        return 0, 0
    try:
        a, b = text.split(",")
        return int(a), int(b)
    except (ValueError, AttributeError):
        raise XapiError("EVENT_FROM_TOKEN_PARSE_FAILURE", text) from None


class Subscription:
    """Parsed `classes` argument: "*", a class name in any case, or "class/OpaqueRef:..."."""

    __slots__ = ("tables", "objects", "everything")

    def __init__(self, classes) -> None:
        self.everything = False
        self.tables: set[str] = set()
        self.objects: dict[str, set[str]] = {}   # table -> refs, for "class/ref" entries
        whole: set[str] = set()
        for item in classes:
            if type(item) is not str:
                raise XapiError("EVENT_SUBSCRIPTION_PARSE_FAILURE", str(item))
            if item == "*":
                self.everything = True
                continue
            name, _, ref = item.partition("/")
            table = dm.CLASS_BY_LOWER.get(name.lower())
            if table is None or not dm.CLASSES[table].fields:
                continue                          # unknown classes match nothing, as in xapi
            if ref:
                self.objects.setdefault(table, set()).add(ref)
            else:
                whole.add(table)
        for table in whole:
            self.objects.pop(table, None)
        self.tables = whole | set(self.objects)

    def table_names(self, all_tables) -> list[str]:
        return list(all_tables) if self.everything else list(self.tables)

    def matches(self, table: str, ref: str) -> bool:
        if self.everything:
            return True
        refs = self.objects.get(table)
        return refs is None or ref in refs


class Hub:
    def __init__(self, db) -> None:
        self.db = db
        self.seen = db.generation
        self.by_table: dict[str, set[asyncio.Future]] = defaultdict(set)
        self.everything: set[asyncio.Future] = set()
        self.by_session: dict[str, set[asyncio.Future]] = defaultdict(set)
        # (lowercase class name, table) of every table, for valid_ref_counts
        self.tables = [(name.lower(), db.table(name)) for name in db.tables()]

    def poke(self) -> None:
        """Wakes the waiters of every table written since the last poke."""
        gen = self.db.generation
        if gen == self.seen:
            return
        try:
            changed = {c.table for c in self.db.changes_since(self.seen)}
        except Exception:                  # changes forgotten: wake everyone, they will find out
            changed = set(self.by_table)
        self.seen = gen
        woken = set(self.everything)
        for table in changed:
            woken |= self.by_table.get(table, set())
        for fut in woken:
            if not fut.done():
                fut.set_result(None)

    async def wait(self, session_ref: str, sub: Subscription, timeout: float) -> None:
        """Returns when a subscribed table may have changed, at the timeout, or raises SESSION_INVALID
        when the session goes away."""
        fut = asyncio.get_running_loop().create_future()
        groups = [self.everything] if sub.everything else [self.by_table[t] for t in sub.tables]
        for g in groups:
            g.add(fut)
        self.by_session[session_ref].add(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            for g in groups:
                g.discard(fut)
            waiting = self.by_session.get(session_ref)
            if waiting is not None:
                waiting.discard(fut)
                if not waiting:
                    del self.by_session[session_ref]

    def session_gone(self, session_ref: str) -> None:
        for fut in self.by_session.pop(session_ref, ()):
            if not fut.done():
                fut.set_exception(XapiError("SESSION_INVALID", session_ref))


def xml_prepare(batch: dict) -> dict:
    """event.from over XML-RPC: record ints travel as strings (int64), but valid_ref_counts are
    typed <int> as xapi sends them; the caller encodes the result with ints kept typed."""
    return {"events": [_ints_as_strings(e) for e in batch["events"]],
            "valid_ref_counts": batch["valid_ref_counts"], "token": batch["token"]}


def _ints_as_strings(v):
    t = type(v)
    if t is int:
        return str(v)
    if t is dict:
        return {k: _ints_as_strings(x) for k, x in v.items()}
    if t is list:
        return [_ints_as_strings(x) for x in v]
    return v
