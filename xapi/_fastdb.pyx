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
* tombstones are tuples in a list consumed from ``tomb_head``, compacted now and then.

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


def _row_created(Row row):
    return row.created


@cython.final
@cython.freelist(64)
cdef class Row:
    """One live row (internal; never handed out)."""
    pass


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
        cdef dict d = PyDict_Copy(self.template)
        cdef tuple fields = self.fields
        cdef list values = row.values
        cdef Py_ssize_t i
        for i in range(self.nfields):
            PyDict_SetItem(d, fields[i], values[i])
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

    cdef int _touch(self, Row row) except -1:
        row.modified = self.db._bump()
        if self.tail != <PyObject*>row:
            self._unlink(row)
            self._append(row)
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
        return row.values[self._pos(field)]

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
        for field, value in row.items():
            values[self._pos(field)] = value
        for pos in self.indexed_pos:
            hash(values[pos])
        cdef Row r = Row.__new__(Row)
        r.ref = ref
        r.values = values
        r.created = r.modified = self.db._bump()
        PyDict_SetItem(self.rows, ref, r)
        self._append(r)
        for pos in self.indexed_pos:
            self._index_add(<dict>self.index_of[pos], r, values[pos])

    def remove(self, ref):
        cdef Row row = self._row(ref)
        cdef long long generation = self.db._bump()
        cdef Py_ssize_t pos
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

    def set_field(self, ref, field, value):
        cdef Row row = self._row(ref)
        cdef Py_ssize_t pos = self._pos(field)
        cdef object index = self.index_of[pos]
        cdef object old
        if index is not None:
            hash(value)
            old = row.values[pos]
            self._index_del(<dict>index, row, old)
            row.values[pos] = value
            self._index_add(<dict>index, row, value)
        else:
            row.values[pos] = value
        self._touch(row)

    def update(self, ref, values):
        """Sets several fields with one generation bump; all or nothing.  An empty
        ``values`` still bumps the row (like ``event.inject``)."""
        cdef Row row = self._row(ref)
        cdef list positions = []
        cdef list new_values = []
        cdef Py_ssize_t pos, i
        cdef object index
        for field, value in values.items():
            positions.append(self._pos(field))
            new_values.append(value)
        for i in range(len(positions)):
            if self.index_of[<Py_ssize_t>positions[i]] is not None:
                hash(new_values[i])
        for i in range(len(positions)):
            pos = positions[i]
            value = new_values[i]
            index = self.index_of[pos]
            if index is not None:
                self._index_del(<dict>index, row, row.values[pos])
                row.values[pos] = value
                self._index_add(<dict>index, row, value)
            else:
                row.values[pos] = value
        self._touch(row)

    # -- events ---------------------------------------------------------------
    cdef int _changes(self, long long generation, list out) except -1:
        cdef PyObject* p = self.tail
        cdef Row row
        cdef Py_ssize_t i
        cdef tuple tomb
        while p != NULL:
            row = <Row>p
            if row.modified <= generation:
                break
            out.append(_change(self.name, row.ref, _ADD if row.created > generation else _MOD, row.modified))
            p = row.prev
        i = len(self.tombs) - 1
        while i >= self.tomb_head:
            tomb = <tuple>self.tombs[i]
            if <long long>tomb[0] <= generation:
                break
            if <long long>tomb[2] <= generation:
                out.append(_change(self.name, tomb[1], _DEL, tomb[0]))
            i -= 1
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
            if table.forgotten and since < table.forgotten:
                raise EventsLost(table.name, gi, table.forgotten)
        for t in selected:
            (<Table>t)._changes(since, out)
        if len(out) > 1:
            out.sort(key=_change_generation)
        return out
