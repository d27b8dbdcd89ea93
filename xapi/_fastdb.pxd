# Declarations of the compiled database core, for other Cython modules to cimport
# (``from xapi._fastdb cimport Database, Table, Row``).  See _fastdb.pyx.
#
# Reading ``Row.values`` directly: call ``Table._refresh(row)`` first when ``row.stale``
# is non-zero, or the mirror sets may be out of date (or None).
from cpython.ref cimport PyObject


cdef class Database
cdef class Table


cdef class Row:
    cdef object ref
    cdef list values              # one value per field, in Table.fields order
    cdef long long created        # generation of the add
    cdef long long modified       # generation of the latest change
    # Neighbours in the table's change list (oldest change -> newest).  Borrowed:
    # the table's ``rows`` dict owns every Row that is linked.
    cdef PyObject* prev
    cdef PyObject* next
    cdef unsigned long long stale # Relation.bit of each mirror set to rebuild before a read


cdef class Relation:
    cdef Table one                # rows of ``one`` point with field ``ref_pos`` ...
    cdef Py_ssize_t ref_pos
    cdef Table many               # ... at rows of ``many``, whose field ``set_pos`` lists them
    cdef Py_ssize_t set_pos
    cdef unsigned long long bit   # this mirror's bit in Row.stale of ``many``'s rows


cdef class Table:
    cdef readonly str name
    cdef readonly tuple fields
    cdef readonly tuple indexed
    cdef readonly long long generation   # generation of the latest change in this table (0: none)
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
    cdef tuple rel_of             # per position: None, or the Relation this ref field feeds
    cdef tuple rel_pos            # positions of the ref fields that feed a relation, ascending
    cdef tuple mirror_at          # per position: None, or the Relation this set field mirrors
    cdef tuple mirrors            # the Relations mirrored in this table
    cdef unsigned long long mirror_mask   # every bit of ``mirrors``: a new row starts stale

    cdef Row _row(self, object ref)
    cdef Py_ssize_t _pos(self, object field) except -1
    cdef dict _record(self, Row row)
    cdef void _unlink(self, Row row)
    cdef void _append(self, Row row)
    cdef long long _touch(self, Row row) except -1
    cdef int _mirror_touch(self, object ref, unsigned long long bit, long long generation) except -1
    cdef int _refresh(self, Row row) except -1
    cdef int _index_add(self, dict index, Row row, object value) except -1
    cdef int _index_del(self, dict index, Row row, object value) except -1
    cdef int _changes(self, long long generation, list out) except -1


cdef class Database:
    cdef long long _generation
    cdef dict _tables
    cdef list _relations
    cdef readonly Py_ssize_t max_deleted

    cdef inline long long _bump(self):
        self._generation += 1
        return self._generation
