"""S4 storage_motion: VDI.pool_migrate of a running VM's 256 MiB disk from a member's local SR to the
coordinator's local SR in a 2-host `xapi sim` pool (neither host sees the other's SR, so the member
mirrors the disk to the coordinator over the network and the VM follows), against a plain HTTPS
PUT /import_raw_vdi of the same 256 MiB to a new VDI on the same destination SR of the same host.

The PUT is the baseline because it moves the same bytes into the same kind of VDI on the same
destination host, through TLS as the mirror's stream does, with nothing of storage motion's own
work (no mirror, no VDI made on the fly, no VM move): what the cross-host data path could reach.
`cp` of the file would measure the page cache, not a host-to-host transfer. The disk has no
all-zero 2 MiB block, so the mirror skips nothing. The VM has 64 MiB of memory (its move is a
small part of the time). MB/s = disk bytes / seconds of the call, best of RUNS. The second line is
the mirror's copy alone: from the source's "copying" log line to its "base copied" one (the rest of
the call is the new VDI, the VM's memory move, attach/activate, the source VDI's removal).
"""
import http.client
import os
import datetime
import re
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import report  # noqa: E402
from tests import pool as _pool  # noqa: E402
from tests.helpers import new_vdi, vbd_record  # noqa: E402
from tests.system.pool_vms import hosts_by_address, new_vm  # noqa: E402

MiB = 1 << 20
SIZE = 256 * MiB
RUNS = int(os.environ.get("S4_RUNS", "2"))


def disk_bytes() -> bytes:
    return b"".join(bytes([i % 251 + 1]) + os.urandom(MiB - 1) for i in range(SIZE // MiB))


def put(host, session, vdi, data: bytes) -> float:
    """PUT /import_raw_vdi over HTTPS; seconds until the answer."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    t = time.perf_counter()
    c = http.client.HTTPSConnection(host.address, host.https_port, timeout=300, context=ctx)
    c.request("PUT", f"/import_raw_vdi?session_id={session}&vdi={vdi}&format=raw", body=data)
    r = c.getresponse()
    body = r.read()
    assert r.status == 200, (r.status, body[:200])
    c.close()
    return time.perf_counter() - t


def copy_phases(pool) -> list[float]:
    """Seconds of each mirror's copy, from the source hosts' daemon logs."""
    started, out = {}, []
    for host in pool.hosts:
        for line in host.log().splitlines():
            m = re.match(r"(\S+ \S+) INFO xapi.sm.mirror: mirror of VDI (\S+) on .*?(copying|base copied)", line)
            if m:
                t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                if m.group(3) == "copying":
                    started[m.group(2)] = t
                elif m.group(2) in started:
                    out.append(t - started.pop(m.group(2)))
    return out


def local_sr(x, host):
    return next(s for s in x.SR.get_all() if x.SR.get_type(s) == "ext"
                and any(x.PBD.get_host(p) == host for p in x.SR.get_PBDs(s)))


def main() -> None:
    pool = _pool.start(2)
    try:
        s = pool.coordinator.session()
        x = s.xenapi
        h1, h2 = hosts_by_address(x)
        sr1, sr2 = local_sr(x, h1), local_sr(x, h2)
        data = disk_bytes()
        base, ours = [], []
        for _ in range(RUNS):
            v = new_vdi(x, sr1, SIZE, "s4 baseline")
            base.append(put(pool.coordinator, s._session, v, data))
            x.VDI.destroy(v)
        vm = new_vm(x, "s4", memory=64 * MiB)
        vdi = new_vdi(x, sr2, SIZE, "s4 disk")
        member = pool.hosts[1].local_session()
        put(pool.hosts[1], member._session, vdi, data)
        member.xenapi.session.logout()
        vbd = x.VBD.create({**vbd_record(vm, vdi), "unpluggable": False})
        x.VM.start_on(vm, h2, False, False)
        for _ in range(RUNS):
            # to the coordinator's SR (the VM follows), then back to the member's: both across hosts
            for sr, host in ((sr1, h1), (sr2, h2)):
                t = time.perf_counter()
                moved = x.VDI.pool_migrate(x.VBD.get_VDI(vbd), sr, {})
                ours.append(time.perf_counter() - t)
                assert x.VM.get_resident_on(vm) == host and x.VDI.get_SR(moved) == sr
        mbs = lambda t: SIZE / MiB / t  # noqa: E731
        report("S4", "VDI.pool_migrate 256 MiB across hosts (MB/s)", mbs(min(ours)), mbs(min(base)),
               "HTTPS PUT import_raw_vdi", unit="MB/s", higher_is_better=True)
        phases = copy_phases(pool)
        if phases:
            report("S4", "  the mirror's copy alone (MB/s)", mbs(min(phases)), mbs(min(base)),
                   "HTTPS PUT import_raw_vdi", unit="MB/s", higher_is_better=True)
        x.VM.hard_shutdown(vm)
        s.xenapi.session.logout()
    finally:
        _pool.cleanup(pool)


if __name__ == "__main__":
    main()
