"""Pure-Python reference of the in-memory database core (compiled twin: ``xapi/_fastdb.pyx``).

Selected with ``XAPI_PURE=1`` through ``xapi.fastdb``; the property tests check that
both behave identically, results and exception types alike.

Model (after xapi's ``db_cache_types.ml``):

* one global ``generation`` per ``Database``; every row write (``add``, ``remove``,
  ``set_field``, ``update``) bumps it by exactly 1.  Creating a table is not a write.
* every live row carries ``(created, modified)`` stamps; every removal leaves a
  tombstone ``(deleted, ref, created)`` in its table, at most ``max_deleted`` per table.
* each table keeps its live rows in order of last change (``_recent``) and its
  tombstones in order of deletion, so ``changes_since(g)`` walks only what changed
  after ``g``, newest first, and stops.

Event rules of ``changes_since(g)`` (xapi's ``event.from``):

* row created after g → ``add`` (generation = its latest change), even if modified later;
* row created at or before g, modified after g → one ``mod``;
* row deleted after g, created at or before g → ``del`` (generation = the deletion);
* row created and deleted after g → nothing;
* a ref removed and added again is two rows: both rules apply to each.

Results are ordered by generation (each write has its own, so the order is total).

Errors (a failed call changes nothing and bumps nothing): unknown ref or field →
``KeyError`` (checked before anything else about the values); ``add`` of an existing
ref → ``ValueError``; a ref that is not a ``str`` → ``TypeError``; an unhashable value
for an indexed field → ``TypeError``.  ``find`` returns refs in table order (the order
of ``refs()``), through the index for indexed fields and by scanning otherwise, with
the same equality either way (``is`` or ``==``, hence ``1`` finds ``True``).
``changes_since`` raises ``EventsLost`` when a deletion after the asked generation
has been forgotten (the newest forgotten tombstone of a requested table is younger).
"""
import operator
from collections import OrderedDict, deque
from typing import Iterable, Mapping, Sequence

from xapi.db_errors import DEFAULT_MAX_DELETED, Change, EventsLost

__all__ = ["Database", "Table", "Change", "EventsLost", "DEFAULT_MAX_DELETED"]

_by_generation = operator.attrgetter("generation")


class _Row:
    __slots__ = ("values", "created", "modified")

    def __init__(self, values: dict, generation: int):
        self.values = values
        self.created = generation
        self.modified = generation


class Table:
    """A table of rows keyed by ref; create it with ``Database.create_table``."""

    def __init__(self, db: "Database", name: str, fields: tuple, indexed: tuple, max_deleted: int):
        self._db = db
        self._name = name
        self._fields = fields
        self._indexed = indexed
        self._known = frozenset(fields)
        self._rows: dict = {}                      # ref -> _Row, insertion order
        self._recent: OrderedDict = OrderedDict()  # ref -> _Row, order of last change
        self._index = {f: {} for f in indexed}     # field -> value -> {ref: None}
        self._tombs: deque = deque()               # (deleted, ref, created), order of deletion
        self._max_deleted = max_deleted
        self._forgotten = 0                        # deletion generation of the newest forgotten tombstone

    # -- attributes ---------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def fields(self) -> tuple:
        return self._fields

    @property
    def indexed(self) -> tuple:
        return self._indexed

    def __repr__(self) -> str:
        return f"<Table {self._name} rows={len(self._rows)}>"

    # -- helpers --------------------------------------------------------------
    def _check_field(self, field) -> None:
        if field not in self._known:
            raise KeyError(field)

    def _touch(self, ref, row: _Row) -> None:
        row.modified = self._db._bump()
        self._recent.move_to_end(ref)

    def _index_add(self, field, ref, value) -> None:
        self._index[field].setdefault(value, {})[ref] = None

    def _index_del(self, field, ref, value) -> None:
        index = self._index[field]
        bucket = index[value]
        del bucket[ref]
        if not bucket:
            del index[value]

    # -- reads ----------------------------------------------------------------
    def __contains__(self, ref) -> bool:
        return ref in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, ref) -> dict:
        return dict(self._rows[ref].values)

    def get_field(self, ref, field):
        row = self._rows[ref]
        self._check_field(field)
        return row.values[field]

    def stamps(self, ref) -> tuple:
        row = self._rows[ref]
        return (row.created, row.modified)

    def refs(self) -> list:
        return list(self._rows)

    def all_records(self) -> dict:
        return {ref: dict(row.values) for ref, row in self._rows.items()}

    def find(self, field, value) -> list:
        """Refs whose ``field`` equals ``value``, in table (insertion) order."""
        self._check_field(field)
        index = self._index.get(field)
        if index is not None:
            bucket = index.get(value)
            if not bucket:
                return []
            if len(bucket) == 1:
                return list(bucket)
            rows = self._rows
            return sorted(bucket, key=lambda ref: rows[ref].created)
        return [ref for ref, row in self._rows.items()
                if (v := row.values[field]) is value or v == value]

    # -- writes ---------------------------------------------------------------
    def add(self, ref, row: Mapping) -> None:
        if not isinstance(ref, str):
            raise TypeError(f"ref must be a str, not {type(ref).__name__}")
        if ref in self._rows:
            raise ValueError(f"duplicate ref {ref!r} in table {self._name}")
        values = dict.fromkeys(self._fields)
        for field, value in row.items():
            self._check_field(field)
            values[field] = value
        for field in self._indexed:
            hash(values[field])
        r = _Row(values, self._db._bump())
        self._rows[ref] = r
        self._recent[ref] = r
        for field in self._indexed:
            self._index_add(field, ref, values[field])

    def remove(self, ref) -> None:
        row = self._rows[ref]
        generation = self._db._bump()
        del self._rows[ref]
        del self._recent[ref]
        for field in self._indexed:
            self._index_del(field, ref, row.values[field])
        tombs = self._tombs
        tombs.append((generation, ref, row.created))
        if len(tombs) > self._max_deleted:
            self._forgotten = tombs.popleft()[0]

    def set_field(self, ref, field, value) -> None:
        row = self._rows[ref]
        self._check_field(field)
        if field in self._index:
            hash(value)
            self._index_del(field, ref, row.values[field])
            row.values[field] = value
            self._index_add(field, ref, value)
        else:
            row.values[field] = value
        self._touch(ref, row)

    def update(self, ref, values: Mapping) -> None:
        """Sets several fields with one generation bump; all or nothing.  An empty
        ``values`` still bumps the row (like ``event.inject``)."""
        row = self._rows[ref]
        items = list(values.items())
        for field, _ in items:
            self._check_field(field)
        for field, value in items:
            if field in self._index:
                hash(value)
        for field, value in items:
            if field in self._index:
                self._index_del(field, ref, row.values[field])
                row.values[field] = value
                self._index_add(field, ref, value)
            else:
                row.values[field] = value
        self._touch(ref, row)

    # -- events ---------------------------------------------------------------
    def _check_lost(self, generation: int) -> None:
        if self._forgotten and generation < self._forgotten:
            raise EventsLost(self._name, generation, self._forgotten)

    def _changes(self, generation: int, out: list) -> None:
        name = self._name
        recent = self._recent
        for ref in reversed(recent):
            row = recent[ref]
            if row.modified <= generation:
                break
            out.append(Change(name, ref, "add" if row.created > generation else "mod", row.modified))
        for deleted, ref, created in reversed(self._tombs):
            if deleted <= generation:
                break
            if created <= generation:
                out.append(Change(name, ref, "del", deleted))


