"""The checksums of XVA chunks (stream_vdi.ml): a `.checksum` member holds the SHA-1 of the chunk in
lowercase hex (what we write, and what every xapi reads); a `.xxhash` member holds its XXH64 (seed 0)
as 16 uppercase hex digits (what recent xapi writes). Any other extension is an error on import, as
in xapi.

XXH64 comes from the system's libxxhash (ctypes; the call releases the GIL) when there is one, else
from the pure-Python reference below (correct, slow: a few MiB/s).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib

SHA1 = ".checksum"
XXHASH = ".xxhash"
EXTENSIONS = (XXHASH, SHA1)


def sha1_hex(data) -> str:
    return hashlib.sha1(data).hexdigest()


# -- XXH64 ------------------------------------------------------------------------------------------
_M = (1 << 64) - 1
_P1, _P2, _P3 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9
_P4, _P5 = 0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M


def _round(acc: int, lane: int) -> int:
    acc = (acc + lane * _P2) & _M
    return (_rotl(acc, 31) * _P1) & _M


def _merge(acc: int, val: int) -> int:
    acc ^= _round(0, val)
    return (acc * _P1 + _P4) & _M


def xxh64_reference(data, seed: int = 0) -> int:
    """XXH64 as the xxHash specification defines it."""
    b = bytes(data)
    n = len(b)
    i = 0
    if n >= 32:
        v1 = (seed + _P1 + _P2) & _M
        v2 = (seed + _P2) & _M
        v3 = seed & _M
        v4 = (seed - _P1) & _M
        lanes = memoryview(b)[:n - n % 32].cast("Q")
        for j in range(0, len(lanes), 4):
            v1 = _round(v1, lanes[j])
            v2 = _round(v2, lanes[j + 1])
            v3 = _round(v3, lanes[j + 2])
            v4 = _round(v4, lanes[j + 3])
        i = n - n % 32
        h = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & _M
        h = _merge(h, v1)
        h = _merge(h, v2)
        h = _merge(h, v3)
        h = _merge(h, v4)
    else:
        h = (seed + _P5) & _M
    h = (h + n) & _M
    while i + 8 <= n:
        h ^= _round(0, int.from_bytes(b[i:i + 8], "little"))
        h = (_rotl(h, 27) * _P1 + _P4) & _M
        i += 8
    if i + 4 <= n:
        h ^= (int.from_bytes(b[i:i + 4], "little") * _P1) & _M
        h = (_rotl(h, 23) * _P2 + _P3) & _M
        i += 4
    while i < n:
        h ^= (b[i] * _P5) & _M
        h = (_rotl(h, 11) * _P1) & _M
        i += 1
    h ^= h >> 33
    h = (h * _P2) & _M
    h ^= h >> 29
    h = (h * _P3) & _M
    h ^= h >> 32
    return h


def _load_libxxhash():
    name = ctypes.util.find_library("xxhash") or "libxxhash.so.0"
    try:
        lib = ctypes.CDLL(name)
        fn = lib.XXH64
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_ulonglong]
    fn.restype = ctypes.c_ulonglong

    def xxh64(data, seed: int = 0) -> int:
        mv = memoryview(data).cast("B")
        if not len(mv):
            return fn(None, 0, seed)
        if mv.readonly:
            buf = ctypes.c_char_p(bytes(mv))
            return fn(buf, len(mv), seed)
        arr = (ctypes.c_char * len(mv)).from_buffer(mv)
        return fn(ctypes.addressof(arr), len(mv), seed)
    return xxh64


xxh64 = _load_libxxhash() or xxh64_reference
FAST_XXH64 = xxh64 is not xxh64_reference


def xxhash_hex(data) -> str:
    return "%016X" % xxh64(data)


def compute(extension: str, data) -> str:
    """The text of a checksum member of this extension for data; ValueError for others."""
    if extension == SHA1:
        return sha1_hex(data)
    if extension == XXHASH:
        return xxhash_hex(data)
    raise ValueError(extension)


def extension_of(name: str) -> str:
    dot = name.rfind(".")
    slash = name.rfind("/")
    return name[dot:] if dot > slash else ""
