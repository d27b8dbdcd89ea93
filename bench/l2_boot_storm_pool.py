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
import http.client
import json
import os
import pathlib
import sys
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from bench.common import report  # noqa: E402
from tests import daemon as one_host  # noqa: E402
from tests import pool as simpool  # noqa: E402

MIB = 1 << 20
N_VMS = int(os.environ.get("L2_VMS", "500"))
WORKERS = int(os.environ.get("L2_WORKERS", "32"))
DELAYS = [float(d) for d in os.environ.get("L2_DELAYS", "0,1").split(",")]
IN_FLIGHT = int(os.environ.get("L2_IN_FLIGHT", "64"))
SUBMITTERS = 8
TASK_TIMEOUT = 300.0


class Rpc:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.conn = http.client.HTTPConnection(host, port, timeout=120)
        self.id = 0

    def __call__(self, method: str, *params):
        self.id += 1
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": self.id})
        self.conn.request("POST", "/jsonrpc", body, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{method}: HTTP {resp.status}: {data[:200]!r}")
        j = json.loads(data)
        if j.get("error") is not None:
            raise RuntimeError(f"{method}: {j['error']}")
        return j["result"]

    def close(self):
        self.conn.close()


def vm_record(name: str) -> dict:
    m = str(64 * MIB)
    return {
        "name_label": name, "name_description": "", "user_version": "1", "is_a_template": False,
        "affinity": "OpaqueRef:NULL", "memory_static_max": m, "memory_dynamic_max": m,
        "memory_dynamic_min": m, "memory_static_min": m, "VCPUs_params": {}, "VCPUs_max": "1",
        "VCPUs_at_startup": "1", "actions_after_shutdown": "destroy", "actions_after_reboot": "restart",
        "actions_after_crash": "destroy", "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "", "PV_args": "",
        "PV_bootloader_args": "", "PV_legacy_args": "", "HVM_boot_policy": "", "HVM_boot_params": {},
        "platform": {}, "PCI_bus": "", "other_config": {}, "recommendations": "",
    }


def storm(host: str, port: int, password: str, label: str) -> dict:
    main = Rpc(host, port)
    session = main("session.login_with_password", "root", password, "1.0", "l2")
    vms = [main("VM.create", session, vm_record(f"l2-{label}-{i}")) for i in range(N_VMS)]
    watch = Rpc(host, port)
    token = watch("event.from", session, ["task"], "", 0.0)["token"]
    lock = threading.Lock()
    window = threading.Semaphore(IN_FLIGHT)
    submitted: set = set()
    finished: dict = {}                 # task -> status, maybe before its submitter saw the ref
    done: dict = {}                     # task -> time, once both are known
    all_done = threading.Event()
    errors: list = []

    def settle(ref):
        if ref in submitted and ref in finished and ref not in done:
            done[ref] = time.perf_counter()
            window.release()
            if len(done) == N_VMS:
                all_done.set()

    def watcher():
        nonlocal token
        try:
            while not all_done.is_set():
                batch = watch("event.from", session, ["task"], token, 5.0)
                token = batch["token"]
                with lock:
                    for ev in batch["events"]:
                        st = (ev.get("snapshot") or {}).get("status")
                        if st and st != "pending":
                            finished.setdefault(ev["ref"], st)
                            settle(ev["ref"])
        except Exception as e:  # noqa: BLE001
            errors.append(f"watcher: {e}")
            all_done.set()

    todo = iter(vms)
    todo_lock = threading.Lock()

    def submitter():
        rpc = Rpc(host, port)
        try:
            while not all_done.is_set():
                with todo_lock:
                    vm = next(todo, None)
                if vm is None:
                    return
                window.acquire()
                ref = rpc("Async.VM.start", session, vm, False, False)
                with lock:
                    submitted.add(ref)
                    settle(ref)
        except Exception as e:  # noqa: BLE001
            errors.append(f"submitter: {e}")
            all_done.set()
        finally:
            rpc.close()

    threading.Thread(target=watcher, daemon=True).start()
    t0 = time.perf_counter()
    subs = [threading.Thread(target=submitter, daemon=True) for _ in range(SUBMITTERS)]
    for s in subs:
        s.start()
    all_done.wait(TASK_TIMEOUT)
    if errors:
        raise RuntimeError("; ".join(errors))
    if len(done) != N_VMS:
        raise RuntimeError(f"only {len(done)} of {N_VMS} starts finished within {TASK_TIMEOUT:.0f} s")
    makespan = max(done.values()) - t0
    failed = [r for r in submitted if finished.get(r) != "success"]
    recs = main("VM.get_all_records", session)
    running = [r for r in recs.values() if not r["is_control_domain"] and r["power_state"] == "Running"]
    per_host: dict = {}
    for r in running:
        per_host[r["resident_on"]] = per_host.get(r["resident_on"], 0) + 1
    main.close()
    watch.close()
    return {"makespan": makespan, "rate": N_VMS / makespan, "running": len(running), "failed": len(failed),
            "spread": sorted(per_host.values(), reverse=True),
            "first_error": main_error(host, port, session, failed[0]) if failed else ""}


def main_error(host, port, session, task) -> str:
    rpc = Rpc(host, port)
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
