# cython: language_level=3
"""Compiled in-memory database core: generation-counted tables, indexes, change log.

Behaves exactly like the pure-Python reference ``xapi/db_ref.py`` (read its module
doc for the model and the event rules); this file only differs in representation:

* a row is a ``Row`` holding a list of values (positions from ``Table.positions``),
  its ``created``/``modified`` stamps, and two borrowed links that chain the live rows
  of a table in order of last change, so a write moves its row to the tail in O(1)
  and ``changes_since(g)`` walks back from the tail only over rows changed after g;
* an index maps a value to the single ``Row`` holding it, or to a dict ``{ref: Row}``
  when several rows share it (most indexes are on unique fields such as uuid);
* tombstones are tuples in a list consumed from ``tomb_head``, compacted now and then;
* a relation (``Relation``) is the index of its ref field: the mirror set of a target
  row is the bucket of its ref in that index, whose insertion order is the order the
  rows came to point at it.  A write only sets the target's ``stale`` bit (one bit per
  mirror of its table) and stamps it; the list is rebuilt on the next read, so adding
  the 20,000th VDI of an SR costs O(1), not a copy of SR.VDIs.

Rows and their value lists are not tracked by the cyclic collector (they are never
handed out, so no cycle can run through them; collections stay short however big the
database grows).  The price: a row value that refers back to its own Table or Database
keeps the whole database alive for good.  Values are XenAPI data, so this never happens.

Everything runs under the GIL; there is no locking of its own.
"""
cimport cython
from cpython.dict cimport PyDict_GetItemWithError, PyDict_SetItem, PyDict_DelItem, PyDict_Copy
from cpython.ref cimport PyObject
from cpython.number cimport PyNumber_Index
from cpython.object cimport PyObject_RichCompareBool, Py_EQ

from operator import itemgetter

from xapi.db_errors import DEFAULT_MAX_DELETED, Change, EventsLost

__all__ = ["Database", "Table", "Change", "EventsLost", "DEFAULT_MAX_DELETED"]

cdef object _tuple_new = tuple.__new__
cdef object _Change = Change
cdef str _ADD = "add"
cdef str _MOD = "mod"
cdef str _DEL = "del"


cdef inline object _change(str table, object ref, str op, long long generation):
    return _tuple_new(_Change, (table, ref, op, generation))


cdef object _change_generation = itemgetter(3)
cdef object _move_pos = itemgetter(0)

cdef extern from "Python.h":
    void PyObject_GC_UnTrack(void*)
    PyObject* PyTuple_GET_ITEM(object, Py_ssize_t)
    PyObject* PyList_GET_ITEM(object, Py_ssize_t)
    int _dict_set_borrowed "PyDict_SetItem" (object, PyObject*, PyObject*) except -1


def _row_created(Row row):
    return row.created


@cython.final
@cython.freelist(64)
@cython.no_gc   # never handed out, so in no cycle the collector could free (see the module doc)
cdef class Row:
    """One live row (internal; never handed out)."""
    pass


@cython.final
cdef class Relation:
    """``one.fields[ref_pos]`` points at rows of ``many``, whose ``set_pos`` mirrors it (internal)."""
    pass


cdef inline list _bucket_refs(object bucket):
    if bucket is None:
        return []
    if type(bucket) is Row:
        return [(<Row>bucket).ref]
    return list(<dict>bucket)


