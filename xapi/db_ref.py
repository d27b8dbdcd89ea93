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

Results are ordered by generation.  A write that changes mirror sets (below) stamps
several rows with its one generation; those changes come by table, in the order the
tables were asked for (creation order when ``tables`` is None), and within a table in
the order the write first touched them: the written row (or its ``del``) first, then
the rows whose sets changed, relation by relation in the order of the written table's
fields, the old target before the new one.

Relations (``Database.add_relation(one, ref_field, many, set_field)``, xapi's
one-to-many relations such as VBD.VM <-> VM.VBDs):

* ``ref_field`` is indexed automatically; its values may dangle ("OpaqueRef:NULL", a
  ref not yet added or already removed).
* ``many[t][set_field]`` is always the list of refs of the ``one`` rows whose
  ``ref_field`` equals ``t``, in the order they came to point at it (a row that
  repoints away and back goes to the end; setting the value it already has changes
  nothing), no matter when the ``many`` row was added (rows already pointing at it
  count).
* the set fields are read-only mirrors: a value given for one in ``add``,
  ``set_field`` or ``update`` is ignored (the write still happens and bumps, like an
  empty ``update``).  Each read returns a fresh list after a change; lists are never
  changed in place.
* a write that changes a mirror set stamps its row ``modified`` at the write's own
  generation (one write = one bump, whatever it touches), so ``changes_since``
  reports it (``mod``, or ``add`` if created after the asked generation).  Removing a
  ``many`` row leaves the ``one`` rows pointing at it untouched (dangling).
* ``add_relation`` is schema, not a write: both tables must be empty of rows; a field
  takes part in at most one relation, and a mirror cannot be indexed.

``Table.generation`` is the generation of the table's latest change (add, mod, del,
mirror updates included; 0 if none; ``Database.table_generations()`` gives them all),
so a waiter can skip tables that did not move.

Errors (a failed call changes nothing and bumps nothing): unknown ref or field →
``KeyError`` (checked before anything else about the values); ``add`` of an existing
ref → ``ValueError``; a ref that is not a ``str`` → ``TypeError``; an unhashable value
for an indexed field → ``TypeError``.  ``find`` returns refs in table order (the order
of ``refs()``), through the index for indexed fields and by scanning otherwise, with
the same equality either way (``is`` or ``==``, hence ``1`` finds ``True``).
``changes_since`` raises ``EventsLost`` when a deletion after the asked generation
has been forgotten (the newest forgotten tombstone of a requested table is younger),
never for a generation below 1 (no row was created at or before it).

