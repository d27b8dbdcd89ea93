"""Pure-Python reference for the per-block core of the VHD code.

``xapi.sm.vhd._vhd`` is the compiled twin of this module: same functions, same
results, same exceptions; the tests run both.  ``xapi.sm.vhd`` (the facade) does
the file layout and I/O and calls these for the work done once per sector or per
block:

* ``checksum(buf, skip=-1)``: the VHD checksum, one's complement of the byte sum
  (as a u32), with the 4 bytes at ``skip`` (the checksum field) counted as zero;
* sector bitmaps, MSB first: bit for sector ``n`` is byte ``n >> 3``, mask
  ``0x80 >> (n & 7)``; ``bitmap_test``, ``bitmap_set`` (a range, returns how many
  bits changed), ``bitmap_count``, ``bitmap_full``, ``bitmap_runs`` (runs of set
  bits in a range), ``bitmap_or`` (returns how many bits changed);
* the BAT, kept as the on-disk big-endian bytes: ``bat_get``, ``bat_set``,
  ``bat_allocated`` (indices in use, in order), ``bat_end`` (the first sector
  after the highest block, given sectors per block including its bitmap);
* ``merge_sectors``: copies the sectors of one layer's block that its bitmap says
  are present, and that no upper layer already gave, into the output of a read
  through a chain, marking them in ``filled``; returns how many it copied;
* ``is_zero(buf)``: all bytes zero (to skip blocks on a sparse import);
* ``header_set_parent(header, uuid, timestamp, name)``: writes a dynamic header's
  parent fields in place (the 16-byte parent UUID at 40, the big-endian u32
  timestamp at 56, ``name`` - UTF-16BE, at most 512 bytes - zero-padded at 64)
  and its checksum at 36; returns the checksum (vhd-util ``modify -p``).

Arguments are bytes-like; outputs are ``bytearray``s.  Ranges outside a buffer
raise ``IndexError``; bad arguments ``ValueError``.
"""

import struct

SECTOR = 512
UNUSED = 0xFFFFFFFF

__all__ = [
    "SECTOR", "UNUSED", "checksum", "bitmap_test", "bitmap_set", "bitmap_count", "bitmap_full",
    "bitmap_runs", "bitmap_or", "bat_get", "bat_set", "bat_allocated", "bat_end", "merge_sectors",
    "is_zero", "header_set_parent",
]

HEADER_SIZE = 1024
HEADER_CHECKSUM_AT, PARENT_UUID_AT, PARENT_TS_AT, PARENT_NAME_AT = 36, 40, 56, 64
PARENT_NAME_SIZE = 512


def _check_bits(bm, start: int, count: int) -> None:
    if start < 0 or count < 0:
        raise ValueError("negative bit range")
    if start + count > len(bm) * 8:
        raise IndexError("bit range outside the bitmap")


def checksum(buf, skip: int = -1) -> int:
    total = sum(memoryview(buf).cast("B"))
    if skip >= 0:
        if skip + 4 > len(buf):
            raise IndexError("checksum field outside the buffer")
        total -= sum(memoryview(buf)[skip:skip + 4].cast("B"))
    return ~total & 0xFFFFFFFF


def bitmap_test(bm, n: int) -> bool:
    _check_bits(bm, n, 1)
    return bool(bm[n >> 3] & (0x80 >> (n & 7)))


def bitmap_set(bm: bytearray, start: int, count: int) -> int:
    _check_bits(bm, start, count)
    changed = 0
    for n in range(start, start + count):
        mask = 0x80 >> (n & 7)
        if not bm[n >> 3] & mask:
            bm[n >> 3] |= mask
            changed += 1
    return changed


def bitmap_count(bm, nbits: int) -> int:
    _check_bits(bm, 0, nbits)
    whole = nbits >> 3
    count = int.from_bytes(bytes(bm[:whole]), "big").bit_count() if whole else 0
    for n in range(whole * 8, nbits):
        if bm[n >> 3] & (0x80 >> (n & 7)):
            count += 1
    return count


def bitmap_full(bm, nbits: int) -> bool:
    return bitmap_count(bm, nbits) == nbits