@cython.final
@cython.no_gc_clear   # head/tail borrow from rows: never let the collector empty rows first
cdef class Table:
    """A table of rows keyed by ref; create it with ``Database.create_table``."""

    def __cinit__(self, Database db, str name, tuple fields, tuple indexed, Py_ssize_t max_deleted):
        cdef Py_ssize_t i
        self.db = db
        self.name = name
        self.fields = fields
        self.indexed = indexed
        self.nfields = len(fields)
        self.positions = {f: i for i, f in enumerate(fields)}
        self.blank = [None] * self.nfields
        self.template = dict.fromkeys(fields)
        index_of = [None] * self.nfields
        for f in indexed:
            index_of[self.positions[f]] = {}
        self.index_of = tuple(index_of)
        self.indexed_pos = tuple([self.positions[f] for f in indexed])
        self.rows = {}
        self.head = NULL
        self.tail = NULL
        self.tombs = []
        self.tomb_head = 0
        self.max_deleted = max_deleted
        self.forgotten = 0
        self.generation = 0
        self.rel_of = (None,) * self.nfields
        self.rel_pos = ()
        self.mirror_at = (None,) * self.nfields
        self.mirrors = ()
        self.mirror_mask = 0

    def __repr__(self):
        return f"<Table {self.name} rows={len(self.rows)}>"

    # -- helpers --------------------------------------------------------------
    cdef Row _row(self, object ref):
        cdef PyObject* p = PyDict_GetItemWithError(self.rows, ref)
        if p == NULL:
            raise KeyError(ref)
        return <Row>p

    cdef Py_ssize_t _pos(self, object field) except -1:
        cdef PyObject* p = PyDict_GetItemWithError(self.positions, field)
        if p == NULL:
            raise KeyError(field)
        return <Py_ssize_t><object>p

    cdef dict _record(self, Row row):
        if row.stale:
            self._refresh(row)
        cdef dict d = PyDict_Copy(self.template)
        cdef tuple fields = self.fields
        cdef list values = row.values
        cdef Py_ssize_t i
        # Borrowed items straight from the tuple and the list: no incref/decref pair per field.
        for i in range(self.nfields):
            _dict_set_borrowed(d, PyTuple_GET_ITEM(fields, i), PyList_GET_ITEM(values, i))
        return d

    cdef void _unlink(self, Row row):
        if row.prev != NULL:
            (<Row>row.prev).next = row.next
        else:
            self.head = row.next
        if row.next != NULL:
            (<Row>row.next).prev = row.prev
        else:
            self.tail = row.prev
        row.prev = NULL
        row.next = NULL

    cdef void _append(self, Row row):
        row.prev = self.tail
        row.next = NULL
        if self.tail != NULL:
            (<Row>self.tail).next = <PyObject*>row
        else:
            self.head = <PyObject*>row
        self.tail = <PyObject*>row

    cdef long long _touch(self, Row row) except -1:
        cdef long long generation = self.db._bump()
        row.modified = generation
        self.generation = generation
        if self.tail != <PyObject*>row:
            self._unlink(row)
            self._append(row)
        return generation

    cdef int _mirror_touch(self, object ref, unsigned long long bit, long long generation) except -1:
        """Write ``generation`` changed the mirror ``bit`` of row ``ref``, if it exists:
        mark it for rebuilding and stamp it (once per write: the first touch keeps its place)."""
        cdef PyObject* p = PyDict_GetItemWithError(self.rows, ref)
        cdef Row row
        if p == NULL:
            return 0
        row = <Row>p
        row.stale |= bit
        if row.modified != generation:
            row.modified = generation
            self.generation = generation
            if self.tail != p:
                self._unlink(row)
                self._append(row)
        return 0

    cdef int _refresh(self, Row row) except -1:
        """Rebuilds the stale mirror sets of ``row`` (fresh lists: never changed in place)."""
        cdef Relation rel
        cdef PyObject* p
        cdef unsigned long long stale = row.stale
        for r in self.mirrors:
            rel = <Relation>r
            if stale & rel.bit:
                p = PyDict_GetItemWithError(<dict>rel.one.index_of[rel.ref_pos], row.ref)
                row.values[rel.set_pos] = _bucket_refs(<object>p if p != NULL else None)
        row.stale = 0
        return 0

    cdef int _index_add(self, dict index, Row row, object value) except -1:
        cdef PyObject* p = PyDict_GetItemWithError(index, value)
        if p == NULL:
            PyDict_SetItem(index, value, row)
        elif type(<object>p) is Row:
            PyDict_SetItem(index, value, {(<Row>p).ref: <object>p, row.ref: row})
        else:
            PyDict_SetItem(<dict>p, row.ref, row)
        return 0

    cdef int _index_del(self, dict index, Row row, object value) except -1:
        cdef PyObject* p = PyDict_GetItemWithError(index, value)
        cdef dict bucket
        if p == NULL:
            raise KeyError(value)           # the index is out of step: a bug
        if type(<object>p) is Row:
            PyDict_DelItem(index, value)
            return 0
        bucket = <dict>p
        PyDict_DelItem(bucket, row.ref)
        if len(bucket) == 1:
            for other in bucket.values():
                PyDict_SetItem(index, value, other)
        return 0

    # -- reads ----------------------------------------------------------------
    def __contains__(self, ref):
        return ref in self.rows

    def __len__(self):
        return len(self.rows)

    def get(self, ref):
        return self._record(self._row(ref))

    def get_field(self, ref, field):
        cdef Row row = self._row(ref)
        cdef Py_ssize_t pos = self._pos(field)
        if row.stale:
            self._refresh(row)
        return row.values[pos]

    def stamps(self, ref):
        cdef Row row = self._row(ref)
        return (row.created, row.modified)

    def refs(self):
        return list(self.rows)

    def all_records(self):
        cdef dict out = {}
        cdef Row row
        for ref, r in self.rows.items():
            row = <Row>r
            PyDict_SetItem(out, ref, self._record(row))
        return out

    def find(self, field, value):
        """Refs whose ``field`` equals ``value``, in table (insertion) order."""
        cdef Py_ssize_t pos = self._pos(field)
        cdef object index = self.index_of[pos]
        cdef PyObject* p
        cdef list out
        cdef Row row
        cdef long long last
        if index is not None:
            p = PyDict_GetItemWithError(<dict>index, value)
            if p == NULL:
                return []
            if type(<object>p) is Row:
                return [(<Row>p).ref]
            rows = list((<dict>p).values())
            last = -1
            for r in rows:
                if (<Row>r).created < last:
                    rows.sort(key=_row_created)
                    break
                last = (<Row>r).created
            return [(<Row>r).ref for r in rows]
        out = []
        for r in self.rows.values():
            row = <Row>r
            if row.stale:
                self._refresh(row)
            if PyObject_RichCompareBool(row.values[pos], value, Py_EQ):
                out.append(row.ref)
        return out

    # -- writes ---------------------------------------------------------------
    def add(self, ref, row):
        if not isinstance(ref, str):
            raise TypeError(f"ref must be a str, not {type(ref).__name__}")
        if ref in self.rows:
            raise ValueError(f"duplicate ref {ref!r} in table {self.name}")
        cdef list values = self.blank[:]
        cdef Py_ssize_t pos
        cdef tuple mirror_at = self.mirror_at
        for field, value in row.items():
            pos = self._pos(field)
            if mirror_at[pos] is None:          # mirrors are computed, never given
                values[pos] = value
        for pos in self.indexed_pos:
            hash(values[pos])
        cdef long long generation = self.db._bump()
        # The list is private to an untracked Row: it can take part in no cycle the
        # collector could free, so tracking it would only make every collection longer.
        PyObject_GC_UnTrack(<void*>values)
        cdef Row r = Row.__new__(Row)
        r.ref = ref
        r.values = values
        r.created = r.modified = generation
        r.stale = self.mirror_mask
        self.generation = generation
        PyDict_SetItem(self.rows, ref, r)
        self._append(r)
        for pos in self.indexed_pos:
            self._index_add(<dict>self.index_of[pos], r, values[pos])
        cdef Relation rel
        for pos in self.rel_pos:
            rel = <Relation>self.rel_of[pos]
            rel.many._mirror_touch(values[pos], rel.bit, generation)

    def remove(self, ref):
        cdef Row row = self._row(ref)
        cdef long long generation = self.db._bump()
        cdef Py_ssize_t pos
        self.generation = generation
        self._unlink(row)
        PyDict_DelItem(self.rows, ref)
        for pos in self.indexed_pos:
            self._index_del(<dict>self.index_of[pos], row, row.values[pos])
        self.tombs.append((generation, row.ref, row.created))
        if len(self.tombs) - self.tomb_head > self.max_deleted:
            self.forgotten = self.tombs[self.tomb_head][0]
            self.tombs[self.tomb_head] = None
            self.tomb_head += 1
            if self.tomb_head >= 1024 and self.tomb_head * 2 >= len(self.tombs):
                del self.tombs[:self.tomb_head]
                self.tomb_head = 0
        cdef Relation rel
        for pos in self.rel_pos:
            rel = <Relation>self.rel_of[pos]
            rel.many._mirror_touch(row.values[pos], rel.bit, generation)

    def restore(self, ref, row, created, modified):
        """Adds a saved row with its saved stamps, as db_ref's ``restore`` (read its doc)."""
        cdef long long c = PyNumber_Index(created)
        cdef long long m = PyNumber_Index(modified)
        if not isinstance(ref, str):
            raise TypeError(f"ref must be a str, not {type(ref).__name__}")
        if ref in self.rows:
            raise ValueError(f"duplicate ref {ref!r} in table {self.name}")
        if not 1 <= c <= m:
            raise ValueError(f"stamps must satisfy 1 <= created <= modified, not {c}, {m}")
        if m < self.generation:
            raise ValueError(f"modified {m} is older than table {self.name}'s latest change {self.generation}")
        cdef list values = self.blank[:]
        cdef Py_ssize_t pos
        cdef tuple mirror_at = self.mirror_at
        for field, value in row.items():
            pos = self._pos(field)
            if mirror_at[pos] is None:
                values[pos] = value
        for pos in self.indexed_pos:
            hash(values[pos])
        PyObject_GC_UnTrack(<void*>values)
        cdef Row r = Row.__new__(Row)
        r.ref = ref
        r.values = values
        r.created = c
        r.modified = m
        r.stale = self.mirror_mask
        self.generation = m
        if m > self.db._generation:
            self.db._generation = m
        PyDict_SetItem(self.rows, ref, r)
        self._append(r)
        for pos in self.indexed_pos:
            self._index_add(<dict>self.index_of[pos], r, values[pos])
        cdef Relation rel
        cdef PyObject* p
        for pos in self.rel_pos:            # targets' sets change; their saved stamps stay
            rel = <Relation>self.rel_of[pos]
            p = PyDict_GetItemWithError(rel.many.rows, values[pos])
            if p != NULL:
                (<Row>p).stale |= rel.bit

    def set_field(self, ref, field, value):
        cdef Row row = self._row(ref)
        cdef Py_ssize_t pos = self._pos(field)
        cdef object index = self.index_of[pos]
        cdef object old
        cdef Relation rel
        cdef long long generation
        if index is None:
            if self.mirror_at[pos] is None:     # a mirror is read-only: the value is ignored
                row.values[pos] = value
            self._touch(row)
            return
        hash(value)
        old = row.values[pos]
        if PyObject_RichCompareBool(old, value, Py_EQ):
            # Equal: the row keeps its place in the index and in the mirror set it feeds.
            row.values[pos] = value
            self._touch(row)
            return
        self._index_del(<dict>index, row, old)
        row.values[pos] = value
        self._index_add(<dict>index, row, value)
        generation = self._touch(row)
        if self.rel_of[pos] is not None:
            rel = <Relation>self.rel_of[pos]
            rel.many._mirror_touch(old, rel.bit, generation)
            rel.many._mirror_touch(value, rel.bit, generation)

    def update(self, ref, values):
        """Sets several fields with one generation bump; all or nothing.  An empty
        ``values`` still bumps the row (like ``event.inject``)."""
        cdef Row row = self._row(ref)
        cdef list positions = []
        cdef list new_values = []
        cdef list changed = None            # per item, if any field is indexed: does it change?
        cdef list moves = None              # (pos, old target) of changed ref fields
        cdef list rv = row.values
        cdef tuple index_of = self.index_of
        cdef Py_ssize_t pos, i, n
        cdef object index, old
        cdef Relation rel
        cdef long long generation
        for field, value in values.items():
            positions.append(self._pos(field))
            new_values.append(value)
        n = len(positions)
        for i in range(n):                  # checks first: nothing changes if one fails
            pos = positions[i]
            if index_of[pos] is not None:
                value = new_values[i]
                hash(value)
                if changed is None:
                    changed = [False] * n
                old = rv[pos]
                if not PyObject_RichCompareBool(old, value, Py_EQ):
                    changed[i] = True
                    if self.rel_of[pos] is not None:
                        if moves is None:
                            moves = []
                        moves.append((pos, old))
        for i in range(n):
            pos = positions[i]
            if self.mirror_mask and self.mirror_at[pos] is not None:
                continue                    # a mirror is read-only: the value is ignored
            value = new_values[i]
            if changed is not None and changed[i]:
                index = index_of[pos]
                self._index_del(<dict>index, row, rv[pos])
                rv[pos] = value
                self._index_add(<dict>index, row, value)
            else:
                rv[pos] = value
        generation = self._touch(row)
        if moves is not None:               # old then new target, in field order
            if len(moves) > 1:
                moves.sort(key=_move_pos)
            for move in moves:
                pos = (<tuple>move)[0]
                rel = <Relation>self.rel_of[pos]
                rel.many._mirror_touch((<tuple>move)[1], rel.bit, generation)
                rel.many._mirror_touch(rv[pos], rel.bit, generation)

    # -- events ---------------------------------------------------------------
    cdef int _changes(self, long long generation, list out) except -1:
        """Appends this table's changes after ``generation``, oldest first; changes of one
        write keep the order it touched the rows (its deletion, if any, first)."""
        cdef PyObject* p = self.tail
        cdef Row row
        cdef Py_ssize_t i, j
        cdef tuple tomb
        cdef list live = []                 # newest first
        cdef list dels = None               # newest first
        if self.generation <= generation:
            return 0
        while p != NULL:
            row = <Row>p
            if row.modified <= generation:
                break
            live.append(_change(self.name, row.ref, _ADD if row.created > generation else _MOD, row.modified))
            p = row.prev
        i = len(self.tombs) - 1
        while i >= self.tomb_head:
            tomb = <tuple>self.tombs[i]
            if <long long>tomb[0] <= generation:
                break
            if <long long>tomb[2] <= generation:
                if dels is None:
                    dels = []
                dels.append(_change(self.name, tomb[1], _DEL, tomb[0]))
            i -= 1
        i = len(live) - 1
        if dels is None:
            while i >= 0:
                out.append(live[i])
                i -= 1
            return 0
        j = len(dels) - 1
        while i >= 0 and j >= 0:
            if <long long>(<tuple>dels[j])[3] <= <long long>(<tuple>live[i])[3]:
                out.append(dels[j])
                j -= 1
            else:
                out.append(live[i])
                i -= 1
        while i >= 0:
            out.append(live[i])
            i -= 1
        while j >= 0:
            out.append(dels[j])
            j -= 1
        return 0