class Database:
    """Generation-counted in-memory tables."""

    def __init__(self, max_deleted: int = DEFAULT_MAX_DELETED):
        max_deleted = operator.index(max_deleted)
        if max_deleted < 0:
            raise ValueError("max_deleted must be >= 0")
        self._max_deleted = max_deleted
        self._generation = 0
        self._tables: dict = {}

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def max_deleted(self) -> int:
        return self._max_deleted

    def _bump(self) -> int:
        self._generation += 1
        return self._generation

    def __repr__(self) -> str:
        return f"<Database generation={self._generation} tables={len(self._tables)}>"

    def create_table(self, name: str, fields: Sequence[str], indexed: Sequence[str] | None = None) -> Table:
        """``indexed`` defaults to ``("uuid",)`` when the table has a ``uuid`` field, else none."""
        if not isinstance(name, str):
            raise TypeError(f"table name must be a str, not {type(name).__name__}")
        if name in self._tables:
            raise ValueError(f"table {name!r} already exists")
        fields = tuple(fields)
        for field in fields:
            if not isinstance(field, str):
                raise TypeError(f"field name must be a str, not {type(field).__name__}")
        if len(set(fields)) != len(fields):
            raise ValueError(f"duplicate field in table {name!r}")
        if indexed is None:
            indexed = ("uuid",) if "uuid" in fields else ()
        elif isinstance(indexed, str):
            raise TypeError("indexed must be a sequence of field names, not a str")
        indexed = tuple(dict.fromkeys(indexed))
        for field in indexed:
            if field not in fields:
                raise KeyError(field)
        table = Table(self, name, fields, indexed, self._max_deleted)
        self._tables[name] = table
        return table

    def table(self, name: str) -> Table:
        return self._tables[name]

    def tables(self) -> list:
        return list(self._tables)

    def changes_since(self, generation: int, tables: Iterable[str] | None = None) -> list:
        """Rows added, modified or deleted after ``generation`` (see the module doc for the
        rules), ordered by generation; raises ``EventsLost`` if a deletion after
        ``generation`` has been forgotten, ``KeyError`` for an unknown table."""
        generation = operator.index(generation)
        if tables is None:
            selected = list(self._tables.values())
        elif isinstance(tables, str):
            raise TypeError("tables must be an iterable of table names, not a str")
        else:
            selected = [self._tables[name] for name in dict.fromkeys(tables)]
        for table in selected:
            table._check_lost(generation)
        out: list = []
        for table in selected:
            table._changes(generation, out)
        out.sort(key=_by_generation)
        return out
