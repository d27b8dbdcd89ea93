# Declarations of the compiled database core, for other Cython modules to cimport
# (``from xapi._fastdb cimport Database, Table, Row``).  See _fastdb.pyx.
from cpython.ref cimport PyObject


cdef class Database


cdef class Row:
    cdef object ref
    cdef list values              # one value per field, in Table.fields order
    cdef long long created        # generation of the add
    cdef long long modified       # generation of the latest change
    # Neighbours in the table's change list (oldest change -> newest).  Borrowed:
    # the table's ``rows`` dict owns every Row that is linked.
    cdef PyObject* prev
    cdef PyObject* next


cdef class Table:
    cdef readonly str name
    cdef readonly tuple fields
    cdef readonly tuple indexed
    cdef Database db
    cdef Py_ssize_t nfields
    cdef dict positions           # field -> position in Row.values
    cdef list blank               # [None] * nfields
    cdef dict template            # dict.fromkeys(fields): get() copies it, then fills it
    cdef tuple index_of           # per position: None, or the index dict value -> Row | {ref: Row}
    cdef tuple indexed_pos        # positions of the indexed fields
    cdef dict rows                # ref -> Row, insertion order
    cdef PyObject* head           # oldest change (borrowed)
    cdef PyObject* tail           # newest change (borrowed)
    cdef list tombs               # (deleted, ref, created) in deletion order, from tomb_head on
    cdef Py_ssize_t tomb_head
    cdef Py_ssize_t max_deleted
    cdef long long forgotten      # deletion generation of the newest forgotten tombstone (0: none)

    cdef Row _row(self, object ref)
    cdef Py_ssize_t _pos(self, object field) except -1
    cdef dict _record(self, Row row)
    cdef void _unlink(self, Row row)
    cdef void _append(self, Row row)
    cdef int _touch(self, Row row) except -1
    cdef int _index_add(self, dict index, Row row, object value) except -1
    cdef int _index_del(self, dict index, Row row, object value) except -1
    cdef int _changes(self, long long generation, list out) except -1


cdef class Database:
    cdef long long _generation
    cdef dict _tables
    cdef readonly Py_ssize_t max_deleted

    cdef inline long long _bump(self):
        self._generation += 1
        return self._generation