Loading a saved database (``Table.restore`` of each row with its saved stamps, in order
of ``modified``, then ``Database.end_restore(saved generation)``) writes nothing: the
generation is the saved one, so tokens keep their meaning across a restart; deletions
before it were not saved, so an older token gets ``EventsLost``.
"""
import operator
from collections import OrderedDict, deque
from typing import Iterable, Mapping, Sequence

from xapi.db_errors import DEFAULT_MAX_DELETED, Change, EventsLost

__all__ = ["Database", "Table", "Change", "EventsLost", "DEFAULT_MAX_DELETED"]

_by_generation = operator.attrgetter("generation")


class _Row:
    __slots__ = ("values", "created", "modified", "stale")

    def __init__(self, values: dict, generation: int, stale: bool):
        self.values = values
        self.created = generation
        self.modified = generation
        self.stale = stale          # mirror sets to recompute before the next read


class _Relation:
    __slots__ = ("one", "ref_field", "many", "set_field")

    def __init__(self, one: "Table", ref_field: str, many: "Table", set_field: str):
        self.one = one
        self.ref_field = ref_field
        self.many = many
        self.set_field = set_field


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
        self._generation = 0                       # generation of the latest change in this table
        self._rel_of: dict = {}                    # ref field -> _Relation, in field order
        self._mirrors: dict = {}                   # mirror set field -> _Relation

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

    @property
    def generation(self) -> int:
        return self._generation

    def __repr__(self) -> str:
        return f"<Table {self._name} rows={len(self._rows)}>"

    # -- helpers --------------------------------------------------------------
    def _check_field(self, field) -> None:
        if field not in self._known:
            raise KeyError(field)

    def _touch(self, ref, row: _Row) -> int:
        generation = row.modified = self._generation = self._db._bump()
        self._recent.move_to_end(ref)
        return generation

    def _mirror_touch(self, ref, generation: int) -> None:
        """The mirror sets of row ``ref`` (if it exists) changed in write ``generation``."""
        row = self._rows.get(ref)
        if row is None:
            return
        row.stale = True
        if row.modified != generation:
            row.modified = self._generation = generation
            self._recent.move_to_end(ref)

    def _fresh(self, ref, row: _Row) -> _Row:
        if row.stale:
            for field, rel in self._mirrors.items():
                row.values[field] = rel.one._pointing(rel.ref_field, ref)
            row.stale = False
        return row

    def _pointing(self, field, ref) -> list:
        return list(self._index[field].get(ref, ()))

    def _touch_targets(self, generation: int, moves) -> None:
        """``moves``: (field, old target, new target) of changed ref fields, in field order."""
        for field, old, new in moves:
            many = self._rel_of[field].many
            many._mirror_touch(old, generation)
            many._mirror_touch(new, generation)

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
        return dict(self._fresh(ref, self._rows[ref]).values)

    def get_field(self, ref, field):
        row = self._rows[ref]
        self._check_field(field)
        return self._fresh(ref, row).values[field]

    def stamps(self, ref) -> tuple:
        row = self._rows[ref]
        return (row.created, row.modified)

    def refs(self) -> list:
        return list(self._rows)

    def all_records(self) -> dict:
        return {ref: dict(self._fresh(ref, row).values) for ref, row in self._rows.items()}

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
                if (v := self._fresh(ref, row).values[field]) is value or v == value]

    # -- writes ---------------------------------------------------------------
    def add(self, ref, row: Mapping) -> None:
        if not isinstance(ref, str):
            raise TypeError(f"ref must be a str, not {type(ref).__name__}")
        if ref in self._rows:
            raise ValueError(f"duplicate ref {ref!r} in table {self._name}")
        values = dict.fromkeys(self._fields)
        for field, value in row.items():
            self._check_field(field)
            if field not in self._mirrors:      # mirrors are computed, never given
                values[field] = value
        for field in self._indexed:
            hash(values[field])
        generation = self._generation = self._db._bump()
        r = _Row(values, generation, bool(self._mirrors))
        self._rows[ref] = r
        self._recent[ref] = r
        for field in self._indexed:
            self._index_add(field, ref, values[field])
        self._touch_targets(generation, [(f, None, values[f]) for f in self._rel_of])

    def remove(self, ref) -> None:
        row = self._rows[ref]
        generation = self._generation = self._db._bump()
        del self._rows[ref]
        del self._recent[ref]
        for field in self._indexed:
            self._index_del(field, ref, row.values[field])
        tombs = self._tombs
        tombs.append((generation, ref, row.created))
        if len(tombs) > self._max_deleted:
            self._forgotten = tombs.popleft()[0]
        self._touch_targets(generation, [(f, row.values[f], None) for f in self._rel_of])

    def restore(self, ref, row: Mapping, created: int, modified: int) -> None:
        """Adds a saved row with its saved stamps: not a write (nothing is bumped; the rows
        whose mirror sets it enters keep their own stamps).  Raises the database generation
        to ``modified`` if it is below.  Checks and errors as ``add``, and ``ValueError``
        unless ``1 <= created <= modified`` and ``modified`` is at least the table's
        latest change (rows come back in the order they last changed)."""
        created, modified = operator.index(created), operator.index(modified)
        if not isinstance(ref, str):
            raise TypeError(f"ref must be a str, not {type(ref).__name__}")
        if ref in self._rows:
            raise ValueError(f"duplicate ref {ref!r} in table {self._name}")
        if not 1 <= created <= modified:
            raise ValueError(f"stamps must satisfy 1 <= created <= modified, not {created}, {modified}")
        if modified < self._generation:
            raise ValueError(f"modified {modified} is older than table {self._name}'s latest change "
                             f"{self._generation}")
        values = dict.fromkeys(self._fields)
        for field, value in row.items():
            self._check_field(field)
            if field not in self._mirrors:
                values[field] = value
        for field in self._indexed:
            hash(values[field])
        r = _Row(values, created, bool(self._mirrors))
        r.modified = self._generation = modified
        self._db._generation = max(self._db._generation, modified)
        self._rows[ref] = r
        self._recent[ref] = r
        for field in self._indexed:
            self._index_add(field, ref, values[field])
        for field, rel in self._rel_of.items():
            target = rel.many._rows.get(values[field])
            if target is not None:
                target.stale = True

    def set_field(self, ref, field, value) -> None:
        row = self._rows[ref]
        self._check_field(field)
        if field in self._mirrors:                  # read-only: ignored, still a write
            self._touch(ref, row)
            return
        if field not in self._index:
            row.values[field] = value
            self._touch(ref, row)
            return
        hash(value)
        old = row.values[field]
        if old is value or old == value:            # keeps its place in index and mirror
            row.values[field] = value
            self._touch(ref, row)
            return
        self._index_del(field, ref, old)
        row.values[field] = value
        self._index_add(field, ref, value)
        generation = self._touch(ref, row)
        if field in self._rel_of:
            self._touch_targets(generation, [(field, old, value)])

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
        items = [(f, v) for f, v in items if f not in self._mirrors]   # read-only: ignored
        # An indexed field set to an equal value keeps its place in the index (and
        # in the mirror set it feeds): nothing moves.
        changed = {f for f, v in items
                   if f in self._index and not ((old := row.values[f]) is v or old == v)}
        new = dict(items)
        moves = [(f, row.values[f], new[f]) for f in self._rel_of if f in changed]
        for field, value in items:
            if field in changed:
                self._index_del(field, ref, row.values[field])
                row.values[field] = value
                self._index_add(field, ref, value)
            else:
                row.values[field] = value
        self._touch_targets(self._touch(ref, row), moves)

    # -- events ---------------------------------------------------------------
    def _check_lost(self, generation: int) -> None:
        # before 1: no row was created at or before it, so no deletion can be owed
        if self._forgotten and 1 <= generation < self._forgotten:
            raise EventsLost(self._name, generation, self._forgotten)

    def _changes(self, generation: int, out: list) -> None:
        if self._generation <= generation:
            return
        name = self._name
        recent = self._recent
        found = []
        for ref in reversed(recent):
            row = recent[ref]
            if row.modified <= generation:
                break
            found.append(Change(name, ref, "add" if row.created > generation else "mod", row.modified))
        live = len(found)
        for deleted, ref, created in reversed(self._tombs):
            if deleted <= generation:
                break
            if created <= generation:
                found.append(Change(name, ref, "del", deleted))
        # Oldest first; in one generation the deletion (the write itself) before the
        # mirror updates, which keep their touch order (sort() is stable).
        found.reverse()
        if len(found) > live:
            found.sort(key=lambda c: (c.generation, c.op != "del"))
        out.extend(found)


class Database:
    """Generation-counted in-memory tables."""

    def __init__(self, max_deleted: int = DEFAULT_MAX_DELETED):
        max_deleted = operator.index(max_deleted)
        if max_deleted < 0:
            raise ValueError("max_deleted must be >= 0")
        self._max_deleted = max_deleted
        self._generation = 0
        self._tables: dict = {}
        self._relations: list = []

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

    def table_generations(self) -> dict:
        """``{table name: Table.generation}``, in table creation order."""
        return {name: t._generation for name, t in self._tables.items()}

    def relations(self) -> list:
        """``(one_table, ref_field, many_table, set_field)`` of every relation, in order added."""
        return [(r.one._name, r.ref_field, r.many._name, r.set_field) for r in self._relations]

    def add_relation(self, one_table: str, ref_field: str, many_table: str, set_field: str) -> None:
        """Keeps ``many_table[t][set_field]`` equal to the refs of the ``one_table`` rows whose
        ``ref_field`` is ``t`` (see the module doc).  ``KeyError`` for an unknown table or
        field; ``ValueError`` if a field already takes part in a relation as the other
        side or the same side, if ``set_field`` is indexed, if both are the same field, or
        if either table has rows."""
        one = self._tables[one_table]
        many = self._tables[many_table]
        one._check_field(ref_field)
        many._check_field(set_field)
        if one is many and ref_field == set_field:
            raise ValueError(f"{one_table}.{ref_field} cannot mirror itself")
        if ref_field in one._rel_of or ref_field in one._mirrors:
            raise ValueError(f"{one_table}.{ref_field} already takes part in a relation")
        if set_field in many._mirrors or set_field in many._rel_of:
            raise ValueError(f"{many_table}.{set_field} already takes part in a relation")
        if set_field in many._index:
            raise ValueError(f"{many_table}.{set_field} is indexed; a mirror set cannot be")
        if one._rows or many._rows:
            raise ValueError("relations must be added before any row of either table")
        rel = _Relation(one, ref_field, many, set_field)
        if ref_field not in one._index:
            one._indexed = one._indexed + (ref_field,)
            one._index[ref_field] = {}
        one._rel_of[ref_field] = rel
        one._rel_of = {f: one._rel_of[f] for f in one._fields if f in one._rel_of}   # field order
        many._mirrors[set_field] = rel
        self._relations.append(rel)

    def end_restore(self, generation: int) -> None:
        """Ends a load of saved rows (``Table.restore``): sets the generation to the saved
        one (``ValueError`` if a restored stamp is newer) and forgets every deletion up to
        it, which were not saved: ``changes_since(g)`` raises ``EventsLost`` for
        ``1 <= g < generation``."""
        generation = operator.index(generation)
        if generation < self._generation:
            raise ValueError(f"generation {generation} is older than the newest stamp {self._generation}")
        self._generation = generation
        for table in self._tables.values():
            table._forgotten = max(table._forgotten, generation)

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
