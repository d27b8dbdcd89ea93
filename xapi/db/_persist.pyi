"""Type stub of the compiled state.db reader and row encoder; xapi/db/persist.py is the documented reference."""

class Fallback(Exception):
    """The file holds something this reader leaves to the reference (``persist.read_reference``)."""

def read(path: str) -> tuple[dict[str | None, str | None], list[tuple[str, str, int, int, dict[str, object]]]]:
    """As ``persist.read_reference``, for the files xapi and the reference write; ``Fallback`` otherwise."""

def encode_rows(cls: str, rows: list[tuple[str, int, int, dict[str, object]]]) -> bytes:
    """The ``<row .../>`` lines of (ref, created, modified, record) rows, as the reference writes them."""

def restore_rows(db: object, rows: list[tuple[str, str, int, int, dict[str, object]]]) -> bool:
    """As ``persist.restore_rows_reference``; False (nothing done) if a stamp does not fit in 63 bits."""
