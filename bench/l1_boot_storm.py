"""L1 boot_storm_sim: VM starts per second and makespan of a boot storm on one simulated host.

The real daemon (`xapi serve`, sim backend, pinned to CPU 1) is started afresh per case with
XAPI_XENOPSD_WORKERS / XAPI_XENOPSD_BUILD_DELAY set; the client (pinned to CPU 0) creates small VMs
(64 MiB, 1 vCPU) with VM.create, then issues `Async.VM.start` for every one (one request each, over
keep-alive JSON-RPC connections, at most IN_FLIGHT outstanding) and follows the tasks with event.from
until all have finished.  Makespan runs from the first Async.VM.start to the last task's completion;
every VM must then be Running (VM.get_all_records_where power_state = Running).

Cases (VM counts via env L1_VMS, default 500, and L1_WIDTH4_VMS, default 64):
  a  build delay 0, 64 xenopsd workers, 64 in flight           (ours, zero delay)
  b  build delay 0, 1 worker, 1 in flight (serialised)         (baseline for a)
  c  build delay 1 s, 4 workers (xenopsd's default), 64 in flight, L1_WIDTH4_VMS VMs  (baseline for d)
  d  build delay 1 s, 32 workers, 64 in flight, L1_VMS VMs (the target: makespan <= 20 s)
Case c uses fewer VMs: 500 VMs at width 4 would take 125 s of build time alone; 64 VMs are 16 full
waves of 4, so its starts/s is the steady-state rate of width 4 and is compared with d's starts/s.
"""
import functools
import os
import pathlib
import shutil
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from bench.common import Rpc, boot_storm, pin, report, run_main, vm_record  # noqa: E402
from bench.h1_rpc_small import CHILDREN, Daemon, _pin_server, stop_children  # noqa: E402

N_VMS = int(os.environ.get("L1_VMS", "500"))
N_WIDTH4_VMS = int(os.environ.get("L1_WIDTH4_VMS", "64"))
IN_FLIGHT = 64
SUBMITTERS = 8                 # client threads issuing Async.VM.start, each with its own connection
CLIENT_CPU = 0
TASK_TIMEOUT = 120.0


