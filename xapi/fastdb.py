"""The in-memory database core: the compiled ``xapi._fastdb``, or with ``XAPI_PURE=1``
its pure-Python reference ``xapi.db_ref`` (same behaviour; see db_ref's module doc).

Import from here, not from either implementation.
"""
from xapi.compiled import load
from xapi.db_errors import DEFAULT_MAX_DELETED, Change, EventsLost

_impl = load("xapi._fastdb", "xapi.db_ref")

Database = _impl.Database
Table = _impl.Table

__all__ = ["Database", "Table", "Change", "EventsLost", "DEFAULT_MAX_DELETED"]
