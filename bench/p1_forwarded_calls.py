"""P1 forwarded_calls: XenAPI calls per second through a pool member, against the coordinator directly.

A 2-host `xapi sim` pool (tests/pool.py: real daemons on 127.0.0.2 and 127.0.0.3, free ports). xapi
members proxy nothing for clients: a password login on a member answers HOST_IS_SLAVE and the client
goes to the coordinator. So "through a member" is measured the ways a client or the pool meets it,
each against the same call made on the coordinator in the same run (one keep-alive JSON-RPC
connection, calls back to back for P1_SECONDS each, default 3; best of 3 rounds, the two sides
alternating):

  read      VM.get_record of a member's control domain: on the member (a normally-local read served
            from its replica, session.slave_local_login_with_password) vs on the coordinator
  lifecycle VM.pause + VM.unpause of a VM resident on the member (the coordinator runs the action and
            reaches the member's xenopsd through internal calls: pinned TLS, pool secret, pooled
            connections) vs of a VM resident on the coordinator (its local xenopsd socket)
  login     session.login_with_password at the member (HOST_IS_SLAVE [coordinator]) then at the
            coordinator, plus one call, as a redirected client does, vs straight at the coordinator

Ratios are member / coordinator in calls per second (1.00x = no cost for going through the member).
"""
import os
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from bench.common import Rpc, report, vm_record  # noqa: E402
from tests import pool as simpool  # noqa: E402

SECONDS = float(os.environ.get("P1_SECONDS", "3"))
ROUNDS = 3


def _round(fn) -> float:
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= SECONDS:
            return n / dt


def rates(ours, baseline) -> tuple[float, float]:
    """Calls per second of each (one call per invocation), best of ROUNDS rounds of SECONDS each,
    the two alternating round by round so a busy machine disturbs both alike."""
    a = b = 0.0
    for _ in range(ROUNDS):
        a = max(a, _round(ours))
        b = max(b, _round(baseline))
    return a, b


def main() -> int:
    p = simpool.start(2)
    try:
        coord, member = p.hosts
        c = Rpc(coord.address, coord.http_port)
        m = Rpc(member.address, member.http_port)
        cs = c("session.login_with_password", "root", coord.password, "1.0", "p1")
        ms = m("session.slave_local_login_with_password", "root", member.password)
        hosts = c("host.get_all_records", cs)
        h_coord = next(h for h, r in hosts.items() if r["address"] == coord.address)
        h_member = next(h for h, r in hosts.items() if r["address"] == member.address)
        dom0 = next(v for v, r in c("VM.get_all_records", cs).items()
                    if r["is_control_domain"] and r["resident_on"] == h_member)
        print(f"P1   2-host xapi sim pool (coordinator {coord.address}, member {member.address});"
              f" {ROUNDS} rounds of {SECONDS:g} s per case, best round", flush=True)

        # read: a normally-local call served by the member from its replica
        r_member, r_coord = rates(lambda: m("VM.get_record", ms, dom0), lambda: c("VM.get_record", cs, dom0))
        report("P1", "VM.get_record on member vs coordinator", r_member, r_coord, "coord",
               unit="calls/s", higher_is_better=True)

        # lifecycle: the coordinator runs it; the member's xenopsd is reached by internal calls
        vm_c = c("VM.create", cs, vm_record("p1-local"))
        vm_m = c("VM.create", cs, vm_record("p1-member"))
        c("VM.start_on", cs, vm_c, h_coord, False, False)
        c("VM.start_on", cs, vm_m, h_member, False, False)

        def pause_unpause(vm):
            def go():
                c("VM.pause", cs, vm)
                c("VM.unpause", cs, vm)
            return go
        l_member, l_coord = (2 * r for r in rates(pause_unpause(vm_m), pause_unpause(vm_c)))
        report("P1", "VM.pause/unpause, VM on member vs on coord", l_member, l_coord, "coord",
               unit="calls/s", higher_is_better=True)
        for vm in (vm_c, vm_m):
            c("VM.hard_shutdown", cs, vm)

        # login: a client sent to the member follows HOST_IS_SLAVE to the coordinator
        def direct():
            s = c("session.login_with_password", "root", coord.password, "1.0", "p1")
            c("pool.get_all", s)
            c("session.logout", s)

        def redirected():
            j = m.raw("session.login_with_password", "root", member.password, "1.0", "p1")
            err = j.get("error") or {}
            if err.get("message") != "HOST_IS_SLAVE" or err.get("data") != [coord.address]:
                raise RuntimeError(f"expected HOST_IS_SLAVE [{coord.address}] from the member, got {j}")
            s = c("session.login_with_password", "root", coord.password, "1.0", "p1")
            c("pool.get_all", s)
            c("session.logout", s)
        s_redirected, s_direct = rates(redirected, direct)
        report("P1", "login+call via member redirect vs direct", s_redirected, s_direct, "direct",
               unit="sessions/s", higher_is_better=True)
        c.close()
        m.close()
    finally:
        simpool.cleanup(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
