"""Definitions shared by the compiled database core (``xapi._fastdb``) and its
pure-Python reference (``xapi.db_ref``), so both raise and return the same types.
"""
from typing import NamedTuple

#: Deletions remembered per table, so that ``changes_since`` can report ``del``.
DEFAULT_MAX_DELETED = 100_000


class Change(NamedTuple):
    """One entry of ``Database.changes_since``: what happened to a row after a generation."""
    table: str
    ref: str
    op: str          # "add" | "mod" | "del"
    generation: int  # generation of the row's latest change (of the deletion for "del")


class EventsLost(Exception):
    """``changes_since(generation)`` cannot be answered: a deletion made after
    ``generation`` has been forgotten (the table keeps at most ``max_deleted``
    tombstones).  The event layer answers EVENTS_LOST; the client re-reads everything.

    ``table`` is the table that forgot, ``generation`` the one asked for and
    ``oldest`` the lowest generation that can still be asked about for that table.
    """

    def __init__(self, table: str, generation: int, oldest: int):
        super().__init__(table, generation, oldest)
        self.table = table
        self.generation = generation
        self.oldest = oldest

    def __str__(self) -> str:
        return (f"changes of table {self.table!r} since generation {self.generation} are lost; "
                f"the oldest generation still answerable is {self.oldest}")
