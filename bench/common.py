"""Shared helpers for the benchmarks: timing, CPU pinning, the ratio line every benchmark prints, a
JSON-RPC client, and the boot storm (Async.VM.start of many small VMs) that L1 and L2 run."""
import gc
import http.client
import json
import os
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field


def best_and_median(fn, runs: int = 5, inner: int = 1):
    """Runs fn `inner` times per sample, `runs` samples; returns (best, median) seconds per call."""
    samples = []
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return min(samples), statistics.median(samples)


def pin(cpu: int) -> None:
    """Pins this process to one CPU when the machine has it, so client and server don't share a core."""
    try:
        if cpu < os.cpu_count():
            os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        pass


def report(bench_id: str, what: str, ours: float, baseline: float, baseline_name: str,
           unit: str = "s", higher_is_better: bool = False, target: str = "") -> None:
    """Prints one comparable line: our figure, the baseline's figure from the same run, and the ratio."""
    ratio = (ours / baseline) if higher_is_better else (baseline / ours)
    fmt = (lambda v: f"{v * 1e3:.2f} ms") if unit == "s" else (lambda v: f"{v:,.0f} {unit}")
    tail = f"  (target {target})" if target else ""
    print(f"{bench_id:4} {what:44} ours {fmt(ours):>14}  {baseline_name} {fmt(baseline):>14}  ratio {ratio:6.2f}x{tail}",
          flush=True)


def run_main(bench_id: str, main, cleanup=lambda: None) -> None:
    """sys.exit(main()), with SIGTERM taken as an interrupt: then cleanup(), one line, status 130."""
    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        cleanup()
        print(f"{bench_id:4} interrupted", flush=True)
        sys.exit(130)


class Rpc:
    """JSON-RPC v2 over one keep-alive http.client connection to host:port.  With `reconnect`, a
    connection the server closed is opened again and the call sent once more."""

    def __init__(self, host: str, port: int, timeout: float = 60, reconnect: bool = False):
        self.host, self.port, self.timeout, self.reconnect = host, port, timeout, reconnect
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self.id = 0

    def raw(self, method: str, *params) -> dict:
        """The whole JSON-RPC reply, error or result."""
        self.id += 1
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": self.id})
        for attempt in (0, 1):
            try:
                self.conn.request("POST", "/jsonrpc", body, {"Content-Type": "application/json"})
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if not self.reconnect or attempt:
                    raise
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        if resp.status != 200:
            raise RuntimeError(f"{method}: HTTP {resp.status}: {data[:200]!r}")
        return json.loads(data)

    def __call__(self, method: str, *params):
        j = self.raw(method, *params)
        if j.get("error") is not None:
            raise RuntimeError(f"{method}: {j['error']}")
        return j["result"]

    def close(self):
        self.conn.close()


MIB = 1 << 20


def vm_record(name: str, **fields) -> dict:
    """A VM.create record of a small VM (64 MiB, 1 vCPU); `fields` replace the defaults."""
    m = str(64 * MIB)
    return {
        "name_label": name, "name_description": "", "user_version": "1", "is_a_template": False,
        "affinity": "OpaqueRef:NULL", "memory_static_max": m, "memory_dynamic_max": m,
        "memory_dynamic_min": m, "memory_static_min": m, "VCPUs_params": {}, "VCPUs_max": "1",
        "VCPUs_at_startup": "1", "actions_after_shutdown": "destroy", "actions_after_reboot": "restart",
        "actions_after_crash": "destroy", "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "", "PV_args": "",
        "PV_bootloader_args": "", "PV_legacy_args": "", "HVM_boot_policy": "", "HVM_boot_params": {},
        "platform": {}, "PCI_bus": "", "other_config": {}, "recommendations": "",
        **fields,
    }


@dataclass
class Storm:
    """What a boot storm saw; times are time.perf_counter() values."""
    t_start: float                                  # the first Async.VM.start
    t_issued: float = 0.0                           # seconds after t_start when every start was issued
    submit_at: list = field(default_factory=list)  # VM index -> when its start was sent
    submitted: dict = field(default_factory=dict)  # task -> VM index
    status: dict = field(default_factory=dict)     # task -> final status, maybe before its submitter saw it
    done_at: dict = field(default_factory=dict)    # task -> when both its end and its ref were known

    @property
    def makespan(self) -> float:
        return max(self.done_at.values()) - self.t_start

    def failed(self) -> list:
        return [r for r in self.submitted if self.status.get(r) != "success"]

    def latencies(self) -> list:
        """Sorted seconds from each start's request to its task's end."""
        return sorted(self.done_at[r] - self.submit_at[self.submitted[r]] for r in self.done_at)


def boot_storm(connect, session: str, vms: list, in_flight: int, submitters: int, timeout: float) -> Storm:
    """Async.VM.start of every VM in `vms`: `submitters` threads, each on its own connection from
    connect(), at most `in_flight` tasks outstanding; the tasks followed with event.from (from a
    token taken before the first start) until all have ended.  Raises RuntimeError when a client
    call fails or not all tasks end within `timeout` seconds."""
    n = len(vms)
    watch = connect()
    token = watch("event.from", session, ["task"], "", 0.0)["token"]
    lock = threading.Lock()
    window = threading.Semaphore(in_flight)
    all_done = threading.Event()
    errors: list[str] = []
    todo = iter(range(n))
    todo_lock = threading.Lock()
    s = Storm(t_start=0.0, submit_at=[0.0] * n)

    def settle(ref: str) -> None:
        # with lock held: done once both the task's end and its ref (from Async.VM.start) are known
        if ref in s.submitted and ref in s.status and ref not in s.done_at:
            s.done_at[ref] = time.perf_counter()
            window.release()
            if len(s.done_at) == n:
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
                            s.status.setdefault(ev["ref"], st)
                            settle(ev["ref"])
        except Exception as e:  # noqa: BLE001
            errors.append(f"watcher: {e}")
            all_done.set()

    def submitter():
        rpc = connect()
        try:
            while not all_done.is_set():
                with todo_lock:
                    i = next(todo, None)
                if i is None:
                    return
                window.acquire()
                s.submit_at[i] = time.perf_counter()
                ref = rpc("Async.VM.start", session, vms[i], False, False)
                with lock:
                    s.submitted[ref] = i
                    settle(ref)
        except Exception as e:  # noqa: BLE001
            errors.append(f"submitter: {e}")
            all_done.set()
        finally:
            rpc.close()

    try:
        threading.Thread(target=watcher, daemon=True).start()
        s.t_start = time.perf_counter()
        subs = [threading.Thread(target=submitter, daemon=True) for _ in range(min(submitters, in_flight))]
        for t in subs:
            t.start()
        for t in subs:
            t.join(timeout)
        s.t_issued = time.perf_counter() - s.t_start
        all_done.wait(timeout)
        if errors:
            raise RuntimeError("; ".join(errors))
        if len(s.done_at) != n:
            raise RuntimeError(f"only {len(s.done_at)} of {n} start tasks finished within {timeout:.0f} s")
        return s
    finally:
        watch.close()
