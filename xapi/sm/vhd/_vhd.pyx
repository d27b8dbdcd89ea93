# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled per-block core of the VHD code.

Same API and behaviour as the pure-Python reference ``xapi.sm.vhd.vhd_ref`` (read
its docstring); the tests run every case against both.  The loops run without
the GIL: bitmaps are tested a byte at a time where whole bytes agree, sectors are
copied with one ``memcpy`` per run, and the checksum and zero test walk the
buffer once.
"""
from libc.string cimport memcpy, memcmp, memset
from libc.stdint cimport uint32_t, uint64_t

SECTOR = 512
UNUSED = 0xFFFFFFFF

cdef unsigned char POPCOUNT[256]
cdef int _k
for _k in range(256):
    POPCOUNT[_k] = bin(_k).count("1")


# ----------------------------------------------------------------- C-level API (see _vhd.pxd)

cdef uint32_t c_checksum(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    cdef uint32_t total = 0
    cdef Py_ssize_t i
    for i in range(n):
        total += p[i]
    return ~total


cdef bint c_bitmap_test(const unsigned char* bm, Py_ssize_t n) noexcept nogil:
    return (bm[n >> 3] & (0x80 >> (n & 7))) != 0


cdef Py_ssize_t c_bitmap_count(const unsigned char* bm, Py_ssize_t nbits) noexcept nogil:
    cdef Py_ssize_t count = 0, i, whole = nbits >> 3
    for i in range(whole):
        count += POPCOUNT[bm[i]]
    for i in range(whole * 8, nbits):
        if bm[i >> 3] & (0x80 >> (i & 7)):
            count += 1
    return count


cdef Py_ssize_t c_bitmap_set(unsigned char* bm, Py_ssize_t start, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t n, changed = 0
    cdef unsigned char mask
    n = start
    while n < start + count:
        if (n & 7) == 0 and n + 8 <= start + count:
            changed += 8 - POPCOUNT[bm[n >> 3]]
            bm[n >> 3] = 0xFF
            n += 8
            continue
        mask = 0x80 >> (n & 7)
        if not bm[n >> 3] & mask:
            bm[n >> 3] |= mask
            changed += 1
        n += 1
    return changed


cdef bint c_is_zero(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i, head
    if n == 0:
        return True
    head = n if n < 64 else 64
    for i in range(head):
        if p[i]:
            return False
    if n <= 64:
        return True
    # p[0:64] is zero, so p[0:n-64] == p[64:n] means the whole buffer is
    return memcmp(p, p + 64, <size_t>(n - 64)) == 0


# ----------------------------------------------------------------- helpers

cdef inline int _check_bits(Py_ssize_t length, Py_ssize_t start, Py_ssize_t count) except -1:
    if start < 0 or count < 0:
        raise ValueError("negative bit range")
    if start + count > length * 8:
        raise IndexError("bit range outside the bitmap")
    return 0


# ----------------------------------------------------------------- Python API

def checksum(const unsigned char[::1] buf, Py_ssize_t skip=-1):
    cdef Py_ssize_t n = buf.shape[0]
    cdef uint32_t total
    if skip >= 0 and skip + 4 > n:
        raise IndexError("checksum field outside the buffer")
    if n == 0:
        return 0xFFFFFFFF
    with nogil:
        total = ~c_checksum(&buf[0], n)
        if skip >= 0:
            total -= buf[skip] + buf[skip + 1] + buf[skip + 2] + buf[skip + 3]
    return ~total


def bitmap_test(const unsigned char[::1] bm, Py_ssize_t n):
    _check_bits(bm.shape[0], n, 1)
    return bool(c_bitmap_test(&bm[0], n))


def bitmap_set(unsigned char[::1] bm, Py_ssize_t start, Py_ssize_t count):
    cdef Py_ssize_t changed
    _check_bits(bm.shape[0], start, count)
    if count == 0:
        return 0
    with nogil:
        changed = c_bitmap_set(&bm[0], start, count)
    return changed


def bitmap_count(const unsigned char[::1] bm, Py_ssize_t nbits):
    cdef Py_ssize_t count
    _check_bits(bm.shape[0], 0, nbits)
    if nbits == 0:
        return 0
    with nogil:
        count = c_bitmap_count(&bm[0], nbits)
    return count


def bitmap_full(const unsigned char[::1] bm, Py_ssize_t nbits):
    return bitmap_count(bm, nbits) == nbits


def bitmap_runs(const unsigned char[::1] bm, Py_ssize_t start, Py_ssize_t count):
    """Runs of set bits in [start, start + count), as (first bit, length), in order."""
    cdef Py_ssize_t n, end = start + count, run_start = -1
    cdef unsigned char byte
    _check_bits(bm.shape[0], start, count)
    runs = []
    n = start
    while n < end:
        if (n & 7) == 0 and n + 8 <= end:
            byte = bm[n >> 3]
            if byte == 0xFF:
                if run_start < 0:
                    run_start = n
                n += 8
                continue
            if byte == 0:
                if run_start >= 0:
                    runs.append((run_start, n - run_start))
                    run_start = -1
                n += 8
                continue
        if bm[n >> 3] & (0x80 >> (n & 7)):
            if run_start < 0:
                run_start = n
        elif run_start >= 0:
            runs.append((run_start, n - run_start))
            run_start = -1
        n += 1
    if run_start >= 0:
        runs.append((run_start, end - run_start))
    return runs


def bitmap_or(unsigned char[::1] dst, const unsigned char[::1] src):
    cdef Py_ssize_t i, n = src.shape[0], changed = 0
    cdef unsigned char new
    if n > dst.shape[0]:
        raise IndexError("source bitmap longer than destination")
    with nogil:
        for i in range(n):
            new = dst[i] | src[i]
            if new != dst[i]:
                changed += POPCOUNT[new ^ dst[i]]
                dst[i] = new
    return changed


cdef inline uint32_t _be32(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


def bat_get(const unsigned char[::1] bat, Py_ssize_t i):
    if i < 0 or 4 * i + 4 > bat.shape[0]:
        raise IndexError("BAT index out of range")
    return _be32(&bat[4 * i])


def bat_set(unsigned char[::1] bat, Py_ssize_t i, value):
    cdef uint32_t v
    if i < 0 or 4 * i + 4 > bat.shape[0]:
        raise IndexError("BAT index out of range")
    if not 0 <= value <= UNUSED:
        raise ValueError("BAT entry out of range")
    v = value
    bat[4 * i] = (v >> 24) & 0xFF
    bat[4 * i + 1] = (v >> 16) & 0xFF
    bat[4 * i + 2] = (v >> 8) & 0xFF
    bat[4 * i + 3] = v & 0xFF


def bat_allocated(const unsigned char[::1] bat, Py_ssize_t entries):
    cdef Py_ssize_t i
    if entries < 0 or 4 * entries > bat.shape[0]:
        raise IndexError("BAT shorter than its entries")
    out = []
    for i in range(entries):
        if _be32(&bat[4 * i]) != 0xFFFFFFFFu:
            out.append(i)
    return out


def bat_end(const unsigned char[::1] bat, Py_ssize_t entries, Py_ssize_t block_sectors):
    """First sector after the highest allocated block (0 when none is)."""
    cdef Py_ssize_t i
    cdef uint32_t v
    cdef uint64_t end = 0, e
    if entries < 0 or 4 * entries > bat.shape[0]:
        raise IndexError("BAT shorter than its entries")
    with nogil:
        for i in range(entries):
            v = _be32(&bat[4 * i])
            if v != 0xFFFFFFFFu:
                e = <uint64_t>v + <uint64_t>block_sectors
                if e > end:
                    end = e
    return end


def merge_sectors(unsigned char[::1] dst, Py_ssize_t dst_sector, const unsigned char[::1] src,
                  bm, Py_ssize_t bit_start, Py_ssize_t nsecs, unsigned char[::1] filled):
    """Copies sector i of ``src`` (i < nsecs) to sector ``dst_sector + i`` of ``dst`` when
    bit ``bit_start + i`` of ``bm`` is set (``bm`` None: all are) and bit
    ``dst_sector + i`` of ``filled`` is clear; sets that bit.  Returns the number copied."""
    cdef const unsigned char[::1] bmv
    cdef const unsigned char* bp = NULL
    cdef Py_ssize_t i, d, run = -1, copied = 0
    cdef bint take
    if nsecs < 0 or dst_sector < 0:
        raise ValueError("negative sector range")
    if src.shape[0] < nsecs * 512 or dst.shape[0] < (dst_sector + nsecs) * 512:
        raise IndexError("sector range outside a buffer")
    _check_bits(filled.shape[0], dst_sector, nsecs)
    if bm is not None:
        bmv = bm
        _check_bits(bmv.shape[0], bit_start, nsecs)
        if bmv.shape[0]:
            bp = &bmv[0]
    if nsecs == 0:
        return 0
    with nogil:
        for i in range(nsecs + 1):
            take = False
            if i < nsecs:
                d = dst_sector + i
                take = not (filled[d >> 3] & (0x80 >> (d & 7)))
                if take and bp != NULL:
                    take = (bp[(bit_start + i) >> 3] & (0x80 >> ((bit_start + i) & 7))) != 0
            if take:
                filled[d >> 3] |= 0x80 >> (d & 7)
                if run < 0:
                    run = i
            elif run >= 0:
                memcpy(&dst[(dst_sector + run) * 512], &src[run * 512], (i - run) * 512)
                copied += i - run
                run = -1
    return copied


def is_zero(const unsigned char[::1] buf):
    cdef bint z
    if buf.shape[0] == 0:
        return True
    with nogil:
        z = c_is_zero(&buf[0], buf.shape[0])
    return bool(z)


cdef inline void _put_be32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = (v >> 24) & 0xFF
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF


def header_set_parent(unsigned char[::1] header, const unsigned char[::1] uuid, timestamp,
                      const unsigned char[::1] name):
    cdef Py_ssize_t n = name.shape[0]
    cdef uint32_t ts, csum
    if header.shape[0] < 1024:
        raise IndexError("a dynamic header is 1024 bytes")
    if uuid.shape[0] != 16:
        raise ValueError("a parent UUID is 16 bytes")
    if n > 512:
        raise ValueError("the parent name is longer than 512 bytes")
    if not 0 <= timestamp <= 0xFFFFFFFF:
        raise ValueError("timestamp out of range")
    ts = timestamp
    with nogil:
        memcpy(&header[40], &uuid[0], 16)
        _put_be32(&header[56], ts)
        if n:
            memcpy(&header[64], &name[0], n)
        memset(&header[64 + n], 0, 512 - n)
        _put_be32(&header[36], 0)
        csum = c_checksum(&header[0], 1024)
        _put_be32(&header[36], csum)
    return csum
