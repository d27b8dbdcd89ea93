"""VHD images: the compiled core against its reference, and the facade's images against qemu.

* the core (checksums, bitmaps, BAT, sector merging) is compared function by function,
  compiled ``xapi.sm.vhd._vhd`` against ``xapi.sm.vhd.vhd_ref``, on random inputs;
* every image test runs once per implementation, by swapping the facade's core;
* Debian's ``qemu-utils`` checks the images: each one passes ``qemu-img info -f vpc``
  with the right virtual size, and ``qemu-img convert -f vpc -O raw`` of a dynamic VHD
  gives the bytes written (random writes at random offsets against a model);
* chains of three with overwrites at each layer read right through our reader, each
  layer alone reads right through qemu (which ignores parents), coalescing keeps the
  leaf's view, and the fully coalesced root converts to the leaf's view;
* qemu's own VHDs read right through our reader; corrupted ones are caught by check.

qemu's vpc driver has no ``check`` and no differencing support (it reports no
backing file and opens a differencing VHD as a plain dynamic one), so the parent
link is checked by decoding the locators ourselves, and ``backing-filename`` only
if a qemu reports one.
"""
import importlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import uuid as uuidlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xapi.sm import vhd
from xapi.sm.vhd import vhd_ref

try:
    _fast = importlib.import_module("xapi.sm.vhd._vhd")
except ImportError:  # not built: the reference is still tested on its own
    _fast = None

MiB = 1024 * 1024
QEMU_IMG = shutil.which("qemu-img")
needs_qemu = pytest.mark.skipif(QEMU_IMG is None, reason="qemu-img (Debian qemu-utils) not installed")
needs_fast = pytest.mark.skipif(_fast is None, reason="xapi.sm.vhd._vhd not built")

IMPLS = [pytest.param(vhd_ref, id="ref"),
         pytest.param(_fast, id="fast", marks=needs_fast)]

