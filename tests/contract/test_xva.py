"""GET /export and PUT /import (XVA archives) on a real daemon with the XenAPI SDK and plain HTTP:
the archive's layout read back with tarfile, round trips into the same and another SR (plain and
gzip), a bad checksum and a truncated archive failing on the task with nothing left behind, an
archive laid out as XCP-ng writes it (.xxhash checksums) importing, a running VM refused, and the
daemon's memory staying flat while a large disk goes out and back in."""
import gzip
import hashlib
import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import xmlrpc.client

import pytest

from tests.fixtures import own_daemon, root_session, xenapi_of
from tests.helpers import new_vdi, raw_vdi
from xapi import xenctrl
from xapi.xva import checksum as xva_checksum

MiB = 1 << 20


d = own_daemon("--request-timeout", "20", env={"XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05"})
api = root_session("d", originator="xva-tests")
x = xenapi_of("api")


@pytest.fixture(scope="module")
def sid(api):
    return api._session


@pytest.fixture(scope="module")
def sr2(x):
    folder = tempfile.mkdtemp(prefix="xva-sr2-")
    ref = x.SR.create(x.host.get_all()[0], {"path": folder}, "0", "second", "", "ext", "user", False, {})
    yield ref
    shutil.rmtree(folder, ignore_errors=True)


# -- helpers ----------------------------------------------------------------------------------------
def vm_record(name):
    m = str(256 * MiB)
    return {
        "name_label": name, "name_description": "exported", "user_version": "1", "is_a_template": False,
        "affinity": "OpaqueRef:NULL", "memory_static_max": m, "memory_dynamic_max": m,
        "memory_dynamic_min": m, "memory_static_min": m, "VCPUs_params": {}, "VCPUs_max": "2",
        "VCPUs_at_startup": "2", "actions_after_shutdown": "destroy", "actions_after_reboot": "restart",
        "actions_after_crash": "destroy", "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "",
        "PV_args": "", "PV_bootloader_args": "", "PV_legacy_args": "", "HVM_boot_policy": "BIOS order",
        "HVM_boot_params": {"order": "cd"}, "platform": {"acpi": "1"}, "PCI_bus": "",
        "other_config": {"purpose": "xva-test"}, "recommendations": "",
    }


