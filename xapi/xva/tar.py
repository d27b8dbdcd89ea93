"""The tar layer of an XVA, sans-IO: member headers out, a push parser in.

xapi writes ustar headers (ocaml-tar) with regular-file members only; an archive ends with two zero
blocks. The parser takes bytes as they come (`feed`) and hands back whole members (an XVA's members
are small: ova.xml, 1 MiB chunks, checksums), holding at most one member plus what was fed.
"""
from __future__ import annotations

BLOCK = 512
END = bytes(2 * BLOCK)
MAX_MEMBER = 64 << 20           # larger members are refused (an XVA chunk is 1 MiB)


class TarError(Exception):
    """Not a tar stream we can read (bad header checksum, oversize member...)."""


class PrematureEof(TarError):
    """The stream ended inside a member or before the end marker."""


def padding(size: int) -> int:
    return -size % BLOCK


def _octal(value: int, width: int) -> bytes:
    """A numeric field: octal digits, NUL-terminated; base-256 when it doesn't fit."""
    digits = b"%o" % value
    if len(digits) < width:
        return digits.rjust(width - 1, b"0") + b"\0"
    return bytes([0x80]) + value.to_bytes(width - 1, "big")


def header(name: str, size: int, mtime: int = 0, mode: int = 0o644) -> bytes:
    """The 512-byte ustar header of a regular file."""
    raw = name.encode("utf-8")
    prefix = b""
    if len(raw) > 100:
        cut = raw.rfind(b"/", 0, 156)
        if cut <= 0 or len(raw) - cut - 1 > 100:
            raise TarError(f"name too long for ustar: {name}")
        prefix, raw = raw[:cut], raw[cut + 1:]
    h = bytearray(BLOCK)
    h[0:len(raw)] = raw
    h[100:108] = _octal(mode, 8)
    h[108:116] = _octal(0, 8)
    h[116:124] = _octal(0, 8)
    h[124:136] = _octal(size, 12)
    h[136:148] = _octal(mtime, 12)
    h[148:156] = b" " * 8
    h[156:157] = b"0"
    h[257:263] = b"ustar\0"
    h[263:265] = b"00"
    h[345:345 + len(prefix)] = prefix
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def member(name: str, data, mtime: int = 0) -> list:
    """The pieces of one whole member: header, data, padding."""
    out = [header(name, len(data), mtime), data]
    pad = padding(len(data))
    if pad:
        out.append(bytes(pad))
    return out


def _number(field: bytes) -> int:
    if field and field[0] & 0x80:
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarError(f"bad number in a tar header: {field!r}") from None


def parse_header(h) -> tuple[str, int, bytes] | None:
    """(name, size, type flag) of a header block; None for a zero block (the end)."""
    h = bytes(h)
    if not any(h):
        return None
    stored = _number(h[148:156])
    computed = sum(h[:148]) + 8 * 32 + sum(h[156:])
    if stored != computed:
        raise TarError("tar header checksum mismatch")
    name = h[0:100].split(b"\0", 1)[0]
    if h[257:262] == b"ustar":
        prefix = h[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "replace"), _number(h[124:136]), h[156:157]


class Reader:
    """Push parser: feed(data) returns the members completed by it, as (name, bytes); `done` once
    the end marker (or the first zero block) has been read; finish() at the end of the input raises
    PrematureEof unless the archive was complete (or stopped at a member boundary when
    `allow_missing_end`)."""

    def __init__(self, max_member: int = MAX_MEMBER) -> None:
        self.buf = bytearray()
        self.max_member = max_member
        self.done = False
        self.in_member = False
        self._want: tuple[str, int] | None = None       # the member whose data is awaited
        self._long_name: str | None = None

    def feed(self, data) -> list:
        if self.done:
            return []
        self.buf += data
        out = []
        buf = self.buf
        while not self.done:
            if self._want is None:
                if len(buf) < BLOCK:
                    break
                with memoryview(buf) as mv:
                    parsed = parse_header(mv[:BLOCK])
                del buf[:BLOCK]
                if parsed is None:
                    self.done = True
                    buf.clear()
                    break
                name, size, kind = parsed
                if size > self.max_member:
                    raise TarError(f"member {name} too large ({size} bytes)")
                if self._long_name is not None and kind not in (b"L", b"x", b"g"):
                    name, self._long_name = self._long_name, None
                self._want = (name, size) if kind not in (b"x", b"g", b"L") else (f"\0{kind.decode()}", size)
                self.in_member = True
            name, size = self._want
            total = size + padding(size)
            if len(buf) < total:
                break
            with memoryview(buf) as mv:         # one copy (a slice of a bytearray would be two)
                data_out = bytes(mv[:size])
            del buf[:total]
            self._want = None
            self.in_member = False
            if name == "\0L":                           # GNU long name of the next member
                self._long_name = data_out.split(b"\0", 1)[0].decode("utf-8", "replace")
            elif name.startswith("\0"):                 # pax headers: nothing an XVA needs
                pass
            else:
                out.append((name, data_out))
        return out

    def finish(self) -> None:
        if not self.done:
            raise PrematureEof("the archive ended early")
