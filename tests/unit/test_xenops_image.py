"""Memory images (xapi.xenops.image): round trips whole and in pieces, sizes, and every kind of damage
caught with a clear ImageError."""
import io
import uuid as uuidlib

import pytest

from xapi.xenops import image
from xapi.xenops.image import HEADER_SIZE, ImageError, ImageInfo


def _info(memory=256 << 20, vcpus=2, **state):
    return ImageInfo(str(uuidlib.uuid4()), memory, vcpus,
                     {"name": "vm", "hvm": False, "cpu_time": 12345, **state})


def test_round_trip_through_a_file():
    info = _info(guest={"data/os_name": "Debian"})
    f = io.BytesIO()
    n = image.write(f, info)
    assert n == f.tell() == info.size == HEADER_SIZE + info.length
    f.seek(0)
    back = image.read(f)
    assert (back.vm_uuid, back.memory, back.vcpus) == (info.vm_uuid, info.memory, info.vcpus)
    assert back.state == info.state
    assert back.digest == info.digest


def test_trailing_bytes_after_an_image_in_a_file_are_ignored():
    # a suspend VDI is rounded up: read() stops at the payload's end
    info = _info()
    f = io.BytesIO(image.dumps(info) + b"\0" * 5000)
    assert image.read(f).state == info.state


def test_sizes_follow_memory_within_bounds():
    small, big, huge = _info(64 << 20), _info(1 << 30), _info(64 << 30)
    for i in (small, big, huge):
        image.encode(i)
    assert small.length < big.length < huge.length
    assert huge.length < 600 * 1024          # 500 suspended VMs stay cheap
    assert small.length >= image.MIN_PAGES


def test_payload_depends_on_the_state_and_is_deterministic():
    a = _info()
    b = ImageInfo(a.vm_uuid, a.memory, a.vcpus, dict(a.state))
    c = ImageInfo(a.vm_uuid, a.memory, a.vcpus, {**a.state, "cpu_time": 1})
    assert image.dumps(a) == image.dumps(b)
    assert image.encode(c)[1] != image.encode(a)[1]


def test_streaming_in_odd_chunks():
    info = _info()
    data = image.dumps(info)
    got = image.parse_header(data[:HEADER_SIZE])
    assert got.length == info.length and got.state == {}
    v = image.Verifier(got)
    pos = HEADER_SIZE
    for step in (1, 3, 7, 4093, 65536, 10 ** 7):
        v.update(data[pos:pos + step])
        pos += step
    assert v.remaining == 0
    assert v.finish().state == info.state


@pytest.mark.parametrize("where,message", [
    (0, "not a memory image"),
    (9, "version"),
    (20, "header checksum"),
    (HEADER_SIZE + 2, "payload checksum"),
    (-1, "payload checksum"),
])
def test_corruption_is_caught(where, message):
    data = bytearray(image.dumps(_info()))
    data[where] ^= 0x5A
    with pytest.raises(ImageError, match=message):
        image.read(io.BytesIO(bytes(data)))


def test_truncation_is_caught():
    data = image.dumps(_info())
    with pytest.raises(ImageError, match="truncated"):
        image.read(io.BytesIO(data[:HEADER_SIZE - 1]))
    with pytest.raises(ImageError, match="truncated"):
        image.read(io.BytesIO(data[:-10]))
    with pytest.raises(ImageError, match="truncated"):
        image.loads(data[:-10])


def test_extra_payload_is_caught_when_streaming():
    info = _info()
    data = image.dumps(info)
    v = image.Verifier(image.parse_header(data[:HEADER_SIZE]))
    with pytest.raises(ImageError, match="longer"):
        v.update(data[HEADER_SIZE:] + b"x")
