"""Per-call time of the SM calls an export makes before its first byte (vdi_attach, vdi_activate)
and after it (vdi_deactivate, vdi_detach), from the daemon's debug log, plus the export's time to
the reply head as a client sees it. Usage: python tools/time_sm_activate.py [exports]"""
import os
import re
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import XenAPI  # noqa: E402

from tests import daemon as _daemon  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 30


def main() -> None:
    d = _daemon.start("--log-level", "DEBUG")
    try:
        x = XenAPI.Session(d.url)
        x.xenapi.login_with_password("root", d.password)
        sr = next(r for r, rec in x.xenapi.SR.get_all_records().items() if rec["type"] == "ext")
        vdi = x.xenapi.VDI.create({"name_label": "t", "name_description": "", "SR": sr, "virtual_size": str(1 << 20),
                                   "type": "user", "sharable": False, "read_only": False, "other_config": {}})
        heads = []
        for _ in range(N):
            s = socket.create_connection(("127.0.0.1", d.http_port))
            t0 = time.perf_counter()
            s.sendall(f"GET /export_raw_vdi?session_id={x._session}&vdi={vdi} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += s.recv(65536)
            heads.append((time.perf_counter() - t0) * 1e3)
            while s.recv(1 << 20):
                pass
            s.close()
            time.sleep(0.05)            # the release after the last byte
        time.sleep(0.5)
        calls: dict[str, list[float]] = {}
        for m in re.finditer(r"SM \S+ (vdi_\w+): ([0-9.]+)s", d.log()):
            calls.setdefault(m.group(1), []).append(float(m.group(2)) * 1e3)
        for name in ("vdi_attach", "vdi_activate", "vdi_deactivate", "vdi_detach"):
            v = calls.get(name, [])
            if v:
                print(f"{name:15s} n={len(v):3d} median {statistics.median(v):6.2f} ms  min {min(v):6.2f} ms")
        print(f"{'export head':15s} n={len(heads):3d} median {statistics.median(heads):6.2f} ms  min {min(heads):6.2f} ms")
    finally:
        _daemon.cleanup(d)


if __name__ == "__main__":
    main()