QUICK = settings(max_examples=15, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(params=IMPLS)
def core(request, monkeypatch):
    """Runs the test with the facade using this core."""
    monkeypatch.setattr(vhd, "_core", request.param)
    return request.param


# --------------------------------------------------------------------------- qemu helpers

def qemu_info(path) -> dict:
    out = subprocess.run([QEMU_IMG, "info", "-f", "vpc", "--output=json", str(path)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def qemu_raw(path, tmp_path) -> bytes:
    raw = tmp_path / ("conv-%s.raw" % uuidlib.uuid4().hex[:8])
    subprocess.run([QEMU_IMG, "convert", "-f", "vpc", "-O", "raw", str(path), str(raw)],
                   check=True, capture_output=True)
    data = raw.read_bytes()
    raw.unlink()
    return data


def qemu_check(path) -> None:
    """``qemu-img check`` clean, or qemu's vpc driver saying it has no check (qemu 7.2 has none)."""
    r = subprocess.run([QEMU_IMG, "check", "-f", "vpc", str(path)], capture_output=True, text=True)
    assert r.returncode == 0 or "does not support checks" in r.stderr, r.stderr


def assert_qemu_ok(path, virtual_size) -> dict:
    info = qemu_info(path)
    assert info["format"] == "vpc"
    assert info["virtual-size"] == virtual_size
    assert info.get("cluster-size") == vhd.BLOCK_SIZE
    qemu_check(path)
    return info


# --------------------------------------------------------------------------- the core, compiled vs reference

bitmaps = st.binary(min_size=1, max_size=80)


@needs_fast
@settings(max_examples=150, deadline=None)
@given(buf=st.binary(max_size=1100), skip=st.integers(-1, 1100))
def test_core_checksum(buf, skip):
    outcomes = []
    for m in (vhd_ref, _fast):
        try:
            outcomes.append(m.checksum(buf, skip))
        except IndexError:
            outcomes.append(IndexError)
    assert outcomes[0] == outcomes[1]
    if outcomes[0] is not IndexError and skip < 0:
        assert outcomes[0] == (~sum(buf)) & 0xFFFFFFFF


@needs_fast
@settings(max_examples=200, deadline=None)
@given(bm=bitmaps, start=st.integers(-2, 700), count=st.integers(-2, 700), other=bitmaps)
def test_core_bitmaps(bm, start, count, other):
    def run(m):
        out = []
        for fn in (lambda: m.bitmap_test(bm, start), lambda: m.bitmap_count(bm, count),
                   lambda: m.bitmap_full(bm, count), lambda: m.bitmap_runs(bm, start, count)):
            try:
                out.append(fn())
            except (IndexError, ValueError) as e:
                out.append(type(e))
        b = bytearray(bm)
        try:
            out.append((m.bitmap_set(b, start, count), bytes(b)))
        except (IndexError, ValueError) as e:
            out.append(type(e))
        b = bytearray(bm)
        try:
            out.append((m.bitmap_or(b, other), bytes(b)))
        except IndexError as e:
            out.append(type(e))
        return out
    assert run(vhd_ref) == run(_fast)


@needs_fast
@settings(max_examples=150, deadline=None)
@given(entries=st.lists(st.one_of(st.just(0xFFFFFFFF), st.integers(0, 0xFFFFFFFE)), max_size=40),
       i=st.integers(-1, 45), value=st.integers(-1, 0x100000000), spb=st.integers(1, 5000))
def test_core_bat(entries, i, value, spb):
    raw = b"".join(struct.pack(">I", e) for e in entries)

    def run(m):
        out = [m.bat_allocated(raw, len(entries)), m.bat_end(raw, len(entries), spb)]
        for fn in (lambda: m.bat_get(raw, i), lambda: m.bat_allocated(raw, len(entries) + 1)):
            try:
                out.append(fn())
            except IndexError as e:
                out.append(type(e))
        b = bytearray(raw)
        try:
            m.bat_set(b, i, value)
            out.append(bytes(b))
        except (IndexError, ValueError) as e:
            out.append(type(e))
        return out
    assert run(vhd_ref) == run(_fast)
    assert vhd_ref.bat_allocated(raw, len(entries)) == [k for k, e in enumerate(entries) if e != 0xFFFFFFFF]


@needs_fast
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_core_merge_sectors(data):
    ndst = data.draw(st.integers(0, 40))
    dst_sector = data.draw(st.integers(0, 42))
    nsecs = data.draw(st.integers(0, 12))
    src = bytes((k * 7 + nsecs) & 0xFF for k in range(nsecs * 512))
    bm = data.draw(st.one_of(st.none(), st.binary(min_size=0, max_size=4)))
    bit_start = data.draw(st.integers(0, 30))
    filled0 = data.draw(st.binary(min_size=(ndst + 7) // 8, max_size=(ndst + 7) // 8 + 1))
    dst0 = bytes(range(256)) * (ndst * 2)

    def run(m):
        dst, filled = bytearray(dst0), bytearray(filled0)
        try:
            n = m.merge_sectors(dst, dst_sector, src, bm, bit_start, nsecs, filled)
        except (IndexError, ValueError) as e:
            return type(e)
        return n, bytes(dst), bytes(filled)
    assert run(vhd_ref) == run(_fast)


@needs_fast
@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 5000), pos=st.integers(0, 5000), byte=st.integers(1, 255))
def test_core_is_zero(n, pos, byte):
    buf = bytearray(n)
    assert vhd_ref.is_zero(buf) is _fast.is_zero(buf) is True
    if pos < n:
        buf[pos] = byte
        assert vhd_ref.is_zero(buf) is _fast.is_zero(buf) is False


@needs_fast
@settings(max_examples=150, deadline=None)
@given(header=st.binary(min_size=1000, max_size=1100), uuid=st.binary(min_size=15, max_size=17),
       ts=st.integers(-1, 0x100000000), name=st.binary(max_size=514))
def test_core_header_set_parent(header, uuid, ts, name):
    def run(impl):
        buf = bytearray(header)
        try:
            csum = impl.header_set_parent(buf, uuid, ts, name)
        except (IndexError, ValueError) as e:
            return type(e), bytes(buf)
        return csum, bytes(buf)
    ref = run(vhd_ref)
    assert ref == run(_fast)
    if isinstance(ref[0], int):         # the result is a header whose checksum holds
        buf = ref[1]
        assert buf[40:56] == uuid and buf[64:64 + len(name)] == name and not any(buf[64 + len(name):576])
        assert struct.unpack_from(">I", buf, 36)[0] == vhd_ref.checksum(buf[:1024], 36) == ref[0]


def test_facade_picks_by_env():
    code = "from xapi.sm import vhd; print(vhd.IMPLEMENTATION)"
    env = dict(os.environ, XAPI_PURE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "xapi.sm.vhd.vhd_ref"
    if _fast is not None:
        env["XAPI_PURE"] = "0"
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "xapi.sm.vhd._vhd"


# --------------------------------------------------------------------------- layout

def test_chs_matches_the_spec():
    assert vhd.chs(10 * MiB) == (301, 4, 17)
    assert vhd.chs(2040 * 1024 * MiB) == (65535, 16, 255)
    for size in (MiB, 100 * MiB, 8 * 1024 * MiB, 127 * 1024 * MiB):
        c, h, s = vhd.chs(size)
        assert c * h * s <= size // 512 and c <= 65535 and h <= 16 and s <= 255


@needs_qemu
@pytest.mark.parametrize("size,max_size", [(1, None), (10 * MiB, None), (33 * MiB + 5, 64 * MiB),
                                           (2040 * 1024 * MiB, None)])
def test_create_dynamic(core, tmp_path, size, max_size):
    p = tmp_path / "d.vhd"
    u = vhd.create(str(p), size, max_size=max_size)
    rounded = -(-size // vhd.BLOCK_SIZE) * vhd.BLOCK_SIZE
    assert_qemu_ok(p, rounded)
    assert vhd.check(str(p)) == []
    raw = p.read_bytes()
    foot = raw[-512:]
    assert raw[:512] == foot
    assert foot[:8] == b"conectix" and raw[512:520] == b"cxsparse"
    features, version, data_off, _ts, app, cver, cos, orig, cur, cyl, heads, spt, typ, csum = \
        struct.unpack_from(">IIQI4sIIQQHBBII", foot, 8)
    assert (features, version, data_off, app, cver, cos) == (2, 0x10000, 512, b"tap\0", 0x10003, 0)
    assert orig == cur == rounded and (cyl, heads, spt) == vhd.chs(rounded) and typ == 3
    assert csum == (~sum(foot[:64] + bytes(4) + foot[68:])) & 0xFFFFFFFF
    assert str(uuidlib.UUID(bytes=foot[68:84])) == u
    hdr = raw[512:1536]
    dataoff, table, hver, entries, bsize = struct.unpack_from(">QQIII", hdr, 8)
    assert (dataoff, table, hver, bsize) == (2 ** 64 - 1, 1536, 0x10000, 2 * MiB)
    assert entries == max(rounded, max_size or 0) // (2 * MiB)
    assert raw[1536:1536 + 4 * entries] == b"\xff" * 4 * entries
    batmap_at = 1536 + -(-4 * entries // 512) * 512
    assert raw[batmap_at:batmap_at + 8] == b"tdbatmap"
    q = vhd.query(str(p))
    assert q["type"] == "dynamic" and q["virtual_size"] == rounded and q["allocated_blocks"] == 0
    assert q["physical_size"] == len(raw) and q["parent"] is None and q["uuid"] == u


@needs_qemu
def test_differencing_layout(core, tmp_path):
    base = tmp_path / "base.vhd"
    vhd.create(str(base), 6 * MiB)
    os.utime(base, (1_700_000_000, 1_700_000_000))
    child = tmp_path / "child.vhd"
    vhd.snapshot(str(base), str(child))
    info = assert_qemu_ok(child, 6 * MiB)
    if "backing-filename" in info:          # qemu's vpc driver reports none; a later one might
        assert os.path.basename(info["backing-filename"]) == "base.vhd"
    assert vhd.check(str(child)) == []
    raw = child.read_bytes()
    assert struct.unpack_from(">I", raw, 60)[0] == 4
    hdr = raw[512:1536]
    base_uuid = vhd.query(str(base))["uuid"]
    assert str(uuidlib.UUID(bytes=hdr[40:56])) == base_uuid
    assert struct.unpack_from(">I", hdr, 56)[0] == 1_700_000_000 - 946684800
    assert hdr[64:576].decode("utf-16-be").rstrip("\0") == "base.vhd"
    locs = [struct.unpack_from(">IIIIQ", hdr, 576 + 24 * i) for i in range(8)]
    decoded = {}
    for code, space, length, _res, off in locs[:3]:
        assert space % 512 == 0 and length <= space and off % 512 == 0
        decoded[struct.pack(">I", code)] = raw[off:off + length]
    assert decoded[b"MacX"] == b"file://./base.vhd"
    assert decoded[b"W2ku"].decode("utf-16-le") == ".\\base.vhd"
    assert decoded[b"W2ru"].decode("utf-16-le") == ".\\base.vhd"
    assert all(loc[0] == 0 for loc in locs[3:])
    q = vhd.query(str(child))
    assert q["type"] == "differencing" and q["parent"] == os.path.realpath(base)
    assert q["parent_uuid"] == base_uuid
    assert q["chain_depth"] == 2
    # a parent in another directory: the locators hold ../ paths that resolve
    sub = tmp_path / "sub"
    sub.mkdir()
    vhd.snapshot(str(base), str(sub / "c2.vhd"))
    assert vhd.query(str(sub / "c2.vhd"))["parent"] == os.path.realpath(base)
    assert vhd.check(str(sub / "c2.vhd")) == []


# --------------------------------------------------------------------------- data against qemu and a model

def _apply(model: bytearray, writes):
    for off, data in writes:
        model[off:off + len(data)] = data


def _writes(size):
    return st.lists(st.tuples(st.integers(0, size - 1), st.integers(1, 70_000), st.integers(0, 2 ** 32)),
                    min_size=1, max_size=10).map(
        lambda ws: [(off, random.Random(seed).randbytes(min(n, size - off)) if seed % 5
                     else bytes(min(n, size - off))) for off, n, seed in ws])


@needs_qemu
@QUICK
@given(writes=_writes(5 * MiB))
def test_random_writes_match_qemu(core, tmp_path, writes):
    p = tmp_path / "w.vhd"
    vhd.create(str(p), 5 * MiB)                 # rounds up to 6 MiB
    model = bytearray(6 * MiB)
    with vhd.open(str(p)) as v:
        for off, data in writes:
            v.write(off, data)
        _apply(model, writes)
        off, n = writes[-1][0], len(writes[-1][1])
        assert v.read(off, n) == bytes(model[off:off + n])
    assert_qemu_ok(p, 6 * MiB)
    assert qemu_raw(p, tmp_path) == model
    assert b"".join(vhd.read_all(str(p), 3 * 512 * 1024)) == model
    assert vhd.check(str(p)) == []
    with vhd.open(str(p), readonly=True) as v:
        touched = {off // vhd.BLOCK_SIZE for off, d in writes} | {(off + len(d) - 1) // vhd.BLOCK_SIZE
                                                                  for off, d in writes}
        assert set(v.blocks()) <= set(range(3)) and set(v.blocks()) >= touched
        assert v.allocated_bytes() >= max(len(d) for _, d in writes) // 512 * 512


def _chain(tmp_path, layers_writes, size):
    """Builds base + snapshots, writing each layer's writes; returns (paths, composed model,
    per-layer models as qemu sees each file alone)."""
    paths, model, alone = [], bytearray(size), []
    for i, writes in enumerate(layers_writes):
        p = str(tmp_path / f"l{i}.vhd")
        if i == 0:
            vhd.create(p, size)
        else:
            vhd.snapshot(paths[-1], p)
        touched = set()
        with vhd.open(p) as v:
            for off, data in writes:
                v.write(off, data)
                touched.update(range(off // 512, -(-(off + len(data)) // 512)))
        _apply(model, writes)
        layer = bytearray(size)
        for s in touched:
            layer[s * 512:(s + 1) * 512] = model[s * 512:(s + 1) * 512]
        # qemu reads whole allocated blocks: the unwritten sectors of a block are zeros on disk
        paths.append(p)
        alone.append(layer)
    return paths, model, alone


@needs_qemu
@QUICK
@given(layers=st.lists(_writes(4 * MiB), min_size=3, max_size=3))
def test_chain_of_three(core, tmp_path, layers):
    size = 4 * MiB
    paths, model, alone = _chain(tmp_path, layers, size)
    with vhd.open(paths[-1], readonly=True) as leaf:
        assert leaf.read(0, size) == model
        assert [v.path for v in leaf.chain()] == [os.path.realpath(p) for p in paths[::-1]]
        off, data = layers[1][0]
        assert leaf.read(off, len(data)) == bytes(model[off:off + len(data)])
    for p, layer in zip(paths, alone):
        assert_qemu_ok(p, size)
        assert qemu_raw(p, tmp_path) == layer
        assert vhd.check(p) == []
    # coalesce the leaf into the middle, then the middle into the base: the leaf's view never
    # changes, and the base ends up holding it all (qemu, which ignores parents, agrees)
    vhd.coalesce(paths[2])
    assert b"".join(vhd.read_all(paths[2])) == model
    assert b"".join(vhd.read_all(paths[1])) == model
    vhd.coalesce(paths[1])
    assert b"".join(vhd.read_all(paths[2])) == model
    for p in paths:
        assert vhd.check(p) == []
    assert_qemu_ok(paths[0], size)
    assert qemu_raw(paths[0], tmp_path) == model


def test_coalesce_counts_and_grows_parent(core, tmp_path):
    base, leaf = str(tmp_path / "b.vhd"), str(tmp_path / "c.vhd")
    vhd.create(base, 2 * MiB)
    with vhd.open(base) as v:
        v.write(0, b"\1" * 4096)
    vhd.snapshot(base, leaf)
    vhd.resize(leaf, 6 * MiB)
    with vhd.open(leaf) as v:
        v.write(512, b"\2" * 1024)
        v.write(5 * MiB, b"\3" * 512)
        view = v.read(0, 6 * MiB)
    assert vhd.coalesce(leaf) == 3
    assert vhd.query(base)["virtual_size"] == 6 * MiB
    assert b"".join(vhd.read_all(base)) == view == b"".join(vhd.read_all(leaf))
    assert vhd.check(base) == [] and vhd.check(leaf) == []
    with pytest.raises(vhd.VHDError):
        vhd.coalesce(base)


def test_partial_sector_writes_read_through_parent(core, tmp_path):
    base, leaf = str(tmp_path / "b.vhd"), str(tmp_path / "c.vhd")
    vhd.create(base, 4 * MiB)
    pattern = bytes(range(256)) * 8 * 1024 * 2
    with vhd.open(base) as v:
        v.write(0, pattern[:4 * MiB])
    vhd.snapshot(base, leaf)
    with vhd.open(leaf) as v:
        v.write(2 * MiB - 3, b"abcdef")         # straddles a sector and a block boundary
        expect = bytearray(pattern[:4 * MiB])
        expect[2 * MiB - 3:2 * MiB + 3] = b"abcdef"
        assert v.read(0, 4 * MiB) == expect
        assert v.allocated_bytes() == 1024 and v.blocks() == [0, 1]
        with pytest.raises(vhd.VHDError):
            v.read(4 * MiB - 1, 2)
        with pytest.raises(vhd.VHDError):
            v.write(4 * MiB, b"x")
    with vhd.open(leaf, readonly=True) as v, pytest.raises(vhd.VHDError):
        v.write(0, b"x")


@needs_qemu
def test_reads_qemu_images(core, tmp_path):
    raw = tmp_path / "r.raw"
    data = os.urandom(3_000_000) + bytes(3 * MiB) + os.urandom(1_000_448)
    raw.write_bytes(data)
    for opts in ("subformat=dynamic", "subformat=dynamic,force_size=on"):
        q = tmp_path / "q.vhd"
        subprocess.run([QEMU_IMG, "convert", "-f", "raw", "-O", "vpc", "-o", opts, str(raw), str(q)],
                       check=True, capture_output=True)
        with vhd.open(str(q), readonly=True) as v:
            assert v.virtual_size == qemu_info(q)["virtual-size"] >= len(data)
            got = v.read(0, v.virtual_size)
        assert got[:len(data)] == data and not any(got[len(data):])
        assert vhd.check(str(q)) == []
        # and a child of qemu's image reads through to it
        c = tmp_path / "qc.vhd"
        vhd.snapshot(str(q), str(c))
        with vhd.open(str(c)) as v:
            v.write(100, b"z" * 10)
            assert v.read(0, 200) == data[:100] + b"z" * 10 + data[110:200]
        os.unlink(c)
        os.unlink(q)


@needs_qemu
def test_resize(core, tmp_path):
    p = str(tmp_path / "r.vhd")
    vhd.create(p, 4 * MiB, max_size=8 * MiB)
    with vhd.open(p) as v:
        v.write(MiB, b"a" * 5000)
    before = os.path.getsize(p)
    vhd.resize(p, 7 * MiB)                     # within the reserved BAT: footers only
    assert os.path.getsize(p) == before
    assert_qemu_ok(p, 8 * MiB)
    vhd.resize(p, 20 * MiB)                    # beyond: the BAT moves to the end
    info = vhd.query(p)
    assert info["virtual_size"] == info["max_virtual_size"] == 20 * MiB
    with vhd.open(p) as v:
        v.write(19 * MiB, b"b" * 5000)
    model = bytearray(20 * MiB)
    model[MiB:MiB + 5000] = b"a" * 5000
    model[19 * MiB:19 * MiB + 5000] = b"b" * 5000
    assert vhd.check(p) == []
    assert_qemu_ok(p, 20 * MiB)
    assert qemu_raw(p, tmp_path) == model
    assert b"".join(vhd.read_all(p)) == model
    with pytest.raises(vhd.VHDError):
        vhd.resize(p, 2 * MiB)


@needs_qemu
def test_import_export_raw(core, tmp_path):
    raw = tmp_path / "in.raw"
    data = bytes(2 * MiB) + os.urandom(MiB) + bytes(3 * MiB) + os.urandom(100_000)
    raw.write_bytes(data)
    p = tmp_path / "im.vhd"
    assert vhd.import_raw(str(p), str(raw)) == 2          # blocks 1 and 3; 0 and 2 are all zero
    size = vhd.query(str(p))["virtual_size"]
    assert size == 8 * MiB and vhd.query(str(p))["allocated_blocks"] == 2
    expect = data + bytes(size - len(data))
    assert_qemu_ok(p, size)
    assert qemu_raw(p, tmp_path) == expect
    out = tmp_path / "out.raw"
    assert vhd.export_raw(str(p), str(out)) == size
    assert out.read_bytes() == expect
    assert os.stat(out).st_blocks * 512 < size            # sparse


@needs_qemu
def test_hidden_flag(core, tmp_path):
    p = str(tmp_path / "h.vhd")
    vhd.create(p, 2 * MiB)
    vhd.set_hidden(p)
    raw = open(p, "rb").read()
    assert raw[85] == 1 and raw[-512 + 85] == 1
    assert vhd.query(p)["hidden"] is True and vhd.check(p) == []
    assert_qemu_ok(p, 2 * MiB)


# --------------------------------------------------------------------------- corruption

def _corrupt(path, offset, xor=0x40):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ xor]))


def test_check_catches_corruption(core, tmp_path):
    good = str(tmp_path / "g.vhd")
    vhd.create(good, 4 * MiB)
    with vhd.open(good) as v:
        v.write(0, b"x" * 4096)
    size = os.path.getsize(good)

    def broken(offset, xor=0x40):
        p = str(tmp_path / "b.vhd")
        shutil.copy(good, p)
        _corrupt(p, offset, xor)
        return p, vhd.check(p)

    p, problems = broken(size - 512 + 40)          # footer at the end: a size byte
    assert any("footer at end of file: bad checksum" in x for x in problems)
    with vhd.open(p, readonly=True) as v:          # the copy at 0 still opens it, as blktap does
        assert v.read(0, 4) == b"xxxx"
    p, problems = broken(size - 512)                # footer cookie
    assert any("bad cookie" in x for x in problems)
    p, problems = broken(64)                        # footer copy's checksum
    assert any("footer copy at offset 0: bad checksum" in x for x in problems)
    p, problems = broken(512 + 30)                  # header: max_bat_size
    assert any("dynamic header: bad checksum" in x for x in problems)
    with pytest.raises(vhd.VHDError):
        vhd.open(p)
    p, problems = broken(1536, 0x01)                # BAT entry 0 now points past the file
    assert any(x.startswith("block 0") for x in problems)
    p = str(tmp_path / "m.vhd")                     # BAT entry 1 pointing into the BAT itself
    shutil.copy(good, p)
    with open(p, "r+b") as f:
        f.seek(1536 + 4)
        f.write(struct.pack(">I", 3))
    assert any(x.startswith("block 1: at 1536, inside the metadata") for x in vhd.check(p))
    # batmap: say block 1 is full while it is not allocated, with a right checksum
    p = str(tmp_path / "bm.vhd")
    shutil.copy(good, p)
    with vhd.open(p) as v:
        v._batmap[0] |= 0x40
        _apply_batmap(v)
    assert any("batmap says full" in x for x in vhd.check(p))
    # a differencing disk whose parent changed identity
    base, leaf = str(tmp_path / "pa.vhd"), str(tmp_path / "ch.vhd")
    vhd.create(base, 2 * MiB)
    vhd.snapshot(base, leaf)
    vhd.create(base, 2 * MiB)
    assert any("parent" in x and "UUID" in x for x in vhd.check(leaf))
    os.unlink(base)
    assert any(x.startswith("parent:") for x in vhd.check(leaf))
    assert vhd.check(str(tmp_path / "missing.vhd"))[0].startswith("cannot open")


def _apply_batmap(v):
    vhd._pwrite(v._fd, v._batmap, v._batmap_off)
    v._write_batmap_header()


def test_batmap_tracks_full_blocks(core, tmp_path):
    p = str(tmp_path / "f.vhd")
    vhd.create(p, 6 * MiB)
    with vhd.open(p) as v:
        v.write(2 * MiB, b"q" * (2 * MiB))
        v.write(0, b"q" * 512)
        assert v._batmap[0] == 0x40
    with vhd.open(p, readonly=True) as v:
        assert v._batmap is not None and v._batmap[0] == 0x40
    assert vhd.check(p) == []


# --------------------------------------------------------------------------- the command

def _cli(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "xapi.sm.vhd.cli", *args], capture_output=True, text=True)
    if check:
        assert r.returncode == 0, r.stderr + r.stdout
    return r


@needs_qemu
def test_cli(tmp_path):
    a, b = str(tmp_path / "a.vhd"), str(tmp_path / "b.vhd")
    _cli("create", "-n", a, "-s", "10", "-S", "20")
    _cli("snapshot", "-n", b, "-p", a)
    assert _cli("query", "-n", b, "-v", "-s", "-p", "-f", "-d", "-S").stdout.splitlines() == [
        "10", str(os.path.getsize(b)), os.path.realpath(a), "hidden: 0", "chain depth: 2", "10"]
    assert _cli("query", "-n", a, "-S").stdout.strip() == "20"
    assert _cli("query", "-n", a, "-p").stdout.strip() == f"{a} has no parent"
    assert json.loads(_cli("query", "-n", b, "--json").stdout)["parent"] == os.path.realpath(a)
    with vhd.open(b) as v:
        v.write(0, b"c" * 4096)
    assert _cli("coalesce", "-n", b).stdout.strip() == "Coalesced 8 sectors"
    assert _cli("check", "-n", a).stdout.strip() == f"{a} is valid"
    _cli("set", "-n", a, "-f", "hidden", "-v", "1")
    assert _cli("query", "-n", a, "-f").stdout.strip() == "hidden: 1"
    _cli("resize", "-n", a, "-s", "30", "-j", str(tmp_path / "journal"))
    assert _cli("query", "-n", a, "-v").stdout.strip() == "30"
    assert_qemu_ok(a, 30 * MiB)
    raw = str(tmp_path / "a.raw")
    _cli("export", "-n", b, "-o", raw)
    assert open(raw, "rb").read(4097) == b"c" * 4096 + b"\0"
    _cli("import", "-n", str(tmp_path / "i.vhd"), "-i", raw)
    assert vhd.query(str(tmp_path / "i.vhd"))["allocated_blocks"] == 1
    _corrupt(a, 64)
    r = _cli("check", "-n", a, check=False)
    assert r.returncode == 1 and "appears invalid" in r.stdout
    r = _cli("query", "-n", str(tmp_path / "nope.vhd"), "-v", check=False)
    assert r.returncode == 1 and "error" in r.stderr


def test_set_parent(core, tmp_path):
    """A differencing VHD moved onto another parent (SM's vdi_compose): reads come from its own
    blocks, then the new parent's chain; the header and locators name the new parent (our reader,
    check, and the vhd-util-like `modify -p`); a loop or a non-differencing child is refused."""
    size = 8 * vhd.BLOCK_SIZE
    old, new_base, new_top, child = (str(tmp_path / f"{n}.vhd") for n in ("old", "base", "top", "child"))
    vhd.create(old, size)
    with vhd.open(old) as v:
        v.write(0, b"\x01" * size)
    vhd.snapshot(old, child)
    with vhd.open(child) as v:                          # the child's own layer: blocks 2 and 5
        v.write(2 * vhd.BLOCK_SIZE, b"\x22" * vhd.BLOCK_SIZE)
        v.write(5 * vhd.BLOCK_SIZE + 4096, b"\x55" * 512)
    vhd.create(new_base, size)
    with vhd.open(new_base) as v:
        v.write(0, b"\xb0" * (4 * vhd.BLOCK_SIZE))
    vhd.snapshot(new_base, new_top)
    with vhd.open(new_top) as v:
        v.write(3 * vhd.BLOCK_SIZE, b"\x33" * vhd.BLOCK_SIZE)
    vhd.set_parent(child, new_top)
    expected = bytearray(b"\xb0" * (4 * vhd.BLOCK_SIZE) + bytes(4 * vhd.BLOCK_SIZE))
    expected[3 * vhd.BLOCK_SIZE:4 * vhd.BLOCK_SIZE] = b"\x33" * vhd.BLOCK_SIZE
    expected[2 * vhd.BLOCK_SIZE:3 * vhd.BLOCK_SIZE] = b"\x22" * vhd.BLOCK_SIZE
    expected[5 * vhd.BLOCK_SIZE + 4096:5 * vhd.BLOCK_SIZE + 4608] = b"\x55" * 512
    with vhd.open(child, readonly=True) as v:
        assert v.parent == os.path.realpath(new_top)
        with vhd.open(new_top, readonly=True) as p:
            assert v.parent_uuid == p.uuid
        assert [os.path.basename(x.path) for x in v.chain()] == ["child.vhd", "top.vhd", "base.vhd"]
        assert v.read(0, size) == expected
        name = v.header.parent_name.decode("utf-16-be").rstrip("\0")
        assert name == "top.vhd"
    assert vhd.check(child) == []
    assert vhd.query(child)["chain_depth"] == 3
    # the command, back onto the old parent
    _cli("modify", "-n", child, "-p", old)
    assert _cli("query", "-n", child, "-p").stdout.strip() == os.path.realpath(old)
    with vhd.open(child, readonly=True) as v:
        assert v.read(0, vhd.BLOCK_SIZE) == b"\x01" * vhd.BLOCK_SIZE
    with pytest.raises(vhd.VHDError):
        vhd.set_parent(new_base, old)                   # not differencing
    with pytest.raises(vhd.VHDError):
        vhd.set_parent(new_top, child)                  # child -> old; top under child: fine...
        vhd.set_parent(child, new_top)                  # ...then child under top: a loop
    r = _cli("modify", "-n", child, "-p", str(tmp_path / "missing.vhd"), check=False)
    assert r.returncode == 1 and "error" in r.stderr
    assert vhd.check(child) == []


# --------------------------------------------------------------------------- whole-block fast path

def _blocks_pattern(nblocks: int, last: int) -> list[bytes]:
    rnd = random.Random(nblocks * 7 + last)
    out = [rnd.randbytes(vhd.BLOCK_SIZE) for _ in range(nblocks - 1)]
    out.append(rnd.randbytes(last))
    return out


def test_write_block_matches_write(core, tmp_path):
    """write_block gives the same disk as write() block by block (new blocks, a partly written one,
    a whole one), reads back through read/read_block_into, checks clean, and qemu agrees."""
    n, last = 5, vhd.BLOCK_SIZE
    size = (n - 1) * vhd.BLOCK_SIZE + last
    data = _blocks_pattern(n, last)
    a, b = tmp_path / "slow.vhd", tmp_path / "fast.vhd"
    for p in (a, b):
        vhd.create(str(p), size)
        with vhd.open(str(p)) as v:                   # block 1 already partly written, block 3 whole
            v.write(vhd.BLOCK_SIZE + 4096, b"\x11" * 1000)
            v.write(3 * vhd.BLOCK_SIZE, b"\x22" * vhd.BLOCK_SIZE)
    order = [3, 0, 4, 1]                              # block 2 left alone
    with vhd.open(str(a)) as v:
        for k in order:
            v.write(k * vhd.BLOCK_SIZE, data[k])
    with vhd.open(str(b)) as v:
        for k in order:
            v.write_block(k, data[k])
        for k in order:
            out = bytearray(len(data[k]))
            v.read_block_into(k, out)
            assert out == data[k]
        out = bytearray(vhd.BLOCK_SIZE)
        v.read_block_into(2, out)
        assert out == bytes(vhd.BLOCK_SIZE)
        with pytest.raises(vhd.VHDError):
            v.write_block(0, b"\0" * 512)              # not a whole block
        with pytest.raises(vhd.VHDError):
            v.write_block(n, data[0])                  # past the end
    with vhd.open(str(a)) as va, vhd.open(str(b)) as vb:
        assert va.read(0, size) == vb.read(0, size)
        assert va.blocks() == vb.blocks()
        for k in va.blocks():
            assert va.bitmap(k) == vb.bitmap(k)
        assert va.allocated_bytes() == vb.allocated_bytes()
    assert vhd.check(str(b)) == []
    expected = b"".join(data[:2]) + bytes(vhd.BLOCK_SIZE) + b"".join(data[3:])
    expected = bytearray(expected)
    with vhd.open(str(b)) as vb:
        assert vb.read(0, size) == expected
    if QEMU_IMG is not None:
        assert_qemu_ok(b, size)
        assert qemu_raw(b, tmp_path) == expected


def test_write_block_differencing(tmp_path):
    """A whole block written into a differencing child hides the parent's."""
    parent, child = tmp_path / "p.vhd", tmp_path / "c.vhd"
    vhd.create(str(parent), 4 * vhd.BLOCK_SIZE)
    with vhd.open(str(parent)) as v:
        v.write(0, b"\x33" * (2 * vhd.BLOCK_SIZE))
    vhd.snapshot(str(parent), str(child))
    new = os.urandom(vhd.BLOCK_SIZE)
    with vhd.open(str(child)) as v:
        v.write_block(1, new)
        assert v.read(0, 2 * vhd.BLOCK_SIZE) == b"\x33" * vhd.BLOCK_SIZE + new
        out = bytearray(vhd.BLOCK_SIZE)
        v.read_block_into(0, out)                      # from the parent, through read()
        assert out == b"\x33" * vhd.BLOCK_SIZE
    assert vhd.check(str(child)) == []


def test_block_target_and_commit(core, tmp_path):
    """A writer that puts whole blocks into the file itself (block_target, its own pwrite,
    commit_block) gets the disk write_block gives; a new block left uncommitted (a zero block the
    import skips) leaves no trace once flushed, and the next new block takes its place."""
    n = 4
    size = n * vhd.BLOCK_SIZE
    data = _blocks_pattern(n, vhd.BLOCK_SIZE)
    a, b = tmp_path / "write_block.vhd", tmp_path / "target.vhd"
    for p in (a, b):
        vhd.create(str(p), size)
        with vhd.open(str(p)) as v:                   # block 2 already partly written
            v.write(2 * vhd.BLOCK_SIZE + 512, b"\x44" * 700)
    with vhd.open(str(a)) as v:
        for k in (0, 2, 3):
            v.write_block(k, data[k])
    with vhd.open(str(b)) as v:
        fd = os.open(str(b), os.O_RDWR)
        try:
            at, new = v.block_target(1)                # staged, then dropped: block 1 stays unmapped
            assert new
            os.pwrite(fd, bytes(vhd.BLOCK_SIZE), at)
            for k in (0, 2, 3):
                at2, new2 = v.block_target(k)
                assert new2 == (k != 2)
                if k == 0:
                    assert at2 == at                  # the dropped block's place is taken again
                os.pwrite(fd, data[k], at2)
                v.commit_block(k, len(data[k]))
            at, new = v.block_target(1)                # staged again and left: flush drops it
            os.pwrite(fd, b"\x55" * vhd.BLOCK_SIZE, at)
        finally:
            os.close(fd)
        with pytest.raises(vhd.VHDError):
            v.commit_block(0, 512)                     # not a whole block
        v.flush()
    with vhd.open(str(a), readonly=True) as va, vhd.open(str(b), readonly=True) as vb:
        assert va.blocks() == vb.blocks() == [0, 2, 3]
        assert va.read(0, size) == vb.read(0, size)
        for k in vb.blocks():
            assert va.bitmap(k) == vb.bitmap(k)
    assert os.path.getsize(a) == os.path.getsize(b)
    assert vhd.check(str(b)) == []
    if QEMU_IMG is not None:
        assert_qemu_ok(b, size)
        assert qemu_raw(b, tmp_path) == data[0] + bytes(vhd.BLOCK_SIZE) + data[2] + data[3]
