"""Disk data in an XVA, sans-IO (stream_vdi.ml).

Each disk is cut into 1 MiB chunks named `<prefix>/<8-digit index>`, each followed by its checksum
member; the disks come in the lexicographic order of their prefixes (`Ref:10` before `Ref:2`). An
all-zero chunk is left out, except the first and the last, which are always there (the reader
learns the chunk size from the first and knows a disk is complete when the last arrives).

Reading: the chunk names must rise; a gap is that many zero chunks; the checksum member after a
chunk is checked (unless `force`) with the algorithm its extension names (.checksum SHA-1, .xxhash
XXH64; anything else fails the import). Exports with export_vsn 0 have no inline checksums.
"""
from __future__ import annotations

from dataclasses import dataclass

from xapi.xva import checksum, tar

CHUNK = 1 << 20


# -- writing ----------------------------------------------------------------------------------------
def chunk_name(prefix: str, index: int) -> str:
    return "%s/%08d" % (prefix, index)


def count(size: int) -> int:
    return -(-size // CHUNK)


def keep(index: int, nchunks: int, is_zero: bool) -> bool:
    """Whether chunk `index` of `nchunks` goes into the archive."""
    return index == 0 or index == nchunks - 1 or not is_zero


def encode_chunk(prefix: str, index: int, data, digest: str, extension: str = checksum.SHA1) -> list:
    """The tar pieces of a chunk and its checksum member."""
    name = chunk_name(prefix, index)
    return tar.member(name, data) + tar.member(name + extension, digest.encode("ascii"))


def encode_batch(prefix: str, first_index: int, nchunks: int, data, is_zero) -> tuple[bytes, int]:
    """The archive bytes of the chunks in `data` (consecutive, starting at chunk `first_index` of a
    disk of `nchunks` chunks): (bytes, how many chunks were kept). `is_zero(view)` tells a zero chunk.
    CPU work (hashing): run it off the event loop."""
    mv = memoryview(data)
    pieces = []
    kept = 0
    for k, off in enumerate(range(0, len(mv), CHUNK)):
        piece = mv[off:off + CHUNK]
        i = first_index + k
        if keep(i, nchunks, is_zero(piece)):
            pieces += encode_chunk(prefix, i, piece, checksum.sha1_hex(piece))
            kept += 1
    return b"".join(pieces), kept


# -- reading ----------------------------------------------------------------------------------------
class XvaFormatError(Exception):
    """The archive breaks the format: `code` and `params` are xapi's error for it."""

    def __init__(self, code: str, *params: str) -> None:
        super().__init__(code, *params)
        self.code = code
        self.params = params


def invalid(msg: str = "Invalid XVA file") -> XvaFormatError:
    # xapi raises Stream_vdi.Failure, which reaches the task as IMPORT_ERROR_GENERIC
    return XvaFormatError("IMPORT_ERROR_GENERIC", f'Stream_vdi.Failure("{msg}")')


@dataclass
class Write:
    """Data for disk number `disk` at `offset`, with the checksum to check it against (None: no
    check) under `extension`; `name` is the chunk's name."""
    disk: int
    offset: int
    data: bytes
    name: str
    extension: str | None
    expected: str | None


def verify(w: Write) -> str | None:
    """None when the chunk's checksum is right (or unchecked), else xapi's message for it."""
    if w.extension is None or w.expected is None:
        return None
    got = checksum.compute(w.extension, w.data)
    if got != w.expected:
        return (f"Block {w.name} checksum failed: original = {w.expected}; recomputed = {got}")
    return None


class Receiver:
    """Takes the archive's members after ova.xml, in order, for the disks [(prefix, size)] (sorted
    here as xapi sorts them); file() returns the Writes a member completes. `done` once every disk
    has all its bytes."""

    def __init__(self, disks: list, inline_checksums: bool) -> None:
        self.order = sorted(range(len(disks)), key=lambda i: disks[i][0])
        self.disks = disks
        self.inline = inline_checksums
        self.pos = 0                    # index into order
        self.offset = 0                 # bytes placed of the current disk
        self.last_suffix = -1
        self.chunk_len = -1             # the first chunk's length: the size of a skipped chunk
        self.pending: tuple | None = None   # (name, data, offset) awaiting its checksum
        self._skip_empty()

    @property
    def done(self) -> bool:
        return self.pos >= len(self.order) and self.pending is None

    def current(self) -> int:
        return self.order[self.pos]

    def _skip_empty(self) -> None:
        while self.pos < len(self.order) and self.disks[self.order[self.pos]][1] <= self.offset:
            self.pos += 1
            self.offset = 0
            self.last_suffix = -1

    def file(self, name: str, data: bytes) -> list:
        if self.pending is not None:
            return self._checksum(name, data)
        if self.pos >= len(self.order):
            return []
        prefix, size = self.disks[self.current()]
        if not name.startswith(prefix + "/"):
            raise invalid()
        suffix = name[len(prefix) + 1:]
        if not suffix.isdigit() or int(suffix) <= self.last_suffix:
            raise invalid()
        if self.chunk_len < 0:
            self.chunk_len = len(data)
        skipped = (int(suffix) - self.last_suffix - 1) * self.chunk_len
        offset = self.offset + skipped
        if offset + len(data) > size:
            raise invalid(f"chunk {name} lies past the end of the disk")
        self.last_suffix = int(suffix)
        self.offset = offset + len(data)
        if self.inline:
            self.pending = (name, data, offset)
            return []
        write = Write(self.current(), offset, data, name, None, None)
        self._skip_empty()
        return [write]

    def _checksum(self, name: str, data: bytes) -> list:
        chunk, payload, offset = self.pending
        ext = checksum.extension_of(name)
        if ext not in checksum.EXTENSIONS:
            # stream_vdi.ml's message for it
            raise XvaFormatError("IMPORT_ERROR_GENERIC",
                                 f'Stream_vdi.Failure("Found unsupported checksum file: {name}")')
        if name[:-len(ext)] != chunk:
            raise XvaFormatError("IMPORT_ERROR_GENERIC", "Not_found")
        self.pending = None
        write = Write(self.current(), offset, payload, chunk, ext, data.decode("ascii", "replace"))
        self._skip_empty()
        return [write]
