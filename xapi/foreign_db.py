"""Sessions on another pool's database (VDI.open_database), as xapi's read-only "disaster-recovery"
sessions bound to a database read from a metadata VDI: the read-only role, and their reads of the
datamodel's classes (get_*, get_record, get_all, get_all_records[_where], get_by_*) answer from that
database; everything else runs as for any read-only session (so writes are RBAC_PERMISSION_DENIED).
The database goes with the session (logout, expiry)."""
from __future__ import annotations

from xapi import datamodel as dm
from xapi.actions.accessors import accessor
from xapi.auth import rbac
from xapi.dispatch import Dispatcher

# classes of the session's own host, not of the database read: its session, tasks, events, roles
_LOCAL_CLASSES = frozenset({"session", "task", "event", "role", "subject", "auth", "user"})
_READS = frozenset({"get_all", "get_all_records", "get_all_records_where", "get_record", "get_by_uuid",
                    "get_by_name_label"})


def _is_read(m: dm.Message) -> bool:
    if m.cls in _LOCAL_CLASSES:
        return False
    return m.name in _READS or (m.implicit and m.name.startswith("get_"))


def _resolve_reads(m: dm.Message, db):
    return accessor(m, db) if _is_read(m) else None


class RoutingDispatcher(Dispatcher):
    """The daemon's dispatcher: a call on a foreign-database session goes to that database's reads."""

    def __init__(self, resolve, db, sessions: dict) -> None:
        super().__init__(resolve, db, sessions)
        self.foreign: dict[str, tuple[Dispatcher, frozenset]] = {}   # session ref -> its reads

    def lookup(self, ctx, name: str, params):
        if self.foreign and params and type(params[0]) is str:
            bound = self.foreign.get(params[0])
            if bound is not None and name in bound[1]:
                return bound[0].entries[name]
        return super().lookup(ctx, name, params)

    def open(self, app, db) -> str:
        """A read-only session whose reads see `db`; returns its ref."""
        reads = Dispatcher(_resolve_reads, db, self.sessions)
        names = frozenset(n for n, e in reads.entries.items() if e.message is not None and _is_read(e.message))
        role = rbac.ref_of(rbac.READ_ONLY)
        s = app.sessions.create("disaster-recovery", superuser=False, roles=frozenset({rbac.READ_ONLY}),
                                permissions=rbac.session_permissions(frozenset({role})))
        self.foreign[s.ref] = (reads, names)
        return s.ref

    def session_gone(self, ref: str) -> None:
        self.foreign.pop(ref, None)
