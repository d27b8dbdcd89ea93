"""VHD images: dynamic and differencing disks, as blktap's ``vhd-util`` writes them.

The per-block work (checksums, sector bitmaps, BAT lookups, merging sectors of a
chain) is the compiled ``xapi.sm.vhd._vhd``, or with ``XAPI_PURE=1`` its pure-Python
reference ``xapi.sm.vhd.vhd_ref``; this module does the layout and the file I/O.

Layout of what :func:`create` writes (all fields big-endian, 512-byte sectors;
the same as blktap's libvhd, which is also what ``qemu-img -f vpc`` reads):

* 0: a copy of the footer; 512: the dynamic header (``cxsparse``, 1024 bytes);
* 1536: the BAT, one u32 sector offset per 2 MiB block, ``0xFFFFFFFF`` when the
  block is not allocated, padded to a sector;
* then blktap's ``tdbatmap`` header (one sector) and batmap (a bit per block, set
  when the block is fully allocated; kept up to date);
* for a differencing disk, three parent locators, each padded to a sector:
  ``MacX`` (UTF-8 ``file://./parent.vhd``), ``W2ku`` and ``W2ru`` (UTF-16LE
  ``.\\parent.vhd``), all relative to the child, ``data_space`` in bytes as
  blktap writes it;
* blocks, each a 512-byte sector bitmap (MSB first; a clear bit reads from the
  parent, or zeros at the root) and 4096 sectors, allocated at the end of the
  file with the data region 4 KiB-aligned; the footer follows the last one.

The footer: cookie ``conectix``, features 2, version 1.0, creator ``tap\\0``
version 1.3, creator OS 0 (as vhd-util), original and current size, CHS geometry
computed as the VHD spec (and vhd-util) do, UUID, and byte 85 the ``hidden``
flag blktap adds.  Timestamps are seconds since 2000-01-01 UTC.  qemu's ``vpc``
driver takes the size from ``current_size`` for creator ``tap\\0``.

Sizes: :func:`create` rounds the virtual size up to a whole 2 MiB block, as
vhd-util does; at most 2040 GiB.  The BAT has room for ``max_size`` (vhd-util's
``-S``, default the virtual size): :func:`resize` within it only rewrites the
footers; beyond it the BAT (and batmap) are moved to the end of the file, with
room for the new size, and the old ones are zeroed.

Reads go through the chain (a sector not in a child comes from its parent,
zeros when no layer has it); writes allocate blocks as needed, write the data,
then the bitmap (and batmap), and move the footer when the file grows.  Other
writers' images (qemu's) are read whatever their block size; fixed VHDs are read
and written in place.
"""
import os
import stat
import struct
import time
import uuid as _uuid

from xapi.compiled import load

_core = load("xapi.sm.vhd._vhd", "xapi.sm.vhd.vhd_ref")

IMPLEMENTATION = _core.__name__

SECTOR = 512
BLOCK_SIZE = 2 * 1024 * 1024
MAX_VIRTUAL_SIZE = 2040 * 1024 ** 3          # qemu's and SM's limit
MAX_CHAIN = 64
UNUSED = 0xFFFFFFFF
VHD_EPOCH = 946684800                        # 2000-01-01T00:00:00Z

TYPE_FIXED, TYPE_DYNAMIC, TYPE_DIFF = 2, 3, 4
TYPE_NAMES = {TYPE_FIXED: "fixed", TYPE_DYNAMIC: "dynamic", TYPE_DIFF: "differencing"}

FOOTER_COOKIE = b"conectix"
HEADER_COOKIE = b"cxsparse"
BATMAP_COOKIE = b"tdbatmap"
CREATOR_APP = b"tap\0"
CREATOR_VERSION = 0x00010003                 # blktap's VHD_CURRENT_VERSION (1.3)
BATMAP_VERSION = 0x00010002
PLAT_MACX, PLAT_W2KU, PLAT_W2RU = 0x4D616358, 0x57326B75, 0x57327275
PLATFORM_CODES = {0, 0x57693272, 0x5769326B, PLAT_W2RU, PLAT_W2KU, 0x4D616320, PLAT_MACX}

_FOOTER = struct.Struct(">8sIIQI4sIIQQHBBII16sBB426x")
_HEADER = struct.Struct(">8sQQIIII16sII512s")        # then 8 locators and 256 reserved bytes
_LOCATOR = struct.Struct(">IIIIQ")
_BATMAP_HEADER = struct.Struct(">8sQIIIB")
_LOCATORS_AT = _HEADER.size                          # 576
FOOTER_CHECKSUM_AT = 64
HEADER_CHECKSUM_AT = 36

__all__ = [
    "IMPLEMENTATION", "VHDError", "VHD", "BLOCK_SIZE", "MAX_VIRTUAL_SIZE", "create", "open", "snapshot",
    "coalesce", "check", "query", "resize", "set_hidden", "set_parent", "read_all", "export_raw", "import_raw",
    "chs",
]


class VHDError(Exception):
    """A VHD that cannot be read or changed as asked."""


# --------------------------------------------------------------------------- helpers