class BootDaemon(Daemon):
    """The H1 daemon wrapper with a sim host big enough for the storm and xenopsd settings from env."""

    def __init__(self, tmp: pathlib.Path, workers: int, delay: float):
        super().__init__(tmp)
        self.workers, self.delay = workers, delay

    def start(self, timeout: float = 60.0) -> None:
        import subprocess
        cmd = [self.exe(), "serve", "--data-dir", str(self.data), "--address", "127.0.0.1",
               "--http-port", str(self.port), "--https-port", "0",
               "--sim-config", "memory_mib=65536,cpus=8"]
        env = {**os.environ, "XAPI_ROOT_PASSWORD": self.password,
               "XAPI_XENOPSD_WORKERS": str(self.workers), "XAPI_XENOPSD_BUILD_DELAY": str(self.delay)}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, preexec_fn=_pin_server, cwd=str(ROOT))
        CHILDREN.append(self.proc)
        deadline = time.monotonic() + timeout
        # the pid file is written once xenopsd is up; HTTP answers earlier than that
        while not ((self.data / "xapi.pid").exists() and self._answers()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"`xapi serve` exited with status {self.proc.returncode}; its output ends with:"
                                   f"\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"`xapi serve` did not answer within {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)
        self._read_pid()


def run_case(tmp: pathlib.Path, label: str, n: int, workers: int, delay: float, in_flight: int) -> dict:
    (tmp / label).mkdir()
    d = BootDaemon(tmp / label, workers, delay)
    try:
        d.start()
        connect = functools.partial(Rpc, "127.0.0.1", d.port, reconnect=True)
        main = connect()
        session = main("session.login_with_password", "root", d.password, "1.0", "l1")
        t0 = time.perf_counter()
        vms = [main("VM.create", session, vm_record(f"l1-{label}-{i}", HVM_boot_policy="BIOS order",
                                                    HVM_boot_params={"order": "cd"}))
               for i in range(n)]
        t_create = time.perf_counter() - t0
        storm = boot_storm(connect, session, vms, in_flight, SUBMITTERS, TASK_TIMEOUT)
        makespan, t_issued, failed = storm.makespan, storm.t_issued, storm.failed()
        fail_info = ""
        if failed:
            fail_info = f"; first failure: {main('task.get_error_info', session, failed[0])}"
        running = main("VM.get_all_records_where", session, 'field "power_state"="Running"')
        n_running = sum(1 for r in running.values() if not r.get("is_control_domain"))
        lat = storm.latencies()
        res = {"n": n, "makespan": makespan, "rate": n / makespan, "create": t_create, "issued": t_issued,
               "p50": lat[len(lat) // 2], "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
               "failed": len(failed), "running": n_running}
        print(f"L1   {label:2} delay {delay:g} s workers {workers:2} in-flight {in_flight:2}: {n:3} VMs"
              f"  makespan {makespan:7.3f} s  {res['rate']:7.1f} starts/s"
              f"  start latency p50 {res['p50'] * 1e3:7.1f} ms p99 {res['p99'] * 1e3:7.1f} ms"
              f"  (create {n} VMs {t_create:.2f} s; all starts issued after {t_issued:.2f} s)"
              f"  running {n_running}/{n}, failed tasks {len(failed)}{fail_info}", flush=True)
        if n_running != n or failed:
            print(f"L1   {label}: NOT ALL VMs RUNNING", flush=True)
        main.close()
        return res
    finally:
        d.stop()


def main() -> int:
    pin(CLIENT_CPU)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="l1-"))
    results: dict[str, dict] = {}
    cases = [("a", N_VMS, 64, 0.0, IN_FLIGHT), ("b", N_VMS, 1, 0.0, 1),
             ("c", N_WIDTH4_VMS, 4, 1.0, IN_FLIGHT), ("d", N_VMS, 32, 1.0, IN_FLIGHT)]
    print(f"L1   boot storm on one simulated host (65536 MiB, 8 cpus); VMs 64 MiB 1 vCPU; server CPU 1,"
          f" client CPU {CLIENT_CPU}; the width-4 delay case uses {N_WIDTH4_VMS} VMs", flush=True)
    ok = True
    try:
        for label, n, workers, delay, fl in cases:
            try:
                results[label] = run_case(tmp, label, n, workers, delay, fl)
                r = results[label]
                ok = ok and r["running"] == r["n"] and not r["failed"]
            except Exception as e:  # noqa: BLE001
                print(f"L1   {label}: FAILED: {e}", flush=True)
                ok = False
        a, b, c, dd = (results.get(k) for k in "abcd")
        if a:
            met = "MET" if a["rate"] >= 200 else "MISSED"
            print(f"L1   (a) {a['rate']:.1f} starts/s at zero build delay with 64 workers: target >= 200/s {met}",
                  flush=True)
        if a and b:
            report("L1", "0 s delay starts/s, width 64 vs serial", a["rate"], b["rate"], "serial",
                   unit="starts/s", higher_is_better=True, target=">= 200 starts/s absolute")
            report("L1", "0 s delay makespan, width 64 vs serial", a["makespan"], b["makespan"], "serial")
        if c and dd:
            ratio = dd["rate"] / c["rate"]
            report("L1", "1 s delay starts/s, width 32 vs 4", dd["rate"], c["rate"], "width4",
                   unit="starts/s", higher_is_better=True,
                   target=">= 6x " + ("MET" if ratio >= 6 else "MISSED"))
            met = "MET" if dd["makespan"] <= 20 else "MISSED"
            print(f"L1   (d) makespan {dd['makespan']:.2f} s for {dd['n']} VMs at 1 s build delay, width 32:"
                  f" target <= 20 s {met}; (c) width 4: {c['n']} VMs in {c['makespan']:.2f} s", flush=True)
    finally:
        stop_children()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    run_main("L1", main, stop_children)