def disk_data(nchunks, present):
    """A disk of nchunks MiB where only the chunks in `present` hold (distinct) data."""
    out = bytearray(nchunks * MiB)
    for i in present:
        out[i * MiB:(i + 1) * MiB] = hashlib.sha256(b"%d" % i).digest() * (MiB // 32)
        out[i * MiB] = i + 1
    return bytes(out)


DISK_A = (8, {0, 3, 4})          # 8 MiB: chunks 1, 2, 5, 6 and 7 are zero (the last one still goes)
DISK_B = (4, {1, 3})             # 4 MiB: chunk 0 is zero (still goes), 2 is left out


@pytest.fixture(scope="module")
def vm(d, x, sid, sr):
    ref = x.VM.create(vm_record("xva-source"))
    disks = []
    for dev, (n, present) in enumerate((DISK_A, DISK_B)):
        vdi = new_vdi(x, sr, n * MiB, f"disk{dev}")
        data = disk_data(n, present)
        raw_vdi(d, sid, "import_raw_vdi", vdi, data)
        x.VBD.create({"VM": ref, "VDI": vdi, "userdevice": str(dev), "bootable": dev == 0, "mode": "RW",
                      "type": "Disk", "empty": False, "other_config": {}, "qos_algorithm_type": "",
                      "qos_algorithm_params": {}})
        disks.append((vdi, data))
    x.VBD.create({"VM": ref, "VDI": "OpaqueRef:NULL", "userdevice": "3", "bootable": False, "mode": "RO",
                  "type": "CD", "empty": True, "other_config": {}, "qos_algorithm_type": "",
                  "qos_algorithm_params": {}})
    net = x.network.get_all()[0]
    x.VIF.create({"device": "0", "network": net, "VM": ref, "MAC": "aa:bb:cc:00:11:22", "MTU": "1500",
                  "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
    return ref, disks


def export(d, query, path, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=60)
    try:
        c.request("GET", "/export?" + query, headers=headers or {})
        r = c.getresponse()
        with open(path, "wb") as f:
            while True:
                piece = r.read(MiB)
                if not piece:
                    break
                f.write(piece)
        return r.status, dict(r.getheaders())
    finally:
        c.close()


def import_(d, query, body, chunked=False):
    c = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=60)
    try:
        if chunked:
            c.request("PUT", "/import?" + query, body=iter([body[i:i + 300000] for i in range(0, len(body), 300000)]),
                      encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
        else:
            c.request("PUT", "/import?" + query, body=body, headers={"Content-Length": str(len(body))})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def task_outcome(x, task):
    deadline = time.monotonic() + 30
    while x.task.get_status(task) in ("pending", "cancelling") and time.monotonic() < deadline:
        time.sleep(0.05)
    return x.task.get_status(task), x.task.get_error_info(task), x.task.get_result(task)


def parse_value(xml):
    doc = b"<?xml version='1.0'?><methodResponse><params><param>" + xml + b"</param></params></methodResponse>"
    return xmlrpc.client.loads(doc)[0][0]


def result_refs(result):
    return parse_value(result.encode())


KEPT = ("name_label", "name_description", "memory_static_max", "memory_dynamic_min", "VCPUs_max",
        "VCPUs_at_startup", "HVM_boot_policy", "HVM_boot_params", "platform", "is_a_template",
        "actions_after_crash", "user_version")


# -- the archive's layout ---------------------------------------------------------------------------
def test_export_layout(d, x, sid, vm, tmp_path):
    ref, disks = vm
    task = x.task.create("export", "")
    path = tmp_path / "vm.xva"
    status, headers = export(d, f"session_id={sid}&ref={ref}&task_id={task}", path)
    assert status == 200
    assert headers.get("Task-Id") == task and "export.xva" in headers["Content-Disposition"]
    st, err, _ = task_outcome(x, task)
    assert st == "success", err
    assert x.VM.get_current_operations(ref) == {}

    with tarfile.open(path) as tf:
        members = tf.getmembers()
        assert members[0].name == "ova.xml"
        header = parse_value(tf.extractfile(members[0]).read())
        v = header["version"]
        assert set(v) == {"hostname", "date", "product_version", "product_brand", "build_number",
                          "xapi_major", "xapi_minor", "export_vsn"} and int(v["export_vsn"]) == 2
        objs = {o["id"]: o for o in header["objects"]}
        classes = [o["class"] for o in header["objects"]]
        assert classes.count("VM") == 1 and classes.count("VBD") == 3 and classes.count("VDI") == 2
        assert classes.count("VIF") == 1 and classes.count("network") == 1 and classes.count("SR") == 1
        vm_obj = next(o for o in header["objects"] if o["class"] == "VM")
        assert vm_obj["id"] == "Ref:0"
        snap = vm_obj["snapshot"]
        assert snap["name_label"] == "xva-source" and snap["power_state"] == "Halted"
        assert all(r in objs for r in snap["VBDs"] + snap["VIFs"])
        for o in header["objects"]:
            if o["class"] == "VBD":
                vbd = o["snapshot"]
                assert vbd["VM"] == "Ref:0" and (vbd["VDI"] in objs or vbd["empty"] and vbd["VDI"] == "OpaqueRef:NULL")
        # the chunks: names, checksums, zero chunks left out but the first and the last
        names = [m.name for m in members[1:]]
        vdi_ids = sorted(o["id"] for o in header["objects"] if o["class"] == "VDI")
        by_uuid = {o["snapshot"]["uuid"]: o["id"] for o in header["objects"] if o["class"] == "VDI"}
        expect = []
        for vdi, data in disks:
            prefix = by_uuid[x.VDI.get_uuid(vdi)]
            n = len(data) // MiB
            kept = [i for i in range(n) if i in (0, n - 1) or any(data[i * MiB:(i + 1) * MiB])]
            expect.append((prefix, [f"{prefix}/{i:08d}" for i in kept], data))
        expect.sort()
        assert [p for p, _, _ in expect] == vdi_ids
        want = []
        for _, chunk_names, _ in expect:
            for c in chunk_names:
                want += [c, c + ".checksum"]
        assert names == want
        for prefix, chunk_names, data in expect:
            rebuilt = bytearray(len(data))
            for c in chunk_names:
                payload = tf.extractfile(c).read()
                assert tf.extractfile(c + ".checksum").read().decode() == hashlib.sha1(payload).hexdigest()
                i = int(c.rsplit("/", 1)[1])
                rebuilt[i * MiB:i * MiB + len(payload)] = payload
            assert bytes(rebuilt) == data


def _check_imported(x, d, sid, new, src, disks, sr):
    a, b = x.VM.get_record(new), x.VM.get_record(src)
    for f in KEPT:
        assert a[f] == b[f], f
    assert a["uuid"] != b["uuid"] and a["power_state"] == "Halted"
    assert a["other_config"]["purpose"] == "xva-test" and "import_task" in a["other_config"]
    assert a["current_operations"] == {}
    vbds = sorted(a["VBDs"], key=lambda v: x.VBD.get_userdevice(v))
    assert len(vbds) == 3
    cd = vbds.pop()
    assert x.VBD.get_type(cd) == "CD" and x.VBD.get_empty(cd) is True
    for vbd, (_, data) in zip(vbds, disks):
        vdi = x.VBD.get_VDI(vbd)
        assert x.VDI.get_SR(vdi) == sr
        assert int(x.VDI.get_virtual_size(vdi)) == len(data)
        assert raw_vdi(d, sid, "export_raw_vdi", vdi) == data
    vifs = a["VIFs"]
    assert len(vifs) == 1 and x.VIF.get_MAC(vifs[0]) == "aa:bb:cc:00:11:22"
    assert x.VIF.get_network(vifs[0]) == x.VIF.get_network(b["VIFs"][0])


def _destroy_vm(x, vm):
    for vbd in x.VM.get_VBDs(vm):
        vdi = x.VBD.get_VDI(vbd)
        x.VBD.destroy(vbd)
        if vdi != "OpaqueRef:NULL":
            x.VDI.destroy(vdi)
    for vif in x.VM.get_VIFs(vm):
        x.VIF.destroy(vif)
    x.VM.destroy(vm)


@pytest.mark.parametrize("target,compression,chunked", [
    ("same", None, False), ("other", None, True), ("same", "gzip", False), ("same", "gzip-members", False),
    pytest.param("other", "zstd", False, marks=pytest.mark.skipif(not shutil.which("zstd"), reason="no zstd"))])
def test_round_trip(d, x, sid, vm, sr, sr2, tmp_path, target, compression, chunked):
    ref, disks = vm
    path = tmp_path / "vm.xva"
    query = f"session_id={sid}&uuid={x.VM.get_uuid(ref)}"
    if compression in ("gzip", "zstd"):
        query += f"&use_compression={compression}"
    status, _ = export(d, query, path)
    assert status == 200
    body = path.read_bytes()
    if compression == "gzip-members":       # as `cat a.gz b.gz` makes: a gzip file of two members
        body = gzip.compress(body[:len(body) // 3]) + gzip.compress(body[len(body) // 3:])
    if compression == "gzip":
        assert body[:2] == b"\x1f\x8b"
        assert gzip.decompress(body)[257:262] == b"ustar"
    elif compression == "zstd":
        assert body[:4] == b"\x28\xb5\x2f\xfd"
    dest = sr if target == "same" else sr2
    task = x.task.create("import", "")
    status = import_(d, f"session_id={sid}&task_id={task}&sr_id={dest}", body, chunked=chunked)
    st, err, result = task_outcome(x, task)
    assert status == 200 and st == "success", err
    assert result.startswith("<value><array>")
    (new,) = result_refs(result)
    try:
        _check_imported(x, d, sid, new, ref, disks, dest)
    finally:
        _destroy_vm(x, new)


def test_http10_body_until_close(d, x, sid, sr, archive):
    """An HTTP/1.0 PUT without a length: the body ends with the client's half-close."""
    task = x.task.create("import", "")
    with socket.create_connection(("127.0.0.1", d.http_port), timeout=60) as s:
        s.sendall(f"PUT /import?session_id={sid}&task_id={task}&sr_id={sr} HTTP/1.0\r\n\r\n".encode())
        s.sendall(archive)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while True:
            piece = s.recv(65536)
            if not piece:
                break
            reply += piece
    assert reply.startswith(b"HTTP/1.0 200") and f"Task-Id: {task}".encode() in reply
    st, err, result = task_outcome(x, task)
    assert st == "success", err
    _destroy_vm(x, result_refs(result)[0])


@pytest.mark.parametrize("length", [True, False])
def test_ocaml_xe_style_import(d, x, sid, sr, archive, length):
    """OCaml xe's HttpPut (newcli.ml): the head (HTTP/1.0, Content-length for a regular file, none for
    a pipe), then it waits for the status line and headers before it sends the body, then closes."""
    task = x.task.create("xe import", "")
    with socket.create_connection(("127.0.0.1", d.http_port), timeout=10) as s:
        cl = f"\r\nContent-length: {len(archive)}" if length else ""
        s.sendall(f"PUT /import?session_id={sid}&task_id={task}&sr_id={sr} HTTP/1.0{cl}\r\n\r\n".encode())
        f = s.makefile("rb")
        status = f.readline()                       # a timeout here is the hang xe would have
        headers = []
        while (line := f.readline()) not in (b"\r\n", b""):
            headers.append(line.strip())
        s.sendall(archive)
    assert status.startswith(b"HTTP/1.0 200") and f"Task-Id: {task}".encode() in headers, (status, headers)
    st, err, result = task_outcome(x, task)
    assert st == "success", err
    _destroy_vm(x, result_refs(result)[0])


def test_iso_in_the_cd_drive(d, x, sid, sr, tmp_path):
    """The ISO's VDI is described but not streamed; the import finds it again by location."""
    lib = tmp_path / "isos"
    lib.mkdir()
    (lib / "install.iso").write_bytes(b"\1" * 8192)
    iso_sr = x.SR.create(x.host.get_all()[0], {"location": str(lib)}, "0", "ISOs", "", "iso", "iso", True, {})
    x.SR.scan(iso_sr)
    (iso,) = x.SR.get_VDIs(iso_sr)
    ref = x.VM.create(vm_record("with-iso"))
    x.VBD.create({"VM": ref, "VDI": iso, "userdevice": "3", "bootable": False, "mode": "RO", "type": "CD",
                  "empty": False, "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
    path = tmp_path / "iso.xva"
    assert export(d, f"session_id={sid}&ref={ref}", path)[0] == 200
    with tarfile.open(path) as tf:
        assert tf.getnames() == ["ova.xml"]
        classes = [o["class"] for o in parse_value(tf.extractfile("ova.xml").read())["objects"]]
        assert classes.count("VDI") == 1 and classes.count("SR") == 1
    task = x.task.create("import", "")
    assert import_(d, f"session_id={sid}&task_id={task}&sr_id={sr}", path.read_bytes()) == 200
    st, err, result = task_outcome(x, task)
    assert st == "success", err
    (new,) = result_refs(result)
    (cd,) = x.VM.get_VBDs(new)
    assert x.VBD.get_VDI(cd) == iso and x.VBD.get_empty(cd) is False and x.VBD.get_type(cd) == "CD"
    for vm in (new, ref):
        x.VBD.destroy(x.VM.get_VBDs(vm)[0])
        x.VM.destroy(vm)
    x.PBD.unplug(x.SR.get_PBDs(iso_sr)[0])
    x.SR.forget(iso_sr)


JS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "js")


@pytest.mark.skipif(shutil.which("node") is None or not os.path.isdir(os.path.join(JS, "node_modules", "xen-api")),
                    reason="needs node and tests/js/node_modules (make test runs tools/node-deps.sh)")
@pytest.mark.parametrize("compression", ["false", "zstd"])
def test_xen_orchestra_export_and_import(d, x, sid, vm, sr, tmp_path, compression):
    """Xen Orchestra's connector: GET /export/ with a task, PUT /import/ of a file stream (its probe
    request with an empty body first, then the real one)."""
    if compression == "zstd" and not shutil.which("zstd"):
        pytest.skip("no zstd")
    ref, disks = vm
    path = tmp_path / "xo.xva"
    proc = subprocess.run(["node", os.path.join(JS, "xo_xva.mjs"), d.url, "root", d.password, ref, sr, str(path),
                           compression], cwd=JS, capture_output=True, text=True, timeout=90)
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["event"] == "done", (line, proc.stderr[-2000:])
    (new,) = line["imported"]
    try:
        _check_imported(x, d, sid, new, ref, disks, sr)
    finally:
        _destroy_vm(x, new)


@pytest.mark.skipif(shutil.which("node") is None or not os.path.isdir(os.path.join(JS, "node_modules", "xen-api")),
                    reason="needs node and tests/js/node_modules (make test runs tools/node-deps.sh)")
def test_xen_orchestra_import_of_unknown_length(d, x, sid, sr, archive, tmp_path):
    """Xen Orchestra's upload of a stream of unknown length: a probe with Content-Length 1 PiB and no
    body (answered at once), then the archive under that length, the connection cut once it is sent."""
    path = tmp_path / "stream.xva"
    path.write_bytes(archive)
    proc = subprocess.run(["node", os.path.join(JS, "xo_put_stream.mjs"), d.url, "root", d.password, "/import/",
                           json.dumps({"sr_id": sr}), str(path)], cwd=JS, capture_output=True, text=True, timeout=90)
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["event"] == "done", (line, proc.stderr[-2000:])
    assert "missing length" in proc.stderr                  # the client did take its unknown-length way
    (new,) = line["result"]
    assert x.VM.get_name_label(new) == "xva-source"
    _destroy_vm(x, new)


# -- failures leave nothing behind --------------------------------------------------------------------
def _counts(x):
    return len(x.VM.get_all()), len(x.VDI.get_all()), len(x.VBD.get_all()), len(x.VIF.get_all())


def _failed_import(d, x, sid, sr, body, extra=""):
    before = _counts(x)
    task = x.task.create("import", "")
    status = import_(d, f"session_id={sid}&task_id={task}&sr_id={sr}{extra}", body)
    st, err, _ = task_outcome(x, task)
    assert status == 200 and st == "failure"        # xapi answers before reading: the task tells
    assert _counts(x) == before
    return err


@pytest.fixture(scope="module")
def archive(d, x, sid, vm):
    path = os.path.join(tempfile.mkdtemp(prefix="xva-"), "vm.xva")
    status, _ = export(d, f"session_id={sid}&ref={vm[0]}", path)
    assert status == 200
    with open(path, "rb") as f:
        data = f.read()
    shutil.rmtree(os.path.dirname(path))
    return data


def test_corrupted_checksum(d, x, sid, sr, archive):
    tf = tarfile.open(fileobj=io.BytesIO(archive))
    member = next(m for m in tf.getmembers() if m.name.endswith("/00000003"))
    body = bytearray(archive)
    body[member.offset_data + 100] ^= 0xFF
    err = _failed_import(d, x, sid, sr, bytes(body))
    assert err[0] == "IMPORT_ERROR_GENERIC" and "checksum failed" in err[1] and member.name in err[1]


def test_truncated_archive(d, x, sid, sr, archive):
    err = _failed_import(d, x, sid, sr, archive[:len(archive) // 2 + 77])
    assert err == ["IMPORT_ERROR_PREMATURE_EOF"]
    gz = gzip.compress(archive)
    assert _failed_import(d, x, sid, sr, gz[:len(gz) - 5000]) == ["IMPORT_ERROR_PREMATURE_EOF"]


def test_cancelled_import_leaves_nothing(d, x, sid, sr, archive):
    before = _counts(x)
    task = x.task.create("import", "")
    with socket.create_connection(("127.0.0.1", d.http_port), timeout=60) as s:
        s.sendall(f"PUT /import?session_id={sid}&task_id={task}&sr_id={sr} HTTP/1.1\r\nHost: x\r\n"
                  f"Content-Length: {len(archive)}\r\n\r\n".encode() + archive[:len(archive) // 2])
        deadline = time.monotonic() + 20
        while len(x.VM.get_all()) == before[0] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(x.VM.get_all()) == before[0] + 1, x.task.get_record(task)    # the VM, while its disks arrive
        x.task.cancel(task)
        st, err, _ = task_outcome(x, task)
    assert st == "cancelled" and err[0] == "TASK_CANCELLED", (st, err)
    assert _counts(x) == before, (_counts(x), before)


def test_not_an_archive_and_unknown_vm(d, x, sid, sr):
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as tf:
        info = tarfile.TarInfo("hello.txt")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"hello"))
    assert _failed_import(d, x, sid, sr, tar.getvalue()) == ["IMPORT_ERROR_UNEXPECTED_FILE", "ova.xml", "hello.txt"]
    assert _failed_import(d, x, sid, sr, os.urandom(3000))[0] == "IMPORT_ERROR_GENERIC"     # taken for gzip
    assert _failed_import(d, x, sid, sr, b"") == ["IMPORT_ERROR_PREMATURE_EOF"]
    task = x.task.create("export", "")
    status, _ = export(d, f"session_id={sid}&ref=OpaqueRef:nope&task_id={task}", os.devnull)
    assert status == 404
    assert task_outcome(x, task)[1] == ["HANDLE_INVALID", "VM", "OpaqueRef:nope"]
    # HEAD: the checks and the head only
    c = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=30)
    vm = x.VM.create(vm_record("head"))
    try:
        c.request("HEAD", f"/export?session_id={sid}&ref={vm}")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"" and "export.xva" in r.getheader("Content-Disposition")
        assert x.VM.get_current_operations(vm) == {}
    finally:
        c.close()
        x.VM.destroy(vm)


@pytest.mark.skipif(not hasattr(xenctrl.Interface, "domain_create"), reason="no domain operations")
def test_running_vm_is_refused(d, x, sid):
    ref = x.VM.create(vm_record("running"))
    x.VM.start(ref, False, False)
    try:
        task = x.task.create("export", "")
        status, _ = export(d, f"session_id={sid}&ref={ref}&task_id={task}", os.devnull)
        assert status == 500
        err = task_outcome(x, task)[1]
        assert err[0] == "VM_BAD_POWER_STATE" and err[1] == ref and err[3] == "running"
    finally:
        x.VM.hard_shutdown(ref)
        x.VM.destroy(ref)


@pytest.mark.skipif(not hasattr(xenctrl.Interface, "domain_create"), reason="no domain operations")
def test_suspended_vm_backup_and_restore(d, x, sid, sr, tmp_path):
    """preserve_power_state=true carries the suspend image; restore=true brings the VM back under its
    uuid, and it resumes from the imported image."""
    ref = x.VM.create(vm_record("sleeper"))
    uuid = x.VM.get_uuid(ref)
    x.VM.start(ref, False, False)
    x.VM.suspend(ref)
    image = raw_vdi(d, sid, "export_raw_vdi", x.VM.get_suspend_VDI(ref))
    path = tmp_path / "s.xva"
    try:
        status, _ = export(d, f"session_id={sid}&ref={ref}&preserve_power_state=true", path)
        assert status == 200
        with tarfile.open(path) as tf:
            snap = next(o for o in parse_value(tf.extractfile("ova.xml").read())["objects"]
                        if o["class"] == "VM")["snapshot"]
            assert snap["power_state"] == "Suspended" and snap["suspend_VDI"].startswith("Ref:")
    finally:
        x.VM.hard_shutdown(ref)
        x.VM.destroy(ref)
    task = x.task.create("import", "")
    assert import_(d, f"session_id={sid}&task_id={task}&sr_id={sr}&restore=true", path.read_bytes()) == 200
    st, err, result = task_outcome(x, task)
    assert st == "success", err
    (new,) = result_refs(result)
    try:
        assert x.VM.get_uuid(new) == uuid and x.VM.get_power_state(new) == "Suspended"
        assert raw_vdi(d, sid, "export_raw_vdi", x.VM.get_suspend_VDI(new)) == image
        x.VM.resume(new, False, False)
        assert x.VM.get_power_state(new) == "Running"
    finally:
        x.VM.hard_shutdown(new)
        x.VM.destroy(new)


# -- an archive in XCP-ng's layout --------------------------------------------------------------------
def _member(tf, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o400
    tf.addfile(info, io.BytesIO(data))


def xcpng_archive(disk, xapi_version=("24", "10")):
    """An XVA as XCP-ng 8.3 writes it: ova.xml with the record fields of export.ml (ints as strings,
    the host, guest metrics-free), chunks with .xxhash checksums, zero chunks left out."""
    vm = {"uuid": "5f0c0a4b-1d7e-4c55-9d1e-3cbb1f3b7a01", "allowed_operations": [], "current_operations": {},
          "name_label": "from-xcp-ng", "name_description": "hand made", "power_state": "Halted",
          "user_version": "1", "is_a_template": False, "is_default_template": False, "suspend_VDI": "OpaqueRef:NULL",
          "resident_on": "OpaqueRef:NULL", "affinity": "OpaqueRef:NULL", "memory_overhead": "1048576",
          "memory_target": str(512 * MiB), "memory_static_max": str(512 * MiB),
          "memory_dynamic_max": str(512 * MiB), "memory_dynamic_min": str(512 * MiB),
          "memory_static_min": str(512 * MiB), "VCPUs_params": {}, "VCPUs_max": "1", "VCPUs_at_startup": "1",
          "actions_after_softreboot": "soft_reboot", "actions_after_shutdown": "destroy",
          "actions_after_reboot": "restart", "actions_after_crash": "restart", "consoles": [], "VIFs": ["Ref:3"],
          "VBDs": ["Ref:1"], "VUSBs": [], "crash_dumps": [], "VTPMs": [], "PV_bootloader": "", "PV_kernel": "",
          "PV_ramdisk": "", "PV_args": "", "PV_bootloader_args": "", "PV_legacy_args": "",
          "HVM_boot_policy": "BIOS order", "HVM_boot_params": {"order": "cd"}, "HVM_shadow_multiplier": 1.0,
          "platform": {"acpi": "1", "apic": "true", "pae": "true", "viridian": "true", "device-model": "qemu-upstream-compat"},
          "PCI_bus": "", "other_config": {"base_template_name": "Other install media", "mac_seed": "x"},
          "domid": "-1", "domarch": "", "last_boot_CPU_flags": {}, "is_control_domain": False,
          "metrics": "OpaqueRef:NULL", "guest_metrics": "OpaqueRef:NULL", "last_booted_record": "",
          "recommendations": "", "xenstore_data": {}, "ha_always_run": False, "ha_restart_priority": "",
          "is_a_snapshot": False, "snapshot_of": "OpaqueRef:NULL", "snapshots": [],
          "snapshot_time": xmlrpc.client.DateTime("19700101T00:00:00Z"), "transportable_snapshot_id": "",
          "blobs": {}, "tags": ["imported"], "blocked_operations": {}, "snapshot_info": {}, "snapshot_metadata": "",
          "parent": "OpaqueRef:NULL", "children": [], "bios_strings": {}, "protection_policy": "OpaqueRef:NULL",
          "is_snapshot_from_vmpp": False, "snapshot_schedule": "OpaqueRef:NULL", "is_vmss_snapshot": False,
          "appliance": "OpaqueRef:NULL", "start_delay": "0", "shutdown_delay": "0", "order": "0", "VGPUs": [],
          "attached_PCIs": [], "suspend_SR": "OpaqueRef:NULL", "version": "0", "generation_id": "0:0",
          "hardware_platform_version": "0", "has_vendor_device": False, "requires_reboot": False,
          "reference_label": "", "domain_type": "hvm", "NVRAM": {}, "pending_guidances": []}
    vbd = {"uuid": "8a4f3e2d-0000-4000-8000-000000000001", "allowed_operations": [], "current_operations": {},
           "VM": "Ref:0", "VDI": "Ref:2", "device": "xvda", "userdevice": "0", "bootable": True, "mode": "RW",
           "type": "Disk", "unpluggable": False, "storage_lock": False, "empty": False, "other_config": {},
           "currently_attached": False, "status_code": "0", "status_detail": "", "runtime_properties": {},
           "qos_algorithm_type": "", "qos_algorithm_params": {}, "qos_supported_algorithms": [],
           "metrics": "OpaqueRef:NULL"}
    vdi = {"uuid": "8a4f3e2d-0000-4000-8000-000000000002", "name_label": "xcp-disk", "name_description": "",
           "allowed_operations": [], "current_operations": {}, "SR": "Ref:4", "VBDs": ["Ref:1"], "crash_dumps": [],
           "virtual_size": str(len(disk)), "physical_utilisation": str(len(disk)), "type": "user",
           "sharable": False, "read_only": False, "other_config": {}, "storage_lock": False, "location": "x",
           "managed": True, "missing": False, "parent": "OpaqueRef:NULL", "xenstore_data": {}, "sm_config": {},
           "is_a_snapshot": False, "snapshot_of": "OpaqueRef:NULL", "snapshots": [],
           "snapshot_time": xmlrpc.client.DateTime("19700101T00:00:00Z"), "tags": [], "allow_caching": False,
           "on_boot": "persist", "metadata_of_pool": "OpaqueRef:NULL", "metadata_latest": False,
           "is_tools_iso": False, "cbt_enabled": False}
    vif = {"uuid": "8a4f3e2d-0000-4000-8000-000000000003", "allowed_operations": [], "current_operations": {},
           "device": "0", "network": "Ref:5", "VM": "Ref:0", "MAC": "12:34:56:78:9a:bc", "MTU": "1500",
           "other_config": {}, "currently_attached": False, "status_code": "0", "status_detail": "",
           "runtime_properties": {}, "qos_algorithm_type": "", "qos_algorithm_params": {},
           "qos_supported_algorithms": [], "metrics": "OpaqueRef:NULL", "MAC_autogenerated": False,
           "locking_mode": "network_default", "ipv4_allowed": [], "ipv6_allowed": [], "ipv4_configuration_mode": "None",
           "ipv4_addresses": [], "ipv4_gateway": "", "ipv6_configuration_mode": "None", "ipv6_addresses": [],
           "ipv6_gateway": "", "reserved_pci": "OpaqueRef:NULL"}
    sr = {"uuid": "8a4f3e2d-0000-4000-8000-000000000004", "name_label": "Local storage", "name_description": "",
          "allowed_operations": [], "current_operations": {}, "VDIs": ["Ref:2"], "PBDs": [],
          "virtual_allocation": "0", "physical_utilisation": "0", "physical_size": "0", "type": "ext",
          "content_type": "user", "shared": False, "other_config": {}, "tags": [], "sm_config": {}, "blobs": {},
          "local_cache_enabled": False, "introduced_by": "OpaqueRef:NULL", "clustered": False, "is_tools_sr": False}
    net = {"uuid": "8a4f3e2d-0000-4000-8000-000000000005", "name_label": "Pool-wide network associated with eth0",
           "name_description": "", "allowed_operations": [], "current_operations": {}, "VIFs": ["Ref:3"], "PIFs": [],
           "MTU": "1500", "other_config": {}, "bridge": "xenbr0", "managed": True, "blobs": {}, "tags": [],
           "default_locking_mode": "unlocked", "assigned_ips": {}, "purpose": []}
    vif2 = dict(vif, uuid="8a4f3e2d-0000-4000-8000-000000000006", device="1", network="Ref:8",
                MAC="12:34:56:78:9a:bd")
    net2 = dict(net, uuid="8a4f3e2d-0000-4000-8000-000000000008", name_label="backup-net", bridge="br-backup",
                VIFs=["Ref:7"])
    vm["VIFs"] = ["Ref:3", "Ref:7"]
    header = {"version": {"hostname": "xcp-ng-host", "date": "2024-10-01", "product_version": "8.3.0",
                          "product_brand": "XCP-ng", "build_number": "release/yangtze/master/8", "xapi_major": xapi_version[0],
                          "xapi_minor": xapi_version[1], "export_vsn": "2"},
              "objects": [{"class": "VM", "id": "Ref:0", "snapshot": vm},
                          {"class": "VBD", "id": "Ref:1", "snapshot": vbd},
                          {"class": "VIF", "id": "Ref:3", "snapshot": vif},
                          {"class": "VIF", "id": "Ref:7", "snapshot": vif2},
                          {"class": "network", "id": "Ref:8", "snapshot": net2},
                          {"class": "network", "id": "Ref:5", "snapshot": net},
                          {"class": "VDI", "id": "Ref:2", "snapshot": vdi},
                          {"class": "SR", "id": "Ref:4", "snapshot": sr}]}
    xml = xmlrpc.client.dumps((header,), methodresponse=True)
    xml = xml.split("<param>\n", 1)[1].rsplit("</param>", 1)[0].encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        _member(tf, "ova.xml", xml)
        n = len(disk) // MiB
        for i in range(n):
            chunk = disk[i * MiB:(i + 1) * MiB]
            if i in (0, n - 1) or any(chunk):
                _member(tf, "Ref:2/%08d" % i, chunk)
                _member(tf, "Ref:2/%08d.xxhash" % i, b"%016X" % xva_checksum.xxh64(chunk))
    return out.getvalue()


def test_xcp_ng_archive_imports(d, x, sid, sr):
    disk = disk_data(5, {1, 2})
    body = xcpng_archive(disk)
    nets = x.network.get_all_records()
    task = x.task.create("import", "")
    assert import_(d, f"session_id={sid}&task_id={task}&sr_uuid={x.SR.get_uuid(sr)}", body) == 200
    st, err, result = task_outcome(x, task)
    assert st == "success", err
    (new,) = result_refs(result)
    try:
        rec = x.VM.get_record(new)
        assert rec["name_label"] == "from-xcp-ng" and rec["VCPUs_max"] == "1"
        assert rec["memory_static_max"] == str(512 * MiB) and rec["tags"] == ["imported"]
        assert rec["uuid"] != "5f0c0a4b-1d7e-4c55-9d1e-3cbb1f3b7a01" and rec["other_config"]["mac_seed"] != "x"
        (vbd,) = rec["VBDs"]
        assert x.VBD.get_userdevice(vbd) == "0" and x.VBD.get_bootable(vbd) is True
        vdi = x.VBD.get_VDI(vbd)
        assert x.VDI.get_name_label(vdi) == "xcp-disk"
        got = raw_vdi(d, sid, "export_raw_vdi", vdi)      # the SR rounds 5 MiB up to whole 2 MiB VHD blocks
        assert got[:len(disk)] == disk and not any(got[len(disk):])
        (vif,) = [v for v in rec["VIFs"] if x.VIF.get_device(v) == "0"]
        assert x.VIF.get_MAC(vif) == "12:34:56:78:9a:bc"
        # networks are matched by name (the management network's), as xapi does; else made
        (management,) = [r for r, n in nets.items() if n["bridge"] == "xenbr0"]
        assert x.VIF.get_network(vif) == management
        (made,) = set(x.network.get_all()) - set(nets)
        assert x.network.get_name_label(made) == "backup-net" and x.network.get_bridge(made) == "br-backup"
        assert x.network.get_other_config(made)["import_task"] == task
        assert x.VIF.get_device(x.network.get_VIFs(made)[0]) == "1"
    finally:
        _destroy_vm(x, new)
        for n in set(x.network.get_all()) - set(nets):
            x.network.destroy(n)


def test_archive_from_a_newer_xapi_is_refused(d, x, sid, sr):
    body = xcpng_archive(disk_data(2, {0}), ("99", "0"))
    assert _failed_import(d, x, sid, sr, body) == ["IMPORT_INCOMPATIBLE_VERSION"]


def test_restore_keeps_the_uuid(d, x, sid, sr):
    body = xcpng_archive(disk_data(2, {0}))
    task = x.task.create("import", "")
    assert import_(d, f"session_id={sid}&task_id={task}&sr_id={sr}&restore=true", body) == 200
    st, err, result = task_outcome(x, task)
    assert st == "success", err
    (new,) = result_refs(result)
    try:
        assert x.VM.get_uuid(new) == "5f0c0a4b-1d7e-4c55-9d1e-3cbb1f3b7a01" and x.VM.get_version(new) == "1"
        # the same archive again: what is here is newer (restored once), so nothing changes
        err = _failed_import(d, x, sid, sr, body, "&restore=true")
        assert err == ["VM_TO_IMPORT_IS_NOT_NEWER_VERSION", new, "1", "0"]
    finally:
        _destroy_vm(x, new)


# -- memory -------------------------------------------------------------------------------------------
def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_memory_stays_bounded(d, x, sid, sr, tmp_path):
    size = 256 * MiB
    ref = x.VM.create(vm_record("big"))
    vdi = new_vdi(x, sr, size, "big")
    block = os.urandom(MiB)
    c = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=120)
    c.request("PUT", f"/import_raw_vdi?session_id={sid}&vdi={vdi}&format=raw",
              body=iter([block] * (size // MiB)), headers={"Content-Length": str(size)})
    r = c.getresponse()
    r.read()                                # answered first; the reply ends once the import is done
    assert r.status == 200
    c.close()
    x.VBD.create({"VM": ref, "VDI": vdi, "userdevice": "0", "bootable": True, "mode": "RW", "type": "Disk",
                  "empty": False, "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
    base = rss_kib(d.pid)
    path = tmp_path / "big.xva"
    status, _ = export(d, f"session_id={sid}&ref={ref}", path)
    assert status == 200 and path.stat().st_size > size
    after_export = rss_kib(d.pid)
    task = x.task.create("import", "")
    c = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=120)

    def body():
        with open(path, "rb") as f:
            while True:
                piece = f.read(MiB)
                if not piece:
                    return
                yield piece
    c.request("PUT", f"/import?session_id={sid}&task_id={task}&sr_id={sr}", body=body(),
              headers={"Content-Length": str(path.stat().st_size)})
    assert c.getresponse().status == 200
    c.close()
    st, err, result = task_outcome(x, task)
    assert st == "success", err
    after_import = rss_kib(d.pid)
    (new,) = result_refs(result)
    try:
        assert after_export - base < 64 * 1024, (base, after_export)
        assert after_import - base < 64 * 1024, (base, after_import)
        new_vdi_ref = x.VBD.get_VDI(x.VM.get_VBDs(new)[0])
        got = raw_vdi(d, sid, "export_raw_vdi", new_vdi_ref)
        assert got == block * (size // MiB)
    finally:
        _destroy_vm(x, new)
        _destroy_vm(x, ref)
