"""The sans-IO XVA layers (xapi.xva): tar headers as Python's tarfile reads and writes them, the push
parser fed in odd pieces, XXH64 against the specification's values, ova.xml both ways (ours and the
whitespace-laden form older XenServers wrote), and the chunk rules of stream_vdi.ml."""
import hashlib
import io
import os
import tarfile

import pytest

from xapi.xva import checksum, chunks, ovaxml, tar

MiB = 1 << 20


def test_headers_read_by_tarfile():
    data = os.urandom(1000)
    blob = b"".join(tar.member("ova.xml", b"<value/>") + tar.member("Ref:12/00000007", data)) + tar.END
    with tarfile.open(fileobj=io.BytesIO(blob)) as tf:
        names = tf.getnames()
        assert names == ["ova.xml", "Ref:12/00000007"]
        assert tf.extractfile("Ref:12/00000007").read() == data
        assert tf.getmember("ova.xml").isfile()


def test_reader_in_small_pieces_and_from_tarfile():
    out = io.BytesIO()
    long_name = "x" * 120 + "/chunk"
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, payload in (("ova.xml", b"abc"), ("Ref:0/00000000", b"\1" * 513), (long_name, b"")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    blob = out.getvalue()
    r = tar.Reader()
    got = []
    for i in range(0, len(blob), 333):
        got += r.feed(blob[i:i + 333])
    assert got == [("ova.xml", b"abc"), ("Ref:0/00000000", b"\1" * 513), (long_name, b"")]
    assert r.done
    r.finish()


def test_reader_errors():
    blob = b"".join(tar.member("ova.xml", b"a" * 2000))
    r = tar.Reader()
    assert r.feed(blob[:1000]) == []
    with pytest.raises(tar.PrematureEof):
        r.finish()
    bad = bytearray(tar.header("ova.xml", 3))
    bad[0] ^= 1
    with pytest.raises(tar.TarError):
        tar.Reader().feed(bytes(bad))
    with pytest.raises(tar.TarError):
        tar.Reader(max_member=10).feed(tar.header("big", 11))


@pytest.mark.parametrize("fn", [checksum.xxh64, checksum.xxh64_reference])
def test_xxh64_known_values(fn):
    assert "%016X" % fn(b"") == "EF46DB3751D8E999"
    assert "%016X" % fn(b"abc") == "44BC2CF5AD770999"
    data = bytes(range(256)) * 9
    assert fn(data) == checksum.xxh64_reference(data)


def test_checksum_members():
    data = os.urandom(100)
    assert checksum.compute(".checksum", data) == hashlib.sha1(data).hexdigest()
    assert checksum.compute(".xxhash", data) == "%016X" % checksum.xxh64_reference(data)
    assert checksum.extension_of("Ref:1/00000000.xxhash") == ".xxhash"
    assert checksum.extension_of("Ref:1.5/00000000") == ""
    with pytest.raises(ValueError):
        checksum.compute(".md5", data)


def test_ova_xml_both_ways():
    header = ovaxml.Header(ovaxml.Version("h", "2026-01-01", "1.0", "pyxapi", "1", 2, 21),
                           [ovaxml.Obj("VM", "Ref:0", {"name_label": "a<b", "VCPUs_max": 2, "is_a_template": False,
                                                       "VBDs": ["Ref:1"], "platform": {"acpi": "1"}})])
    text = ovaxml.dumps(header)
    assert text.startswith(b"<value><struct>") and b"<member><name>VCPUs_max</name><value>2</value>" in text
    back = ovaxml.loads(text)
    assert back.version.export_vsn == 2 and back.version.xapi_minor == 21
    (o,) = back.objects
    assert (o.cls, o.id) == ("VM", "Ref:0") and o.snapshot["name_label"] == "a<b"
    assert o.snapshot["VBDs"] == ["Ref:1"] and o.snapshot["is_a_template"] is False


def test_ova_xml_as_old_xenserver_wrote_it():
    xml = (b'<?xml version="1.0"?>\n<value>  <struct>    <member>      <name>version</name>      <value>'
           b'<struct><member><name>hostname</name><value>cheesy</value></member>'
           b'<member><name>date</name><value>2009-12-02</value></member>'
           b'<member><name>product_version</name><value>5.5.0</value></member>'
           b'<member><name>product_brand</name><value>XenServer</value></member>'
           b'<member><name>build_number</name><value>24648p</value></member>'
           b'<member><name>xapi_major</name><value><i4>1</i4></value></member>'
           b'<member><name>xapi_minor</name><value>3</value></member></struct></value>    </member>'
           b'<member><name>objects</name><value><array><data/></array></value></member>  </struct></value>')
    h = ovaxml.loads(xml)
    assert (h.version.xapi_major, h.version.xapi_minor, h.version.export_vsn) == (1, 3, 0)
    with pytest.raises(ovaxml.OvaError):
        ovaxml.loads(b"<value><struct></struct></value>")
    with pytest.raises(ovaxml.OvaError):
        ovaxml.loads(b"not xml")


def test_chunks_kept_and_encoded():
    data = bytes(MiB) + b"\1" * MiB + bytes(MiB)
    blob, kept = chunks.encode_batch("Ref:3", 0, 3, data, lambda v: not any(v))
    assert kept == 3                                 # first and last even when zero
    blob2, kept2 = chunks.encode_batch("Ref:3", 1, 5, bytes(2 * MiB), lambda v: not any(v))
    assert kept2 == 0 and blob2 == b""
    files = tar.Reader().feed(blob)
    assert [n for n, _ in files] == ["Ref:3/00000000", "Ref:3/00000000.checksum", "Ref:3/00000001",
                                     "Ref:3/00000001.checksum", "Ref:3/00000002", "Ref:3/00000002.checksum"]
    assert files[3][1].decode() == hashlib.sha1(b"\1" * MiB).hexdigest()


def _feed(receiver, files):
    out = []
    for name, data in files:
        out += receiver.file(name, data)
    return out


def test_receiver_orders_disks_and_fills_gaps():
    # disks sorted as strings: Ref:10 before Ref:9
    r = chunks.Receiver([("Ref:9", 3 * MiB), ("Ref:10", 2 * MiB)], True)
    a, b = b"\1" * MiB, b"\2" * MiB
    files = [("Ref:10/00000000", a), ("Ref:10/00000000.checksum", checksum.sha1_hex(a).encode()),
             ("Ref:10/00000001", b), ("Ref:10/00000001.xxhash", checksum.xxhash_hex(b).encode()),
             ("Ref:9/00000000", a), ("Ref:9/00000000.checksum", checksum.sha1_hex(a).encode()),
             ("Ref:9/00000002", b), ("Ref:9/00000002.checksum", b"0" * 40)]
    writes = _feed(r, files)
    assert r.done
    assert [(w.disk, w.offset) for w in writes] == [(1, 0), (1, MiB), (0, 0), (0, 2 * MiB)]
    assert [chunks.verify(w) is None for w in writes] == [True, True, True, False]
    assert "Block Ref:9/00000002 checksum failed" in chunks.verify(writes[3])


def test_receiver_errors():
    with pytest.raises(chunks.XvaFormatError) as e:
        _feed(chunks.Receiver([("Ref:1", 2 * MiB)], True), [("Ref:2/00000000", b"x")])
    assert e.value.code == "IMPORT_ERROR_GENERIC" and "Invalid XVA file" in e.value.params[0]
    with pytest.raises(chunks.XvaFormatError) as e:
        _feed(chunks.Receiver([("Ref:1", 2 * MiB)], True),
              [("Ref:1/00000000", b"x" * MiB), ("Ref:1/00000000.md5", b"00")])
    assert "unsupported checksum file" in e.value.params[0]
    with pytest.raises(chunks.XvaFormatError):
        _feed(chunks.Receiver([("Ref:1", 3 * MiB)], False),
              [("Ref:1/00000001", b"x" * MiB), ("Ref:1/00000001", b"x" * MiB)])
    # export_vsn 0: no checksum members
    r = chunks.Receiver([("Ref:1", 2 * MiB)], False)
    assert [w.offset for w in _feed(r, [("Ref:1/00000000", b"x" * MiB), ("Ref:1/00000001", b"y" * MiB)])] == [0, MiB]
    assert r.done