def bitmap_runs(bm, start: int, count: int) -> list:
    """Runs of set bits in [start, start + count), as (first bit, length), in order."""
    _check_bits(bm, start, count)
    runs = []
    run_start = -1
    for n in range(start, start + count):
        if bm[n >> 3] & (0x80 >> (n & 7)):
            if run_start < 0:
                run_start = n
        elif run_start >= 0:
            runs.append((run_start, n - run_start))
            run_start = -1
    if run_start >= 0:
        runs.append((run_start, start + count - run_start))
    return runs


def bitmap_or(dst: bytearray, src) -> int:
    if len(src) > len(dst):
        raise IndexError("source bitmap longer than destination")
    changed = 0
    for i in range(len(src)):
        new = dst[i] | src[i]
        if new != dst[i]:
            changed += (new ^ dst[i]).bit_count()
            dst[i] = new
    return changed


def bat_get(bat, i: int) -> int:
    if i < 0 or 4 * i + 4 > len(bat):
        raise IndexError("BAT index out of range")
    return int.from_bytes(bytes(bat[4 * i:4 * i + 4]), "big")


def bat_set(bat: bytearray, i: int, value: int) -> None:
    if i < 0 or 4 * i + 4 > len(bat):
        raise IndexError("BAT index out of range")
    if not 0 <= value <= UNUSED:
        raise ValueError("BAT entry out of range")
    bat[4 * i:4 * i + 4] = value.to_bytes(4, "big")


def _bat_entries(bat, entries: int) -> tuple:
    if entries < 0 or 4 * entries > len(bat):
        raise IndexError("BAT shorter than its entries")
    return struct.unpack_from(">%dI" % entries, bat)


def bat_allocated(bat, entries: int) -> list:
    return [i for i, e in enumerate(_bat_entries(bat, entries)) if e != UNUSED]


def bat_end(bat, entries: int, block_sectors: int) -> int:
    """First sector after the highest allocated block (0 when none is)."""
    return max((e + block_sectors for e in _bat_entries(bat, entries) if e != UNUSED), default=0)


def merge_sectors(dst: bytearray, dst_sector: int, src, bm, bit_start: int, nsecs: int,
                  filled: bytearray) -> int:
    """Copies sector i of ``src`` (i < nsecs) to sector ``dst_sector + i`` of ``dst`` when
    bit ``bit_start + i`` of ``bm`` is set (``bm`` None: all are) and bit
    ``dst_sector + i`` of ``filled`` is clear; sets that bit.  Returns the number copied."""
    if nsecs < 0 or dst_sector < 0:
        raise ValueError("negative sector range")
    if len(src) < nsecs * SECTOR or len(dst) < (dst_sector + nsecs) * SECTOR:
        raise IndexError("sector range outside a buffer")
    _check_bits(filled, dst_sector, nsecs)
    if bm is not None:
        _check_bits(bm, bit_start, nsecs)
    src = memoryview(src).cast("B")
    copied = 0
    for i in range(nsecs):
        if bm is not None and not bm[(bit_start + i) >> 3] & (0x80 >> ((bit_start + i) & 7)):
            continue
        d = dst_sector + i
        mask = 0x80 >> (d & 7)
        if filled[d >> 3] & mask:
            continue
        dst[d * SECTOR:(d + 1) * SECTOR] = src[i * SECTOR:(i + 1) * SECTOR]
        filled[d >> 3] |= mask
        copied += 1
    return copied


def is_zero(buf) -> bool:
    data = bytes(buf)
    return data.count(0) == len(data)


def header_set_parent(header: bytearray, uuid, timestamp: int, name) -> int:
    if len(header) < HEADER_SIZE:
        raise IndexError("a dynamic header is 1024 bytes")
    uuid, name = bytes(uuid), bytes(name)
    if len(uuid) != 16:
        raise ValueError("a parent UUID is 16 bytes")
    if len(name) > PARENT_NAME_SIZE:
        raise ValueError("the parent name is longer than 512 bytes")
    if not 0 <= timestamp <= 0xFFFFFFFF:
        raise ValueError("timestamp out of range")
    header[PARENT_UUID_AT:PARENT_UUID_AT + 16] = uuid
    struct.pack_into(">I", header, PARENT_TS_AT, timestamp)
    header[PARENT_NAME_AT:PARENT_NAME_AT + PARENT_NAME_SIZE] = name.ljust(PARENT_NAME_SIZE, b"\0")
    csum = checksum(memoryview(header)[:HEADER_SIZE], HEADER_CHECKSUM_AT)
    struct.pack_into(">I", header, HEADER_CHECKSUM_AT, csum)
    return csum
