"""A simulated domain's memory image: what VM.save writes, VM.restore reads and migration streams.

Layout (big-endian), HEADER_SIZE bytes then the payload:

    magic      8s   b"PYXAPIMI"
    version    H    VERSION
    reserved   H    0
    vm_uuid   16s   the VM's uuid, binary
    memory     Q    the domain's memory in bytes
    vcpus      I    vCPUs
    length     Q    payload length in bytes
    digest    32s   sha256 of the payload
    crc        I    crc32 of everything above (a torn header is told apart from a torn payload)

The payload is the domain's state as JSON (length-prefixed: name, hvm, cpu time, the guest agent's
xenstore data...) followed by "memory pages": bytes derived from the uuid and that state, one byte
per 4 KiB page of the domain, bounded to MIN_PAGES..MAX_PAGES, so an image stays a few hundred KiB
and 500 suspended VMs stay cheap while a bigger VM still has a bigger image.

Whole images: `write(fileobj, info)`, `read(fileobj) -> info`, `dumps(info)`, `loads(data)`.
Streams: `encode(info) -> (header, payload)`, `parse_header(header) -> info` (payload not yet seen),
then a `Verifier(info)` fed with `update(chunk)` and closed with `finish() -> info` (state filled in).
Every failure is an ImageError with a message saying what is wrong.
"""
from __future__ import annotations

import dataclasses
import hashlib
import struct
import uuid as uuidlib
import zlib

import orjson

MAGIC = b"PYXAPIMI"
VERSION = 1
_HEAD = struct.Struct(">8sHH16sQIQ32s")
_CRC = struct.Struct(">I")
HEADER_SIZE = _HEAD.size + _CRC.size
_LEN = struct.Struct(">I")
PAGE = 4096
MIN_PAGES = 64 * 1024          # one byte per page: 64 KiB for a 256 MiB VM ...
MAX_PAGES = 512 * 1024         # ... at most 512 KiB (2 GiB and more)
MAX_STATE = 1 << 20


class ImageError(Exception):
    """The image cannot be used: bad magic or version, torn header, wrong length, checksum."""


@dataclasses.dataclass
class ImageInfo:
    vm_uuid: str
    memory: int                 # bytes
    vcpus: int
    state: dict = dataclasses.field(default_factory=dict)
    length: int = 0             # payload length, known once encoded or parsed
    digest: bytes = b""         # sha256 of the payload

    @property
    def size(self) -> int:
        """The whole image's size in bytes."""
        return HEADER_SIZE + self.length


def page_bytes(memory: int) -> int:
    return max(MIN_PAGES, min(MAX_PAGES, int(memory) // PAGE))


def _payload(info: ImageInfo) -> bytes:
    state = orjson.dumps(info.state, option=orjson.OPT_SORT_KEYS)
    if len(state) > MAX_STATE:
        raise ImageError(f"domain state too large for an image ({len(state)} bytes)")
    seed = uuidlib.UUID(info.vm_uuid).bytes + state
    pages = hashlib.shake_256(seed).digest(page_bytes(info.memory))
    return _LEN.pack(len(state)) + state + pages


def _header(info: ImageInfo) -> bytes:
    head = _HEAD.pack(MAGIC, VERSION, 0, uuidlib.UUID(info.vm_uuid).bytes, int(info.memory),
                      int(info.vcpus), info.length, info.digest)
    return head + _CRC.pack(zlib.crc32(head))


def encode(info: ImageInfo) -> tuple[bytes, bytes]:
    """(header, payload) for this domain; fills in info.length and info.digest."""
    payload = _payload(info)
    info.length = len(payload)
    info.digest = hashlib.sha256(payload).digest()
    return _header(info), payload


def parse_header(header: bytes) -> ImageInfo:
    """The header's facts; the payload still has to go through a Verifier."""
    if len(header) < HEADER_SIZE:
        raise ImageError(f"memory image truncated: header of {len(header)} bytes, expected {HEADER_SIZE}")
    head, (crc,) = header[:_HEAD.size], _CRC.unpack_from(header, _HEAD.size)
    magic, version, _, raw_uuid, memory, vcpus, length, digest = _HEAD.unpack(head)
    if magic != MAGIC:
        raise ImageError(f"not a memory image (magic {magic!r})")
    if version != VERSION:
        raise ImageError(f"memory image version {version} is not supported (expected {VERSION})")
    if zlib.crc32(head) != crc:
        raise ImageError("memory image header checksum mismatch")
    return ImageInfo(str(uuidlib.UUID(bytes=raw_uuid)), memory, vcpus, {}, length, digest)


class Verifier:
    """Checks a payload that arrives in pieces against its header."""

    def __init__(self, info: ImageInfo) -> None:
        self.info = info
        self.seen = 0
        self._sha = hashlib.sha256()
        self._start = bytearray()        # the state's length and JSON, kept until complete

    @property
    def remaining(self) -> int:
        return self.info.length - self.seen

    def update(self, chunk) -> None:
        n = len(chunk)
        if self.seen + n > self.info.length:
            raise ImageError(f"memory image payload longer than its header says ({self.info.length} bytes)")
        if len(self._start) < _LEN.size + MAX_STATE:
            self._start += bytes(chunk[:_LEN.size + MAX_STATE - len(self._start)])
        self._sha.update(chunk)
        self.seen += n

    def finish(self) -> ImageInfo:
        if self.seen != self.info.length:
            raise ImageError(f"memory image truncated: payload of {self.seen} bytes, expected {self.info.length}")
        if self._sha.digest() != self.info.digest:
            raise ImageError("memory image payload checksum mismatch")
        try:
            (n,) = _LEN.unpack_from(self._start, 0)
            self.info.state = orjson.loads(bytes(self._start[_LEN.size:_LEN.size + n]))
        except (struct.error, orjson.JSONDecodeError) as e:
            raise ImageError(f"memory image state unreadable: {e}") from None
        return self.info


def dumps(info: ImageInfo) -> bytes:
    header, payload = encode(info)
    return header + payload


def loads(data: bytes) -> ImageInfo:
    info = parse_header(data[:HEADER_SIZE])
    v = Verifier(info)
    v.update(memoryview(data)[HEADER_SIZE:HEADER_SIZE + info.length + 1])
    return v.finish()


def write(fileobj, info: ImageInfo) -> int:
    """Writes the image to a binary file object; the number of bytes written."""
    header, payload = encode(info)
    fileobj.write(header)
    fileobj.write(payload)
    return len(header) + len(payload)


def read(fileobj, chunk: int = 1 << 16) -> ImageInfo:
    """Reads and checks one image from a binary file object."""
    info = parse_header(fileobj.read(HEADER_SIZE))
    v = Verifier(info)
    while v.remaining > 0:
        data = fileobj.read(min(chunk, v.remaining))
        if not data:
            break
        v.update(data)
    return v.finish()