@cython.final
cdef class Database:
    """Generation-counted in-memory tables."""

    def __cinit__(self, max_deleted=DEFAULT_MAX_DELETED):
        cdef object m = PyNumber_Index(max_deleted)
        if m < 0:
            raise ValueError("max_deleted must be >= 0")
        self.max_deleted = m
        self._generation = 0
        self._tables = {}
        self._relations = []

    @property
    def generation(self):
        return self._generation

    def __repr__(self):
        return f"<Database generation={self._generation} tables={len(self._tables)}>"

    def create_table(self, name, fields, indexed=None):
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
        table = Table(self, name, fields, indexed, self.max_deleted)
        self._tables[name] = table
        return table

    def table(self, name):
        return self._tables[name]

    def tables(self):
        return list(self._tables)

    def table_generations(self):
        """``{table name: Table.generation}``, in table creation order."""
        cdef dict out = {}
        for name, t in self._tables.items():
            out[name] = (<Table>t).generation
        return out

    def relations(self):
        """``(one_table, ref_field, many_table, set_field)`` of every relation, in order added."""
        cdef Relation rel
        out = []
        for r in self._relations:
            rel = <Relation>r
            out.append((rel.one.name, rel.one.fields[rel.ref_pos], rel.many.name, rel.many.fields[rel.set_pos]))
        return out

    def add_relation(self, one_table, ref_field, many_table, set_field):
        """Keeps ``many_table[t][set_field]`` equal to the refs of the ``one_table`` rows whose
        ``ref_field`` is ``t`` (see db_ref's module doc).  ``KeyError`` for an unknown table
        or field; ``ValueError`` if a field already takes part in a relation, if
        ``set_field`` is indexed, if both are the same field, or if either table has rows."""
        cdef Table one = self._tables[one_table]
        cdef Table many = self._tables[many_table]
        cdef Py_ssize_t ref_pos = one._pos(ref_field)
        cdef Py_ssize_t set_pos = many._pos(set_field)
        cdef Relation rel
        cdef list l
        if one is many and ref_pos == set_pos:
            raise ValueError(f"{one_table}.{ref_field} cannot mirror itself")
        if one.rel_of[ref_pos] is not None or one.mirror_at[ref_pos] is not None:
            raise ValueError(f"{one_table}.{ref_field} already takes part in a relation")
        if many.mirror_at[set_pos] is not None or many.rel_of[set_pos] is not None:
            raise ValueError(f"{many_table}.{set_field} already takes part in a relation")
        if many.index_of[set_pos] is not None:
            raise ValueError(f"{many_table}.{set_field} is indexed; a mirror set cannot be")
        if one.rows or many.rows:
            raise ValueError("relations must be added before any row of either table")
        rel = Relation.__new__(Relation)
        rel.one = one
        rel.ref_pos = ref_pos
        rel.many = many
        rel.set_pos = set_pos
        # One stale bit per mirror of a table; from the 64th on they share the last bit.
        rel.bit = (<unsigned long long>1) << min(len(many.mirrors), 63)
        if one.index_of[ref_pos] is None:
            one.indexed = one.indexed + (ref_field,)
            l = list(one.index_of)
            l[ref_pos] = {}
            one.index_of = tuple(l)
            one.indexed_pos = one.indexed_pos + (ref_pos,)
        l = list(one.rel_of)
        l[ref_pos] = rel
        one.rel_of = tuple(l)
        one.rel_pos = tuple(sorted(one.rel_pos + (ref_pos,)))
        l = list(many.mirror_at)
        l[set_pos] = rel
        many.mirror_at = tuple(l)
        many.mirrors = many.mirrors + (rel,)
        many.mirror_mask |= rel.bit
        self._relations.append(rel)

    def end_restore(self, generation):
        """Sets the generation to the saved one, as db_ref's ``end_restore`` (read its doc)."""
        cdef long long g = PyNumber_Index(generation)
        if g < self._generation:
            raise ValueError(f"generation {g} is older than the newest stamp {self._generation}")
        self._generation = g
        for t in self._tables.values():
            if (<Table>t).forgotten < g:
                (<Table>t).forgotten = g

    def changes_since(self, generation, tables=None):
        """Rows added, modified or deleted after ``generation`` (see db_ref's module doc for
        the rules), ordered by generation; raises ``EventsLost`` if a deletion after
        ``generation`` has been forgotten, ``KeyError`` for an unknown table."""
        cdef object gi = PyNumber_Index(generation)
        cdef object g = gi
        cdef list selected
        cdef Table table
        cdef list out = []
        cdef long long since
        if tables is None:
            selected = list(self._tables.values())
        elif isinstance(tables, str):
            raise TypeError("tables must be an iterable of table names, not a str")
        else:
            selected = [self._tables[name] for name in dict.fromkeys(tables)]
        # Clamp to [-1, generation]: every stamp lies in [1, generation], so the
        # answer is the same, and the value fits a C long long.
        if g > self._generation:
            g = self._generation
        elif g < -1:
            g = -1
        since = g
        for t in selected:
            table = <Table>t
            # since < 1: no row was created at or before it, so no deletion can be owed
            if table.forgotten and 1 <= since < table.forgotten:
                raise EventsLost(table.name, gi, table.forgotten)
        cdef Py_ssize_t before
        cdef int contributors = 0
        for t in selected:
            before = len(out)
            (<Table>t)._changes(since, out)
            if len(out) > before:
                contributors += 1
        if contributors > 1:
            out.sort(key=_change_generation)     # stable: one write's changes stay by table
        return out
