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
import http.client
import json
import os
import pathlib
import shutil
import signal
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from bench.common import pin, report  # noqa: E402
from bench.h1_rpc_small import CHILDREN, Daemon, _pin_server, stop  # noqa: E402

MIB = 1 << 20
N_VMS = int(os.environ.get("L1_VMS", "500"))
N_WIDTH4_VMS = int(os.environ.get("L1_WIDTH4_VMS", "64"))
IN_FLIGHT = 64
SUBMITTERS = 8                 # client threads issuing Async.VM.start, each with its own connection
CLIENT_CPU = 0
TASK_TIMEOUT = 120.0


class Rpc:
    """JSON-RPC v2 over one keep-alive http.client connection."""

    def __init__(self, port: int):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.id = 0

    def __call__(self, method: str, *params):
        self.id += 1
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": self.id})
        for attempt in (0, 1):
            try:
                self.conn.request("POST", "/jsonrpc", body, {"Content-Type": "application/json"})
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt:
                    raise
        if resp.status != 200:
            raise RuntimeError(f"{method}: HTTP {resp.status}: {data[:200]!r}")
        j = json.loads(data)
        if j.get("error") is not None:
            raise RuntimeError(f"{method}: {j['error']}")
        return j["result"]

    def close(self):
        self.conn.close()


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


def vm_record(name: str) -> dict:
    m = str(64 * MIB)
    return {
        "name_label": name, "name_description": "", "user_version": "1", "is_a_template": False,
        "affinity": "OpaqueRef:NULL", "memory_static_max": m, "memory_dynamic_max": m,
        "memory_dynamic_min": m, "memory_static_min": m, "VCPUs_params": {},
        "VCPUs_max": "1", "VCPUs_at_startup": "1", "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart", "actions_after_crash": "destroy", "PV_bootloader": "",
        "PV_kernel": "", "PV_ramdisk": "", "PV_args": "", "PV_bootloader_args": "", "PV_legacy_args": "",
        "HVM_boot_policy": "BIOS order", "HVM_boot_params": {"order": "cd"}, "platform": {}, "PCI_bus": "",
        "other_config": {}, "recommendations": "",
    }


def run_case(tmp: pathlib.Path, label: str, n: int, workers: int, delay: float, in_flight: int) -> dict:
    (tmp / label).mkdir()
    d = BootDaemon(tmp / label, workers, delay)
    try:
        d.start()
        main = Rpc(d.port)
        session = main("session.login_with_password", "root", d.password, "1.0", "l1")
        t0 = time.perf_counter()
        vms = [main("VM.create", session, vm_record(f"l1-{label}-{i}")) for i in range(n)]
        t_create = time.perf_counter() - t0

        lock = threading.Lock()
        window = threading.Semaphore(in_flight)
        submitted: dict[str, int] = {}        # task ref -> vm index
        finished: dict[str, str] = {}         # task ref -> status (may arrive before the ref is known)
        done_at: dict[str, float] = {}
        submit_at: list[float] = [0.0] * n
        all_done = threading.Event()
        errors: list[str] = []

        # the watcher: event.from on tasks, from a token taken before the first start
        watch = Rpc(d.port)
        token = watch("event.from", session, ["task"], "", 0.0)["token"]

        def on_finished(ref: str, status: str, now: float) -> None:
            # called with lock held
            if ref in done_at:
                return
            finished[ref] = status
            if ref in submitted:
                done_at[ref] = now
                window.release()
                if len(done_at) == n:
                    all_done.set()

        def watcher():
            nonlocal token
            try:
                while not all_done.is_set():
                    batch = watch("event.from", session, ["task"], token, 5.0)
                    token = batch["token"]
                    now = time.perf_counter()
                    with lock:
                        for ev in batch["events"]:
                            snap = ev.get("snapshot") or {}
                            st = snap.get("status")
                            if st and st != "pending":
                                on_finished(ev["ref"], st, now)
            except Exception as e:  # noqa: BLE001
                errors.append(f"watcher: {e}")
                all_done.set()

        next_vm = iter(range(n))
        next_lock = threading.Lock()

        def submitter():
            rpc = Rpc(d.port)
            try:
                while not all_done.is_set():
                    with next_lock:
                        i = next(next_vm, None)
                    if i is None:
                        return
                    window.acquire()
                    submit_at[i] = time.perf_counter()
                    ref = rpc("Async.VM.start", session, vms[i], False, False)
                    with lock:
                        submitted[ref] = i
                        if ref in finished:
                            on_finished_known(ref)
            except Exception as e:  # noqa: BLE001
                errors.append(f"submitter: {e}")
                all_done.set()
            finally:
                rpc.close()

        def on_finished_known(ref):
            # the task finished before Async.VM.start's reply was processed here
            done_at[ref] = time.perf_counter()
            window.release()
            if len(done_at) == n:
                all_done.set()

        wt = threading.Thread(target=watcher, daemon=True)
        wt.start()
        t_start = time.perf_counter()
        subs = [threading.Thread(target=submitter, daemon=True) for _ in range(min(SUBMITTERS, in_flight))]
        for s in subs:
            s.start()
        for s in subs:
            s.join(TASK_TIMEOUT)
        t_issued = time.perf_counter() - t_start
        all_done.wait(TASK_TIMEOUT)
        t_end = max(done_at.values(), default=time.perf_counter())
        makespan = t_end - t_start
        if errors:
            raise RuntimeError("; ".join(errors))
        if len(done_at) != n:
            raise RuntimeError(f"only {len(done_at)} of {n} start tasks finished within {TASK_TIMEOUT:.0f} s")
        failed = [r for r in submitted if finished.get(r) != "success"]
        fail_info = ""
        if failed:
            fail_info = f"; first failure: {main('task.get_error_info', session, failed[0])}"
        running = main("VM.get_all_records_where", session, 'field "power_state"="Running"')
        n_running = sum(1 for r in running.values() if not r.get("is_control_domain"))
        lat = sorted(done_at[r] - submit_at[submitted[r]] for r in done_at)
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
        watch.close()
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
        for proc in list(CHILDREN):
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        for p in list(CHILDREN):
            stop(p)
        print("L1   interrupted", flush=True)
        sys.exit(130)
