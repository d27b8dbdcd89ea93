"""L2 boot_storm_pool: 500 VM starts across a 4-host `xapi sim` pool, against one host, same run.

pool      tests/pool.py's `xapi sim --hosts 4` (real daemons on 127.0.0.2..5, 16 GiB each); the
          client sends `Async.VM.start` to the coordinator, whose placement spreads the VMs over
          the hosts (members' xenopsds reached through internal calls)
one host  one `xapi serve` with the same total memory (65536 MiB) and the same xenopsd settings

Both: L2_VMS small VMs (64 MiB, 1 vCPU; default 500) created with VM.create, then Async.VM.start
for each (8 client threads with their own keep-alive JSON-RPC connection, at most L2_IN_FLIGHT in
flight, default 64 as L1),
tasks followed with event.from. Makespan runs from the first start to the last task's end; every VM
must be Running afterwards. Each xenopsd has L2_WORKERS workers (default 32); the cases run with a
build delay of 0 s (the control plane's own cost) and 1 s (L2_DELAYS, a boot that takes time, where
four hosts' workers build in parallel). Ratios: pool / one host in starts per second.
"""
import functools
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from bench.common import Rpc, boot_storm, report, vm_record  # noqa: E402
from tests import daemon as one_host  # noqa: E402
from tests import pool as simpool  # noqa: E402

N_VMS = int(os.environ.get("L2_VMS", "500"))
WORKERS = int(os.environ.get("L2_WORKERS", "32"))
DELAYS = [float(d) for d in os.environ.get("L2_DELAYS", "0,1").split(",")]
IN_FLIGHT = int(os.environ.get("L2_IN_FLIGHT", "64"))
SUBMITTERS = 8
TASK_TIMEOUT = 300.0


def storm(host: str, port: int, password: str, label: str) -> dict:
    connect = functools.partial(Rpc, host, port, timeout=120)
    main = connect()
    session = main("session.login_with_password", "root", password, "1.0", "l2")
    vms = [main("VM.create", session, vm_record(f"l2-{label}-{i}")) for i in range(N_VMS)]
    s = boot_storm(connect, session, vms, IN_FLIGHT, SUBMITTERS, TASK_TIMEOUT)
    failed = s.failed()
    recs = main("VM.get_all_records", session)
    running = [r for r in recs.values() if not r["is_control_domain"] and r["power_state"] == "Running"]
    per_host: dict = {}
    for r in running:
        per_host[r["resident_on"]] = per_host.get(r["resident_on"], 0) + 1
    main.close()
    return {"makespan": s.makespan, "rate": N_VMS / s.makespan, "running": len(running), "failed": len(failed),
            "spread": sorted(per_host.values(), reverse=True),
            "first_error": main_error(host, port, session, failed[0]) if failed else ""}


def main_error(host, port, session, task) -> str:
    rpc = Rpc(host, port, timeout=120)
    try:
        return str(rpc("task.get_error_info", session, task))
    finally:
        rpc.close()


def line(label: str, delay: float, r: dict) -> None:
    print(f"L2   {label:8} delay {delay:g} s: {N_VMS} VMs makespan {r['makespan']:7.2f} s"
          f"  {r['rate']:7.1f} starts/s  running {r['running']}/{N_VMS} per host {r['spread']}"
          f"  failed {r['failed']} {r['first_error']}", flush=True)


def run(delay: float) -> tuple[dict, dict]:
    env = {"XAPI_XENOPSD_WORKERS": str(WORKERS), "XAPI_XENOPSD_BUILD_DELAY": str(delay)}
    p = simpool.start(4, env=env)
    try:
        c = p.coordinator
        pool = storm(c.address, c.http_port, c.password, f"pool{delay:g}")
    finally:
        simpool.cleanup(p)
    line("pool x4", delay, pool)
    d = one_host.start("--sim-config", "memory_mib=65536,cpus=8", env=env, timeout=60)
    try:
        single = storm("127.0.0.1", d.http_port, d.password, f"one{delay:g}")
    finally:
        one_host.cleanup(d)
    line("one host", delay, single)
    return pool, single


def main() -> int:
    print(f"L2   boot storm: {N_VMS} VMs of 64 MiB, {IN_FLIGHT} in flight, {WORKERS} xenopsd workers per host;"
          f" 4-host xapi sim pool (16 GiB each) vs one host (64 GiB)", flush=True)
    ok = True
    for delay in DELAYS:
        pool, single = run(delay)
        ok = ok and pool["running"] == N_VMS and single["running"] == N_VMS
        report("L2", f"{delay:g} s build delay starts/s, pool x4 vs 1 host", pool["rate"], single["rate"],
               "1 host", unit="starts/s", higher_is_better=True)
        report("L2", f"{delay:g} s build delay makespan, pool x4 vs 1 host", pool["makespan"], single["makespan"],
               "1 host")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
