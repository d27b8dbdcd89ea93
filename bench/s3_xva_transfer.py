"""S3 xva_transfer: GET /export and PUT /import of a halted VM with one 256 MiB disk (XVA, no
compression) over HTTP on loopback, against the raw disk transfer of the same bytes by
/export_raw_vdi and /import_raw_vdi on the same daemon.

The raw transfer is the baseline because it moves the same disk bytes through the same storage layer;
an XVA adds the tar framing, a SHA-1 per 1 MiB chunk both ways, and on import the VM's objects and
a fresh VDI (VDI.create through the driver). The disk has no all-zero chunk, so nothing is skipped.
The client streams files from/to the temp folder in 1 MiB pieces. MB/s = disk bytes / seconds, best
of 2 (target: XVA >= 0.7x raw). The gzip export is printed as context.
"""
import http.client
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import XenAPI  # noqa: E402

from bench.common import report  # noqa: E402
from tests import daemon as _daemon  # noqa: E402

MiB = 1 << 20
SIZE = 256 * MiB
RUNS = 2


def get_to(port, url, path) -> float:
    t = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    c.request("GET", url)
    r = c.getresponse()
    assert r.status == 200, r.status
    with open(path, "wb") as f:
        while True:
            piece = r.read(MiB)
            if not piece:
                break
            f.write(piece)
    c.close()
    return time.perf_counter() - t


def put_from(port, url, path) -> float:
    def body():
        with open(path, "rb") as f:
            while True:
                piece = f.read(MiB)
                if not piece:
                    return
                yield piece
    t = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    c.request("PUT", url, body=body(), headers={"Content-Length": str(os.path.getsize(path))})
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
    c.close()
    return time.perf_counter() - t


def new_vdi(x, sr):
    return x.VDI.create({"name_label": "s3", "name_description": "", "SR": sr, "virtual_size": str(SIZE),
                         "type": "user", "sharable": False, "read_only": False, "other_config": {}})


def main() -> None:
    work = tempfile.mkdtemp(prefix="s3-")
    d = _daemon.start()
    try:
        api = XenAPI.Session(d.url)
        api.xenapi.login_with_password("root", d.password, "2.3", "s3")
        x, sid, port = api.xenapi, api._session, d.http_port
        sr = x.pool.get_default_SR(x.pool.get_all()[0])
        raw = os.path.join(work, "disk.raw")
        with open(raw, "wb") as f:
            for i in range(SIZE // MiB):
                f.write(bytes([i % 251 + 1]) + os.urandom(MiB - 1))
        m = str(256 * MiB)
        vm = x.VM.create({
            "name_label": "s3", "name_description": "", "user_version": "1", "is_a_template": False,
            "affinity": "OpaqueRef:NULL", "memory_static_max": m, "memory_dynamic_max": m,
            "memory_dynamic_min": m, "memory_static_min": m, "VCPUs_params": {}, "VCPUs_max": "1",
            "VCPUs_at_startup": "1", "actions_after_shutdown": "destroy", "actions_after_reboot": "restart",
            "actions_after_crash": "destroy", "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "",
            "PV_args": "", "PV_bootloader_args": "", "PV_legacy_args": "", "HVM_boot_policy": "BIOS order",
            "HVM_boot_params": {}, "platform": {}, "PCI_bus": "", "other_config": {}, "recommendations": ""})
        vdi = new_vdi(x, sr)
        put_from(port, f"/import_raw_vdi?session_id={sid}&vdi={vdi}", raw)
        x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0", "bootable": True, "mode": "RW", "type": "Disk",
                      "empty": False, "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
        out, xva, gz = (os.path.join(work, n) for n in ("out.raw", "vm.xva", "vm.xva.gz"))
        raw_exp = min(get_to(port, f"/export_raw_vdi?session_id={sid}&vdi={vdi}", out) for _ in range(RUNS))
        xva_exp = min(get_to(port, f"/export?session_id={sid}&ref={vm}", xva) for _ in range(RUNS))
        gz_exp = get_to(port, f"/export?session_id={sid}&ref={vm}&use_compression=gzip", gz)
        raw_imp, xva_imp = [], []
        for _ in range(RUNS):
            v = new_vdi(x, sr)
            raw_imp.append(put_from(port, f"/import_raw_vdi?session_id={sid}&vdi={v}", raw))
            x.VDI.destroy(v)
            task = x.task.create("s3", "")
            xva_imp.append(put_from(port, f"/import?session_id={sid}&task_id={task}&sr_id={sr}", xva))
            assert x.task.get_status(task) == "success", x.task.get_error_info(task)
            new = x.task.get_result(task).split("<value>")[-1].split("</value>")[0]
            for vbd in x.VM.get_VBDs(new):
                v = x.VBD.get_VDI(vbd)
                x.VBD.destroy(vbd)
                x.VDI.destroy(v)
            x.VM.destroy(new)
        mbs = lambda t: SIZE / MiB / t  # noqa: E731
        report("S3", "XVA export 256 MiB (MB/s)", mbs(xva_exp), mbs(raw_exp), "export_raw_vdi", unit="MB/s",
               higher_is_better=True, target=">= 0.7x")
        report("S3", "XVA import 256 MiB, new VM (MB/s)", mbs(min(xva_imp)), mbs(min(raw_imp)),
               "import_raw_vdi", unit="MB/s", higher_is_better=True, target=">= 0.7x")
        report("S3", "  (context) gzip XVA export", mbs(gz_exp), mbs(raw_exp), "export_raw_vdi", unit="MB/s",
               higher_is_better=True)
        api.xenapi.session.logout()
    finally:
        _daemon.cleanup(d)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
