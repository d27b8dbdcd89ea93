"""Type stub of the compiled state.db reader; xapi/db/persist.py is the documented reference."""

class Fallback(Exception):
    """The file holds something this reader leaves to the reference (``persist.read_reference``)."""

def read(path: str) -> tuple[dict[str | None, str | None], list[tuple[str, str, int, int, dict[str, object]]]]:
    """As ``persist.read_reference``, for the files xapi and the reference write; ``Fallback`` otherwise."""