def _pad(n: int, to: int = SECTOR) -> int:
    return -(-n // to) * to


def vhd_time(unix: float | None = None) -> int:
    """Seconds since 2000-01-01 UTC, as a u32."""
    return (int(time.time() if unix is None else unix) - VHD_EPOCH) & 0xFFFFFFFF


def chs(size: int) -> tuple[int, int, int]:
    """(cylinders, heads, sectors per track) of a disk of ``size`` bytes, as in the VHD spec."""
    secs = max(1, -(-size // SECTOR))
    secs = min(secs, 65535 * 16 * 255)
    if secs >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = secs // spt
    else:
        spt = 17
        cth = secs // spt
        heads = max(4, (cth + 1023) // 1024)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = secs // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = secs // spt
    return cth // heads, heads, spt


def _pread(fd: int, n: int, off: int) -> bytes:
    data = os.pread(fd, n, off)
    while len(data) < n:                      # short reads only at EOF in practice
        more = os.pread(fd, n - len(data), off + len(data))
        if not more:
            break
        data += more
    return data


def _preadinto(fd: int, mv: memoryview, off: int) -> int:
    """Fills ``mv`` from ``off``; returns the bytes read (fewer only at EOF)."""
    got = 0
    while got < len(mv):
        n = os.preadv(fd, [mv[got:]], off + got)
        if not n:
            break
        got += n
    return got


def _pwrite(fd: int, data, off: int) -> None:
    mv = memoryview(data).cast("B")
    while len(mv):
        n = os.pwrite(fd, mv, off)
        mv = mv[n:]
        off += n


class Footer:
    __slots__ = ("cookie", "features", "version", "data_offset", "timestamp", "creator_app",
                 "creator_version", "creator_os", "orig_size", "current_size", "cylinders", "heads",
                 "sectors_per_track", "disk_type", "checksum", "uuid", "saved", "hidden")

    @classmethod
    def unpack(cls, buf: bytes) -> "Footer":
        f = cls()
        for name, value in zip(cls.__slots__, _FOOTER.unpack_from(buf)):
            setattr(f, name, value)
        return f

    def pack(self) -> bytes:
        buf = bytearray(_FOOTER.pack(*(0 if n == "checksum" else getattr(self, n) for n in self.__slots__)))
        self.checksum = _core.checksum(buf)
        struct.pack_into(">I", buf, FOOTER_CHECKSUM_AT, self.checksum)
        return bytes(buf)


class Header:
    __slots__ = ("cookie", "data_offset", "table_offset", "version", "max_bat_size", "block_size",
                 "checksum", "parent_uuid", "parent_timestamp", "reserved", "parent_name", "locators")

    @classmethod
    def unpack(cls, buf: bytes) -> "Header":
        h = cls()
        for name, value in zip(cls.__slots__, _HEADER.unpack_from(buf)):
            setattr(h, name, value)
        h.locators = [list(_LOCATOR.unpack_from(buf, _LOCATORS_AT + 24 * i)) for i in range(8)]
        return h

    def pack(self) -> bytes:
        buf = bytearray(1024)
        _HEADER.pack_into(buf, 0, *(0 if n == "checksum" else getattr(self, n) for n in self.__slots__[:-1]))
        for i, loc in enumerate(self.locators):
            _LOCATOR.pack_into(buf, _LOCATORS_AT + 24 * i, *loc)
        self.checksum = _core.checksum(buf)
        struct.pack_into(">I", buf, HEADER_CHECKSUM_AT, self.checksum)
        return bytes(buf)


def _footer_ok(buf: bytes) -> str | None:
    """None when ``buf`` is a footer with a good cookie and checksum, else what is wrong."""
    if len(buf) < SECTOR:
        return "short read"
    if buf[:8] != FOOTER_COOKIE:
        return "bad cookie %r" % bytes(buf[:8])
    stored = struct.unpack_from(">I", buf, FOOTER_CHECKSUM_AT)[0]
    computed = _core.checksum(buf[:SECTOR], FOOTER_CHECKSUM_AT)
    if stored != computed:
        return "bad checksum 0x%08x (computed 0x%08x)" % (stored, computed)
    return None


def _header_ok(buf: bytes) -> str | None:
    if len(buf) < 1024:
        return "short read"
    if buf[:8] != HEADER_COOKIE:
        return "bad cookie %r" % bytes(buf[:8])
    stored = struct.unpack_from(">I", buf, HEADER_CHECKSUM_AT)[0]
    computed = _core.checksum(buf[:1024], HEADER_CHECKSUM_AT)
    if stored != computed:
        return "bad checksum 0x%08x (computed 0x%08x)" % (stored, computed)
    return None


def _locator_size(loc) -> int:
    """Bytes a locator's data takes (``data_space`` is in sectors per the spec, bytes per blktap)."""
    space = loc[1]
    if space < SECTOR:
        return space * SECTOR
    return space if space % SECTOR == 0 else 0


def _relative_parent(child: str, parent: str) -> str:
    rel = os.path.relpath(os.path.realpath(parent), os.path.dirname(os.path.realpath(child)))
    return rel if rel.startswith("../") else "./" + rel


def _encode_locator(code: int, rel: str) -> bytes:
    if code == PLAT_MACX:
        return ("file://" + rel).encode("utf-8")
    name = rel[2:] if rel.startswith("./") else rel
    return (".\\" + name).replace("/", "\\").encode("utf-16-le")


def _decode_locator(code: int, raw: bytes) -> str | None:
    try:
        if code == PLAT_MACX:
            text = raw.decode("utf-8")
            return text[len("file://"):] if text.startswith("file://") else None
        if code in (PLAT_W2KU, PLAT_W2RU):
            text = raw.decode("utf-16-le").replace("\\", "/")
            return text[2:] if text[:2].lower() == "c:" else text
    except UnicodeDecodeError:
        return None
    return None


# --------------------------------------------------------------------------- the image

class VHD:
    """An open VHD.  Use :func:`open`; close it (or use ``with``) when done."""

    def __init__(self, path: str, *, readonly: bool = False, _depth: int = 0):
        self.path = os.path.abspath(path)
        self.readonly = readonly
        self._depth = _depth
        self._parent_vhd: VHD | None = None
        self._bitmaps: dict[int, bytearray] = {}
        self._batmap: bytearray | None = None
        self._staged = False                  # block_target gave out a place past the footer
        self._fd = os.open(self.path, os.O_RDONLY if readonly else os.O_RDWR)
        try:
            self._load()
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise

    # ---------------------------------------------------------------- loading
    def _load(self) -> None:
        fd = self._fd
        size = os.fstat(fd).st_size
        if size < SECTOR:
            raise VHDError(f"{self.path}: too small to be a VHD")
        buf = _pread(fd, SECTOR, size - SECTOR)
        problem = _footer_ok(buf)
        if problem:                           # as blktap: fall back to the copy at the start
            copy = _pread(fd, SECTOR, 0)
            if _footer_ok(copy):
                raise VHDError(f"{self.path}: no valid footer ({problem})")
            buf = copy
        self.footer = f = Footer.unpack(buf)
        if f.disk_type not in TYPE_NAMES:
            raise VHDError(f"{self.path}: unsupported disk type {f.disk_type}")
        self.disk_type = f.disk_type
        self.header = None
        self.parent = None
        if f.disk_type == TYPE_FIXED:
            self._end = f.current_size
            return
        hbuf = _pread(fd, 1024, f.data_offset)
        problem = _header_ok(hbuf)
        if problem:
            raise VHDError(f"{self.path}: invalid dynamic header ({problem})")
        self.header = h = Header.unpack(hbuf)
        bs = h.block_size
        if bs < SECTOR or bs & (bs - 1):
            raise VHDError(f"{self.path}: invalid block size {bs}")
        self.block_size = bs
        self.spb = bs // SECTOR
        self.bm_bytes = _pad(max(1, self.spb // 8))
        self.bm_secs = self.bm_bytes // SECTOR
        self.entries = h.max_bat_size
        self._bat = bytearray(_pread(fd, _pad(4 * self.entries), h.table_offset))
        if len(self._bat) < 4 * self.entries:
            raise VHDError(f"{self.path}: BAT runs past the end of the file")
        self._load_batmap()
        self.parent = self._find_parent() if f.disk_type == TYPE_DIFF else None
        self._end = self._end_of_data()

    def _has_batmap(self) -> bool:
        f = self.footer
        return f.creator_app == CREATOR_APP and f.creator_version >= 0x00010002

    def _load_batmap(self) -> None:
        self._batmap = None
        if not self._has_batmap():
            return
        off = self.header.table_offset + _pad(4 * self.entries)
        raw = _pread(self._fd, _BATMAP_HEADER.size, off)
        if len(raw) < _BATMAP_HEADER.size:
            return
        cookie, map_off, map_secs, version, csum, _marker = _BATMAP_HEADER.unpack(raw)
        if cookie != BATMAP_COOKIE or version > BATMAP_VERSION:
            return
        bm = bytearray(_pread(self._fd, map_secs * SECTOR, map_off))
        if len(bm) != map_secs * SECTOR or _core.checksum(bm) != csum:
            return                            # a bad batmap is only an optimisation lost
        self._batmap, self._batmap_header_off, self._batmap_off = bm, off, map_off

    def _end_of_headers(self) -> int:
        h = self.header
        end = max(self.footer.data_offset + 1024, h.table_offset + _pad(4 * self.entries))
        if self._batmap is not None:
            end = max(end, self._batmap_header_off + SECTOR, self._batmap_off + len(self._batmap))
        for loc in h.locators:
            if loc[0]:
                end = max(end, loc[4] + _locator_size(loc))
        return _pad(end)

    def _end_of_data(self) -> int:
        blocks = _core.bat_end(self._bat, self.entries, self.bm_secs + self.spb) * SECTOR
        return max(self._end_of_headers(), blocks)

    def _find_parent(self) -> str:
        h = self.header
        cdir = os.path.dirname(os.path.realpath(self.path))
        tried = []
        for code, _space, length, _res, off in h.locators:
            if code not in (PLAT_MACX, PLAT_W2KU, PLAT_W2RU) or not length:
                continue
            name = _decode_locator(code, _pread(self._fd, length, off))
            if not name:
                continue
            tried.append(name)
            for cand in ((name,) if name.startswith("/") else ()) + (os.path.join(cdir, name),):
                if os.access(cand, os.R_OK):
                    return os.path.realpath(cand)
        pname = h.parent_name.decode("utf-16-be", "replace").split("\0", 1)[0]
        if pname:
            cand = os.path.join(cdir, pname)
            if os.access(cand, os.R_OK):
                return os.path.realpath(cand)
            tried.append(pname)
        raise VHDError(f"{self.path}: parent not found (tried {tried})")

    # ---------------------------------------------------------------- properties
    @property
    def virtual_size(self) -> int:
        return self.footer.current_size

    @property
    def uuid(self) -> str:
        return str(_uuid.UUID(bytes=self.footer.uuid))

    @property
    def parent_uuid(self) -> str | None:
        return str(_uuid.UUID(bytes=self.header.parent_uuid)) if self.disk_type == TYPE_DIFF else None

    @property
    def hidden(self) -> bool:
        return bool(self.footer.hidden)

    @property
    def type_name(self) -> str:
        return TYPE_NAMES[self.disk_type]

    @property
    def max_virtual_size(self) -> int:
        return self.entries * self.block_size if self.header else self.virtual_size

    @property
    def physical_size(self) -> int:
        return self._end + SECTOR

    def __enter__(self) -> "VHD":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if getattr(self, "_fd", -1) >= 0:
            self.close()

    def close(self) -> None:
        if self._parent_vhd is not None:
            self._parent_vhd.close()
            self._parent_vhd = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def flush(self) -> None:
        """Makes the file durable; drops first what a writer left past the footer (block_target)."""
        if self._staged and os.fstat(self._fd).st_size > self._end + SECTOR:
            os.ftruncate(self._fd, self._end + SECTOR)
        self._staged = False
        os.fsync(self._fd)

    # ---------------------------------------------------------------- blocks
    def blocks(self) -> list[int]:
        """Indices of the allocated blocks, in order."""
        if self.header is None:
            return list(range(-(-self.virtual_size // BLOCK_SIZE)))
        return _core.bat_allocated(self._bat, self.entries)

    def block_offset(self, block: int) -> int | None:
        """Sector where block ``block`` (its bitmap) starts, or None."""
        e = _core.bat_get(self._bat, block) if block < self.entries else UNUSED
        return None if e == UNUSED else e

    def bitmap(self, block: int) -> bytearray:
        bm = self._bitmaps.get(block)
        if bm is None:
            e = _core.bat_get(self._bat, block)
            bm = bytearray(_pread(self._fd, self.bm_bytes, e * SECTOR))
            bm.extend(bytes(self.bm_bytes - len(bm)))
            self._bitmaps[block] = bm
        return bm

    def allocated_bytes(self) -> int:
        """Bytes of data this layer holds (sectors marked in its bitmaps)."""
        if self.header is None:
            return self.virtual_size
        return SECTOR * sum(_core.bitmap_count(self.bitmap(b), self.spb) for b in self.blocks())

    def parent_vhd(self) -> "VHD | None":
        if self.disk_type != TYPE_DIFF:
            return None
        if self._parent_vhd is None:
            if self._depth + 1 >= MAX_CHAIN:
                raise VHDError(f"{self.path}: chain deeper than {MAX_CHAIN}")
            self._parent_vhd = VHD(self.parent, readonly=True, _depth=self._depth + 1)
        return self._parent_vhd

    def chain(self) -> list["VHD"]:
        out, v = [], self
        while v is not None:
            out.append(v)
            v = v.parent_vhd()
        return out

    # ---------------------------------------------------------------- reading
    def _merge_into(self, out: bytearray, sector: int, n: int, filled: bytearray) -> int:
        """Copies into ``out`` the sectors [sector, sector + n) this layer holds and no upper
        layer gave; returns how many."""
        fd, copied = self._fd, 0
        if self.header is None:                       # fixed: everything within the size
            n_here = min(n, max(0, self.virtual_size // SECTOR - sector))
            if n_here:
                data = _pread(fd, n_here * SECTOR, sector * SECTOR)
                data += bytes(n_here * SECTOR - len(data))
                copied = _core.merge_sectors(out, 0, data, None, 0, n_here, filled)
            return copied
        spb, pos = self.spb, 0
        while pos < n:
            s = sector + pos
            b, off = divmod(s, spb)
            cnt = min(n - pos, spb - off)
            e = _core.bat_get(self._bat, b) if b < self.entries else UNUSED
            if e != UNUSED:
                bm = self.bitmap(b)
                runs = _core.bitmap_runs(bm, off, cnt)
                if runs:
                    first = runs[0][0]
                    last = runs[-1][0] + runs[-1][1]
                    data = _pread(fd, (last - first) * SECTOR, (e + self.bm_secs + first) * SECTOR)
                    data += bytes((last - first) * SECTOR - len(data))
                    copied += _core.merge_sectors(out, pos + first - off, data, bm, first, last - first,
                                                  filled)
            pos += cnt
        return copied

    def _read_sectors(self, sector: int, n: int) -> bytearray:
        out = bytearray(n * SECTOR)
        filled = bytearray(-(-n // 8))
        remaining, layer = n, self
        while layer is not None and remaining:
            remaining -= layer._merge_into(out, sector, n, filled)
            layer = layer.parent_vhd() if remaining else None
        return out

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.virtual_size:
            raise VHDError(f"{self.path}: range {offset}+{length} outside the disk "
                           f"({self.virtual_size} bytes)")

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` of the disk, read through the chain."""
        self._check_range(offset, length)
        if not length:
            return b""
        s0, s1 = offset // SECTOR, -(-(offset + length) // SECTOR)
        out = self._read_sectors(s0, s1 - s0)
        head = offset - s0 * SECTOR
        if head == 0 and len(out) == length:
            return bytes(out)
        return bytes(memoryview(out)[head:head + length])

    def read_all(self, chunk: int = BLOCK_SIZE):
        """The whole disk, in chunks of ``chunk`` bytes (the last may be shorter)."""
        if chunk <= 0 or chunk % SECTOR:
            raise ValueError("chunk must be a positive multiple of 512")
        for off in range(0, self.virtual_size, chunk):
            yield self.read(off, min(chunk, self.virtual_size - off))

    # ---------------------------------------------------------------- writing
    def _writable(self) -> None:
        if self.readonly or self._fd < 0:
            raise VHDError(f"{self.path}: not open for writing")

    def write(self, offset: int, data) -> None:
        """Writes ``data`` at ``offset``: allocates blocks, sets bitmap bits, moves the footer."""
        self._writable()
        mv = memoryview(data).cast("B")
        length = len(mv)
        self._check_range(offset, length)
        if not length:
            return
        if self.header is None:
            _pwrite(self._fd, mv, offset)
            return
        s0, s1 = offset // SECTOR, -(-(offset + length) // SECTOR)
        head, tail = offset - s0 * SECTOR, s1 * SECTOR - offset - length
        if head or tail:                      # partial sectors: fill in from the chain
            buf = bytearray((s1 - s0) * SECTOR)
            if head:
                buf[:SECTOR] = self._read_sectors(s0, 1)
            if tail and (s1 - 1 > s0 or not head):
                buf[-SECTOR:] = self._read_sectors(s1 - 1, 1)
            buf[head:head + length] = mv
            mv = memoryview(buf)
        self._write_sectors(s0, mv)

    def _write_sectors(self, sector: int, mv: memoryview) -> None:
        spb, pos, n = self.spb, 0, len(mv) // SECTOR
        while pos < n:
            b, off = divmod(sector + pos, spb)
            cnt = min(n - pos, spb - off)
            self._write_in_block(b, off, mv[pos * SECTOR:(pos + cnt) * SECTOR], ((off, cnt),))
            pos += cnt

    def _write_in_block(self, b: int, base: int, data, runs) -> int:
        """Writes the sectors ``runs`` [(first, count)] of block ``b``, taking sector i from
        ``data[(i - base) * 512:]``; returns how many bitmap bits were newly set."""
        if b >= self.entries:
            raise VHDError(f"{self.path}: block {b} beyond the BAT ({self.entries} entries)")
        e = _core.bat_get(self._bat, b)
        if e == UNUSED:
            e = self._allocate(b)
        data_at = (e + self.bm_secs) * SECTOR
        mv = memoryview(data).cast("B")
        for first, count in runs:
            _pwrite(self._fd, mv[(first - base) * SECTOR:(first - base + count) * SECTOR],
                    data_at + first * SECTOR)
        bm = self.bitmap(b)
        changed = 0
        for first, count in runs:
            changed += _core.bitmap_set(bm, first, count)
        if changed:
            self._commit_bitmap(b, e)
        return changed

    def _commit_bitmap(self, b: int, e: int) -> None:
        bm = self._bitmaps[b]
        _pwrite(self._fd, bm, e * SECTOR)
        if self._batmap is not None and _core.bitmap_full(bm, self.spb):
            self._batmap_set(b)

    def _batmap_set(self, b: int) -> None:
        if b >= len(self._batmap) * 8 or _core.bitmap_test(self._batmap, b):
            return
        _core.bitmap_set(self._batmap, b, 1)
        byte = b >> 3
        _pwrite(self._fd, self._batmap[byte:byte + 1], self._batmap_off + byte)
        self._write_batmap_header()

    def _write_batmap_header(self) -> None:
        hdr = _BATMAP_HEADER.pack(BATMAP_COOKIE, self._batmap_off, len(self._batmap) // SECTOR,
                                  BATMAP_VERSION, _core.checksum(self._batmap), 0)
        _pwrite(self._fd, hdr.ljust(SECTOR, b"\0"), self._batmap_header_off)

    def _allocate(self, b: int) -> int:
        """Allocates block ``b`` at the end of the data; returns its first sector."""
        fd, old_end = self._fd, self._end
        sec = old_end // SECTOR
        gap = -(sec + self.bm_secs) % 8               # data region on a 4 KiB boundary
        start = sec + gap
        if start > UNUSED - 1:
            raise VHDError(f"{self.path}: file too large for the BAT")
        new_end = (start + self.bm_secs + self.spb) * SECTOR
        if os.fstat(fd).st_size > old_end + SECTOR:   # drop anything after the footer
            os.ftruncate(fd, old_end + SECTOR)
        _pwrite(fd, self.footer.pack(), new_end)     # the file grows; the data region is a hole
        bm = bytearray(self.bm_bytes)
        _pwrite(fd, bytes(gap * SECTOR) + bm, old_end)  # over the old footer
        _core.bat_set(self._bat, b, start)
        _pwrite(fd, self._bat[4 * b:4 * b + 4], self.header.table_offset + 4 * b)
        self._bitmaps[b] = bm
        self._end = new_end
        return start

    # ---------------------------------------------------------------- whole-block fast paths
    def _whole_block(self, block: int, length: int) -> int:
        """Sectors of block ``block`` a whole-block transfer of ``length`` bytes covers (the block,
        or what is left of the disk for the last one); VHDError when it isn't one."""
        bs = self.block_size if self.header is not None else BLOCK_SIZE
        start = block * bs
        want = min(bs, self.virtual_size - start) if start < self.virtual_size else 0
        if block < 0 or not want or length != want or length % SECTOR:
            raise VHDError(f"{self.path}: {length} bytes aren't the whole of block {block}")
        return length // SECTOR

    def write_block(self, block: int, data) -> None:
        """Writes the whole of block ``block`` (``block_size`` bytes, or up to the end of the disk for
        the last one): the same result as ``write(block * block_size, data)``, in one system call when
        the block is new (its full bitmap and its data together) or already fully mapped."""
        self._writable()
        mv = memoryview(data).cast("B")
        if self.header is None:
            n = self._whole_block(block, len(mv))
            _pwrite(self._fd, mv, block * BLOCK_SIZE)
            return
        n = self._whole_block(block, len(mv))
        if block >= self.entries:
            raise VHDError(f"{self.path}: block {block} beyond the BAT ({self.entries} entries)")
        e = _core.bat_get(self._bat, block)
        if e != UNUSED:                               # allocated: the data, then the bitmap if it changes
            _pwrite(self._fd, mv, (e + self.bm_secs) * SECTOR)
            if _core.bitmap_set(self.bitmap(block), 0, n):
                self._commit_bitmap(block, e)
            return
        bm = bytearray(self.bm_bytes)
        _core.bitmap_set(bm, 0, n)
        fd, old_end = self._fd, self._end
        sec = old_end // SECTOR
        gap = -(sec + self.bm_secs) % 8               # as _allocate: data on a 4 KiB boundary
        start = sec + gap
        if start > UNUSED - 1:
            raise VHDError(f"{self.path}: file too large for the BAT")
        new_end = (start + self.bm_secs + self.spb) * SECTOR
        if os.fstat(fd).st_size > old_end + SECTOR:   # drop anything after the footer
            os.ftruncate(fd, old_end + SECTOR)
        _pwrite(fd, self.footer.pack(), new_end)
        parts = [bytes(gap * SECTOR), bm, mv] if gap else [bm, mv]
        total, off = sum(len(p) for p in parts), old_end
        done = os.pwritev(fd, parts, off)             # gap, bitmap and data: one write
        if done < total:                              # short write: the rest, the usual way
            _pwrite(fd, b"".join(bytes(p) for p in parts)[done:], off + done)
        _core.bat_set(self._bat, block, start)
        _pwrite(fd, self._bat[4 * block:4 * block + 4], self.header.table_offset + 4 * block)
        self._bitmaps[block] = bm
        self._end = new_end
        if self._batmap is not None and _core.bitmap_full(bm, self.spb):
            self._batmap_set(block)

    # ---------------------------------------------------------------- blocks written by the caller
    def _next_block_start(self) -> tuple[int, int]:
        """(first sector, gap sectors before it) of a block allocated now, after the data."""
        sec = self._end // SECTOR
        gap = -(sec + self.bm_secs) % 8               # data region on a 4 KiB boundary
        if sec + gap > UNUSED - 1:
            raise VHDError(f"{self.path}: file too large for the BAT")
        return sec + gap, gap

    def block_target(self, block: int) -> tuple[int, bool]:
        """For a writer that puts the whole of block ``block`` into the file itself (os.splice):
        (byte offset of its data in the file, new). A new block's place is past the footer, which
        stays valid until ``commit_block`` records the block; if it isn't committed, the next new
        block goes to the same place, and ``flush`` drops what was left past the footer."""
        self._writable()
        if self.header is None:
            return block * BLOCK_SIZE, False
        if block >= self.entries:
            raise VHDError(f"{self.path}: block {block} beyond the BAT ({self.entries} entries)")
        e = _core.bat_get(self._bat, block)
        if e != UNUSED:
            return (e + self.bm_secs) * SECTOR, False
        start, _ = self._next_block_start()
        self._staged = True
        return (start + self.bm_secs) * SECTOR, True

    def commit_block(self, block: int, length: int) -> None:
        """Records that the caller wrote the whole of block ``block`` (``length`` bytes, as
        ``write_block``) at ``block_target``'s offset: a new block gets its bitmap, BAT entry and
        the footer after it; an allocated one its full bitmap."""
        self._writable()
        n = self._whole_block(block, length)
        if self.header is None:
            return
        e = _core.bat_get(self._bat, block)
        if e != UNUSED:
            if _core.bitmap_set(self.bitmap(block), 0, n):
                self._commit_bitmap(block, e)
            return
        start, gap = self._next_block_start()
        bm = bytearray(self.bm_bytes)
        _core.bitmap_set(bm, 0, n)
        fd, old_end = self._fd, self._end
        new_end = (start + self.bm_secs + self.spb) * SECTOR
        _pwrite(fd, self.footer.pack(), new_end)
        _pwrite(fd, bytes(gap * SECTOR) + bm, old_end)     # over the old footer
        _core.bat_set(self._bat, block, start)
        _pwrite(fd, self._bat[4 * block:4 * block + 4], self.header.table_offset + 4 * block)
        self._bitmaps[block] = bm
        self._end = new_end
        if self._batmap is not None and _core.bitmap_full(bm, self.spb):
            self._batmap_set(block)

    def read_block_into(self, block: int, out) -> None:
        """Fills ``out`` with the whole of block ``block`` (as ``write_block``), read through the chain:
        straight into ``out`` when this layer maps the whole block, else through read()."""
        mv = memoryview(out).cast("B")
        n = self._whole_block(block, len(mv))
        if self.header is None:
            got = _preadinto(self._fd, mv, block * BLOCK_SIZE)
            mv[got:] = bytes(len(mv) - got)
            return
        e = _core.bat_get(self._bat, block) if block < self.entries else UNUSED
        if e != UNUSED and _core.bitmap_full(self.bitmap(block), n):
            got = _preadinto(self._fd, mv, (e + self.bm_secs) * SECTOR)
            if got < len(mv):
                mv[got:] = bytes(len(mv) - got)
            return
        mv[:] = self.read(block * self.block_size, len(mv))

    def _write_footers(self) -> None:
        buf = self.footer.pack()
        if self.header is not None:
            _pwrite(self._fd, buf, 0)
        _pwrite(self._fd, buf, self._end)

    def _write_header(self) -> None:
        _pwrite(self._fd, self.header.pack(), self.footer.data_offset)


# --------------------------------------------------------------------------- module API

def open(path: str, *, readonly: bool = False) -> VHD:  # noqa: A001 - the module's verb
    """Opens a VHD (read-write unless ``readonly``); its parents are opened read-only when read."""
    return VHD(path, readonly=readonly)


def create(path: str, virtual_size: int | None, *, parent: str | None = None,
           max_size: int | None = None, hidden: bool = False) -> str:
    """Creates a dynamic VHD of ``virtual_size`` bytes (rounded up to 2 MiB), or with ``parent``
    a differencing VHD over it (``virtual_size`` None: the parent's).  The BAT has room for
    ``max_size`` (vhd-util's ``-S``).  Returns the new VHD's UUID."""
    parent_uuid, parent_ts, parent_name, locators_for = bytes(16), 0, bytes(512), None
    if parent is not None:
        with VHD(parent, readonly=True) as p:
            parent_uuid = p.footer.uuid
            if virtual_size is None:
                virtual_size = p.virtual_size
        parent_ts = vhd_time(os.stat(parent).st_mtime)
        name = os.path.basename(os.path.realpath(parent)).encode("utf-16-be")
        if len(name) > 512:
            raise VHDError(f"{parent}: parent name too long")
        parent_name = name.ljust(512, b"\0")
        locators_for = _relative_parent(path, parent)
    if virtual_size is None or virtual_size <= 0:
        raise VHDError("virtual size must be positive")
    size = _pad(virtual_size, BLOCK_SIZE)
    if size > MAX_VIRTUAL_SIZE:
        raise VHDError(f"virtual size {size} above the maximum {MAX_VIRTUAL_SIZE}")
    max_size = max(size, _pad(max_size or 0, BLOCK_SIZE))
    if max_size > MAX_VIRTUAL_SIZE:
        raise VHDError(f"max size {max_size} above the maximum {MAX_VIRTUAL_SIZE}")
    entries = max_size // BLOCK_SIZE

    f = Footer()
    f.cookie, f.features, f.version, f.data_offset = FOOTER_COOKIE, 2, 0x00010000, SECTOR
    f.timestamp, f.creator_app, f.creator_version, f.creator_os = vhd_time(), CREATOR_APP, CREATOR_VERSION, 0
    f.orig_size = f.current_size = size
    f.cylinders, f.heads, f.sectors_per_track = chs(size)
    f.disk_type = TYPE_DIFF if parent is not None else TYPE_DYNAMIC
    f.checksum, f.uuid, f.saved, f.hidden = 0, _uuid.uuid4().bytes, 0, int(bool(hidden))

    h = Header()
    h.cookie, h.data_offset, h.table_offset, h.version = HEADER_COOKIE, 0xFFFFFFFFFFFFFFFF, 3 * SECTOR, 0x00010000
    h.max_bat_size, h.block_size, h.checksum = entries, BLOCK_SIZE, 0
    h.parent_uuid, h.parent_timestamp, h.reserved, h.parent_name = parent_uuid, parent_ts, 0, parent_name
    h.locators = [[0, 0, 0, 0, 0] for _ in range(8)]

    bat = b"\xff" * (4 * entries)
    bat = bat.ljust(_pad(len(bat)), b"\0")
    batmap_header_off = h.table_offset + len(bat)
    batmap_off = batmap_header_off + SECTOR
    batmap = bytes(_pad(max(1, -(-entries // 8))))
    end = batmap_off + len(batmap)
    locator_data = []
    if locators_for is not None:
        for i, code in enumerate((PLAT_MACX, PLAT_W2KU, PLAT_W2RU)):
            raw = _encode_locator(code, locators_for)
            space = _pad(len(raw))
            h.locators[i] = [code, space, len(raw), 0, end]
            locator_data.append((end, raw.ljust(space, b"\0")))
            end += space
    bm_header = _BATMAP_HEADER.pack(BATMAP_COOKIE, batmap_off, len(batmap) // SECTOR, BATMAP_VERSION,
                                    _core.checksum(batmap), 0).ljust(SECTOR, b"\0")
    fbuf = f.pack()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _pwrite(fd, fbuf + h.pack() + bat + bm_header + batmap, 0)
        for off, raw in locator_data:
            _pwrite(fd, raw, off)
        _pwrite(fd, fbuf, end)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return str(_uuid.UUID(bytes=f.uuid))


def snapshot(path: str, new_leaf_path: str, *, max_size: int | None = None) -> str:
    """Creates ``new_leaf_path``, an empty differencing VHD whose parent is ``path``."""
    return create(new_leaf_path, None, parent=path, max_size=max_size)


def resize(path: str, new_size: int, *, max_size: int | None = None) -> None:
    """Grows a VHD to ``new_size`` bytes (rounded up to 2 MiB).  Within the BAT's room only the
    footers change; otherwise the BAT and batmap move to the end of the file with room for
    ``max(new_size, max_size)``."""
    with VHD(path) as v:
        if v.header is None:
            raise VHDError(f"{path}: resizing a fixed VHD is not supported")
        size = _pad(new_size, BLOCK_SIZE)
        if size < v.virtual_size:
            raise VHDError(f"{path}: shrinking ({v.virtual_size} -> {size}) is not supported")
        if size > MAX_VIRTUAL_SIZE:
            raise VHDError(f"virtual size {size} above the maximum {MAX_VIRTUAL_SIZE}")
        want = max(size, _pad(max_size or 0, BLOCK_SIZE))
        if -(-want // v.block_size) > v.entries:
            _relocate_bat(v, -(-want // v.block_size))
        f = v.footer
        f.current_size = size
        f.cylinders, f.heads, f.sectors_per_track = chs(size)
        v._write_footers()


def _relocate_bat(v: VHD, entries: int) -> None:
    fd, h = v._fd, v.header
    old_off, old_len = h.table_offset, _pad(4 * v.entries)
    old_batmap = (v._batmap_header_off, SECTOR + len(v._batmap)) if v._batmap is not None else None
    bat = bytearray(b"\xff" * (4 * entries)).ljust(_pad(4 * entries), b"\0")
    bat[:4 * v.entries] = v._bat[:4 * v.entries]
    table_off = v._end
    end = table_off + len(bat)
    batmap = None
    if v._has_batmap():
        batmap = bytearray(_pad(max(1, -(-entries // 8))))
        if v._batmap is not None:
            n = min(len(v._batmap), len(batmap))
            batmap[:n] = v._batmap[:n]
        v._batmap_header_off, v._batmap_off = end, end + SECTOR
        end += SECTOR + len(batmap)
    _pwrite(fd, bat, table_off)
    v._bat, v.entries, v._end = bat, entries, end
    if batmap is not None:
        v._batmap = batmap
        _pwrite(fd, batmap, v._batmap_off)
        v._write_batmap_header()
    _pwrite(fd, v.footer.pack(), end)
    h.table_offset, h.max_bat_size = table_off, entries
    v._write_header()                                  # the switch to the new BAT
    _pwrite(fd, bytes(old_len), old_off)               # the old tables are dead space now
    if old_batmap is not None:
        _pwrite(fd, bytes(old_batmap[1]), old_batmap[0])
    if os.fstat(fd).st_size > end + SECTOR:
        os.ftruncate(fd, end + SECTOR)


def set_parent(path: str, parent: str) -> None:
    """Makes ``parent`` the parent of the differencing VHD ``path`` (vhd-util ``modify -p``, SM's
    vdi_compose): its header's parent UUID, timestamp (the parent file's mtime) and name, and its
    parent locators, rewritten in the space they have; the header, written last, is the switch.
    VHDError when ``path`` isn't differencing, ``parent`` isn't a VHD, a locator doesn't fit, or
    the new chain would loop back to ``path``."""
    with VHD(path) as v:
        if v.disk_type != TYPE_DIFF:
            raise VHDError(f"{path}: not a differencing VHD")
        with VHD(parent, readonly=True) as p:
            for layer in p.chain():
                if layer.footer.uuid == v.footer.uuid or os.path.realpath(layer.path) == v.path:
                    raise VHDError(f"{parent}: {path} is in its chain already")
            parent_uuid = p.footer.uuid
        real = os.path.realpath(parent)
        name = os.path.basename(real).encode("utf-16-be")
        if len(name) > 512:
            raise VHDError(f"{parent}: parent name too long")
        rel = _relative_parent(path, parent)
        h = v.header
        writes = []
        for loc in h.locators:
            if loc[0] not in (PLAT_MACX, PLAT_W2KU, PLAT_W2RU):
                continue
            raw = _encode_locator(loc[0], rel)
            space = _locator_size(loc)
            if len(raw) > space:
                raise VHDError(f"{path}: the parent locator has room for {space} bytes, not {len(raw)}")
            loc[2] = len(raw)
            writes.append((loc[4], raw.ljust(space, b"\0")))
        for off, raw in writes:
            _pwrite(v._fd, raw, off)
        buf = bytearray(h.pack())
        _core.header_set_parent(buf, parent_uuid, vhd_time(os.stat(real).st_mtime), name)
        _pwrite(v._fd, buf, v.footer.data_offset)
        os.fsync(v._fd)


def set_hidden(path: str, hidden: bool = True) -> None:
    """Sets blktap's ``hidden`` flag (vhd-util ``set -f hidden -v 1``)."""
    with VHD(path) as v:
        v.footer.hidden = int(bool(hidden))
        v._write_footers()


def coalesce(child_path: str) -> int:
    """Writes the sectors allocated in ``child_path`` into its parent (grown first if smaller).
    Returns the number of sectors copied.  The child is left as it was: the leaf's view of the
    disk does not change."""
    with VHD(child_path, readonly=True) as child:
        if child.disk_type != TYPE_DIFF:
            raise VHDError(f"{child_path}: not a differencing VHD")
        if child.block_size != BLOCK_SIZE:
            raise VHDError(f"{child_path}: block size {child.block_size} not supported for coalesce")
        with VHD(child.parent, readonly=True) as p:
            grow = p.virtual_size < child.virtual_size
            if p.header is not None and p.block_size != child.block_size:
                raise VHDError(f"{child.parent}: block size differs from the child's")
        if grow:
            resize(child.parent, child.virtual_size)
        sectors = 0
        with VHD(child.parent) as parent:
            spb, bm_bytes = child.spb, child.bm_bytes
            buf = memoryview(bytearray(child.block_size))     # one buffer for every block
            for b in child.blocks():
                e = child.block_offset(b)
                bm = child.bitmap(b)
                runs = _core.bitmap_runs(bm, 0, spb)
                if not runs:
                    continue
                first, last = runs[0][0], runs[-1][0] + runs[-1][1]
                data = buf[:(last - first) * SECTOR]
                got = _preadinto(child._fd, data, e * SECTOR + bm_bytes + first * SECTOR)
                data[got:] = bytes(len(data) - got)
                if parent.header is None:
                    for s, n in runs:
                        _pwrite(parent._fd, memoryview(data)[(s - first) * SECTOR:(s - first + n) * SECTOR],
                                (b * spb + s) * SECTOR)
                else:
                    parent._write_in_block(b, first, data, runs)
                sectors += sum(n for _, n in runs)
            parent.flush()
        return sectors


def query(path: str) -> dict:
    """What ``vhd-util query`` tells, as a dict."""
    with VHD(path, readonly=True) as v:
        depth, p = 1, v
        try:
            while p.disk_type == TYPE_DIFF:
                p = p.parent_vhd()
                depth += 1
        except (VHDError, OSError):
            depth = None
        return {
            "path": v.path,
            "uuid": v.uuid,
            "type": v.type_name,
            "virtual_size": v.virtual_size,
            "physical_size": v.physical_size,
            "max_virtual_size": v.max_virtual_size,
            "block_size": v.block_size if v.header else None,
            "allocated_blocks": len(v.blocks()) if v.header else None,
            "parent": v.parent,
            "parent_uuid": v.parent_uuid,
            "hidden": v.hidden,
            "chain_depth": depth,
            "creator": v.footer.creator_app.rstrip(b"\0 ").decode("latin-1"),
        }


def read_all(path: str, chunk: int = BLOCK_SIZE):
    """The whole disk at ``path`` (through its chain) as raw bytes, in chunks."""
    with VHD(path, readonly=True) as v:
        yield from v.read_all(chunk)


def export_raw(path: str, raw_path: str, chunk: int = BLOCK_SIZE) -> int:
    """Writes the disk as a sparse raw file (all-zero chunks are holes); returns its size."""
    fd = os.open(raw_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        off = 0
        for data in read_all(path, chunk):
            if not _core.is_zero(data):
                _pwrite(fd, data, off)
            off += len(data)
        os.ftruncate(fd, off)
        return off
    finally:
        os.close(fd)


def import_raw(path: str, raw_path: str, *, virtual_size: int | None = None,
               max_size: int | None = None) -> int:
    """Creates the dynamic VHD ``path`` holding the raw image ``raw_path``, skipping all-zero
    blocks.  Returns the number of blocks written."""
    st = os.stat(raw_path)
    if virtual_size is None:
        virtual_size = st.st_size
    if stat.S_ISREG(st.st_mode) and st.st_size > _pad(virtual_size, BLOCK_SIZE):
        raise VHDError(f"{raw_path}: larger than the virtual size")
    create(path, virtual_size, max_size=max_size)
    written = 0
    src = os.open(raw_path, os.O_RDONLY)
    try:
        with VHD(path) as v:
            off = 0
            while True:
                data = _pread(src, BLOCK_SIZE, off)
                if not data:
                    break
                if not _core.is_zero(data):
                    if len(data) % SECTOR:
                        data += bytes(SECTOR - len(data) % SECTOR)
                    v._write_sectors(off // SECTOR, memoryview(data))
                    written += 1
                off += len(data)
            v.flush()
    finally:
        os.close(src)
    return written


# --------------------------------------------------------------------------- check

def check(path: str) -> list[str]:
    """Validates a VHD as ``vhd-util check`` does; returns the problems found (empty: valid)."""
    problems: list[str] = []
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        return [f"cannot open: {e}"]
    try:
        _check(fd, path, problems)
    except OSError as e:
        problems.append(f"I/O error: {e}")
    finally:
        os.close(fd)
    return problems


def _check(fd: int, path: str, problems: list[str]) -> None:
    size = os.fstat(fd).st_size
    if size < SECTOR:
        problems.append(f"file too small ({size} bytes)")
        return
    if size % SECTOR:
        problems.append(f"file size {size} is not a multiple of 512")
    end_buf = _pread(fd, SECTOR, size - SECTOR)
    copy_buf = _pread(fd, SECTOR, 0)
    end_problem, copy_problem = _footer_ok(end_buf), _footer_ok(copy_buf)
    if end_problem:
        problems.append(f"footer at end of file: {end_problem}")
    if end_problem and copy_problem:
        problems.append(f"footer copy at offset 0: {copy_problem}")
        return
    f = Footer.unpack(copy_buf if end_problem else end_buf)
    if f.disk_type not in TYPE_NAMES:
        problems.append(f"footer: invalid disk type {f.disk_type}")
        return
    if f.disk_type != TYPE_FIXED:
        if copy_problem:
            problems.append(f"footer copy at offset 0: {copy_problem}")
        elif not end_problem and copy_buf != end_buf:
            problems.append("footer copy at offset 0 differs from the footer at the end")
    if not f.features & 2:
        problems.append(f"footer: reserved feature bit 2 clear (features 0x{f.features:x})")
    if f.version != 0x00010000:
        problems.append(f"footer: unknown version 0x{f.version:08x}")
    if f.current_size % SECTOR:
        problems.append(f"footer: current size {f.current_size} is not a multiple of 512")
    if f.current_size > MAX_VIRTUAL_SIZE:
        problems.append(f"footer: current size {f.current_size} above {MAX_VIRTUAL_SIZE}")
    if f.disk_type == TYPE_FIXED:
        if f.data_offset != 0xFFFFFFFFFFFFFFFF:
            problems.append(f"footer: fixed disk with data offset 0x{f.data_offset:x}")
        if size != f.current_size + SECTOR:
            problems.append(f"fixed disk of {f.current_size} bytes in a file of {size}")
        return
    footer_at = size - SECTOR
    if f.data_offset % SECTOR or f.data_offset + 1024 > footer_at:
        problems.append(f"footer: dynamic header offset {f.data_offset} outside the file")
        return
    hbuf = _pread(fd, 1024, f.data_offset)
    problem = _header_ok(hbuf)
    if problem:
        problems.append(f"dynamic header: {problem}")
        if not hbuf.startswith(HEADER_COOKIE):
            return
    h = Header.unpack(hbuf)
    if h.data_offset != 0xFFFFFFFFFFFFFFFF:
        problems.append(f"dynamic header: data offset 0x{h.data_offset:x} (expected all ones)")
    if h.version != 0x00010000:
        problems.append(f"dynamic header: unknown version 0x{h.version:08x}")
    bs = h.block_size
    if bs < SECTOR or bs & (bs - 1):
        problems.append(f"dynamic header: invalid block size {bs}")
        return
    if h.max_bat_size * bs < f.current_size:
        problems.append(f"dynamic header: BAT of {h.max_bat_size} entries too small for "
                        f"{f.current_size} bytes")
    bat_len = _pad(4 * h.max_bat_size)
    if h.table_offset % SECTOR or h.table_offset + bat_len > footer_at:
        problems.append(f"BAT at {h.table_offset} (+{bat_len}) outside the file")
        return
    meta = [("footer copy", 0, SECTOR), ("dynamic header", f.data_offset, 1024),
            ("BAT", h.table_offset, bat_len)]
    for i, loc in enumerate(h.locators):
        code, space, length, _res, off = loc
        if code not in PLATFORM_CODES:
            problems.append(f"parent locator {i}: invalid platform code 0x{code:08x}")
            continue
        if not code:
            continue
        lsize = _locator_size(loc)
        if off % SECTOR or not lsize or length > lsize or off + lsize > footer_at:
            problems.append(f"parent locator {i}: data at {off} (+{lsize}, {length} used) outside the file")
        else:
            meta.append((f"parent locator {i}", off, lsize))
    spb = bs // SECTOR
    bm_bytes = _pad(max(1, spb // 8))
    v_blocks = -(-f.current_size // bs)
    bat = _pread(fd, bat_len, h.table_offset)
    batmap = None
    if f.creator_app == CREATOR_APP and f.creator_version >= 0x00010002:
        boff = h.table_offset + bat_len
        raw = _pread(fd, _BATMAP_HEADER.size, boff)
        cookie, map_off, map_secs, version, csum, _m = _BATMAP_HEADER.unpack(raw.ljust(_BATMAP_HEADER.size, b"\0"))
        if cookie != BATMAP_COOKIE:
            problems.append("batmap: header missing or bad cookie")
        elif version > BATMAP_VERSION:
            problems.append(f"batmap: unknown version 0x{version:08x}")
        elif map_off % SECTOR or map_off + map_secs * SECTOR > footer_at or map_secs * SECTOR * 8 < h.max_bat_size:
            problems.append(f"batmap: map at {map_off} ({map_secs} sectors) outside the file or too small")
        else:
            batmap = _pread(fd, map_secs * SECTOR, map_off)
            if _core.checksum(batmap) != csum:
                problems.append(f"batmap: bad checksum 0x{csum:08x} (computed 0x{_core.checksum(batmap):08x})")
                batmap = None
            meta += [("batmap header", boff, SECTOR), ("batmap", map_off, map_secs * SECTOR)]
    meta.sort(key=lambda m: m[1])
    for (n1, o1, l1), (n2, o2, _l2) in zip(meta, meta[1:]):
        if o1 + l1 > o2:
            problems.append(f"{n1} (at {o1}, {l1} bytes) overlaps {n2} (at {o2})")
    extents = []
    for b in _core.bat_allocated(bat, h.max_bat_size):
        e = _core.bat_get(bat, b)
        start, stop = e * SECTOR, e * SECTOR + bm_bytes + bs
        if b >= v_blocks:
            problems.append(f"block {b}: allocated beyond the virtual size")
        for name, o, n in meta:
            if start < o + n and o < stop:
                problems.append(f"block {b}: at {start}, inside the metadata ({name} at {o})")
        if stop > footer_at:
            problems.append(f"block {b}: at {start} (+{bm_bytes + bs}) runs into the footer or past the file")
            continue
        extents.append((start, stop, b))
        bm = _pread(fd, bm_bytes, start)       # (bits past the end of the disk are allowed: qemu sets them)
        if batmap is not None and b < len(batmap) * 8 and _core.bitmap_test(batmap, b) \
                and not _core.bitmap_full(bm, spb):
            problems.append(f"block {b}: batmap says full but the bitmap is not")
    if batmap is not None:
        allocated = set(e[2] for e in extents)
        for b in _core.bitmap_runs(batmap, 0, min(len(batmap) * 8, h.max_bat_size)):
            for i in range(b[0], b[0] + b[1]):
                if i not in allocated:
                    problems.append(f"block {i}: batmap says full but the block is not allocated")
    extents.sort()
    for (s1, e1, b1), (s2, _e2, b2) in zip(extents, extents[1:]):
        if e1 > s2:
            problems.append(f"block {b1} (at {s1}) overlaps block {b2} (at {s2})")
    if f.disk_type == TYPE_DIFF:
        try:
            with VHD(path, readonly=True) as v:
                with VHD(v.parent, readonly=True) as p:
                    if p.footer.uuid != h.parent_uuid:
                        problems.append(f"parent {v.parent}: UUID {p.uuid} is not the parent UUID "
                                        f"{_uuid.UUID(bytes=h.parent_uuid)} of the child")
        except (VHDError, OSError) as e:
            problems.append(f"parent: {e}")
