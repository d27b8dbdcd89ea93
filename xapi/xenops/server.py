"""xenopsd: VMs, their domains and the tasks that change them (after ocaml/xenopsd/lib/xenops_server.ml).

One instance owns the hypervisor handle (xapi.xenctrl) and, with the simulator, writes the domains'
xenstore entries into a Store (xapi.xenstored).  Each VM is known by its uuid once `VM.add` gave
its configuration:

    {"id": uuid, "name": str, "hvm": bool, "memory_kib": int, "vcpus": int, "vcpus_max": int,
     "on_shutdown": "destroy"|"restart", "on_reboot": ..., "on_crash": "destroy"|"restart"|"preserve"}

(as xapi_xenops.ml maps actions_after_*: preserve keeps the shut-down domain, paused; coredump_and_*
act as their destroy/restart, no dump being taken)

Lifecycle calls (VM.start, shutdown, hard_shutdown, reboot, hard_reboot, pause, unpause) return a
task id at once; the work runs in a pool of `workers` (default 4, as xenopsd), one operation at a
time per VM.  A task is pending / completed / failed / cancelled, with progress 0..1.
Clean shutdown and reboot write control/shutdown; the simulated guest honours the request after
`shutdown_delay` seconds (its domain shuts down with that reason, then is destroyed).
Domains that shut down by themselves (DEBUG.trigger injects it) follow the VM's on_* action; every
change is an update that UPDATES.get(last, timeout) hands out.
Hypervisor calls go through `_xc`: in place for the simulator, in a bounded pool of threads for the
xc backend (libxenctrl may block), so that none runs on the event loop.
Devices of a running domain: VBD.plug/unplug/set_media, VIF.plug/unplug/move and
VIF.set_ip_configuration (a static address for the guest agent, xapi's VIF.configure_ipv4/6).
Live settings: VM.set_vcpus (vCPU hotplug), VM.set_shadow_multiplier and VM.request_rdp;
HOST.update_guest_agent_features for the pool's guest agent configuration.

Wire: one JSON object per line. {"id", "method", "params": [...]} -> {"id", "result"} or
{"id", "error": [code, params...]} (codes are xapi's where one exists, e.g. VM_BAD_POWER_STATE).
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import functools
import itertools
import logging
import os
import time

import orjson

from xapi.xenops import devices

from xapi.xenops import image, imagefile

log = logging.getLogger("xapi.xenops")

KIB = 1024
_REASONS = {0: "poweroff", 1: "reboot", 2: "suspend", 3: "crash", 4: "watchdog"}
_IMAGE_CHUNK = 64 * KIB
_image_io = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="xenops-image")


async def _blocking(fn, *args):
    """Disk work for memory images, off the event loop in a pool of two threads."""
    return await asyncio.get_running_loop().run_in_executor(_image_io, fn, *args)


class XenopsError(Exception):
    def __init__(self, code: str, *params):
        super().__init__(code, *params)
        self.code = code
        self.params = [str(p) for p in params]

    @property
    def description(self) -> list:
        return [self.code, *self.params]


class Task:
    def __init__(self, tid: str, label: str):
        self.id = tid
        self.label = label
        self.state = "pending"
        self.progress = 0.0
        self.result = None
        self.error: list = []
        self.created = time.time()
        self.aio: asyncio.Task | None = None
        self.done = asyncio.Event()
        self.changed = asyncio.Event()

    def set_progress(self, p: float) -> None:
        self.progress = max(self.progress, min(1.0, p))
        self.changed.set()

    def stat(self) -> dict:
        return {"id": self.id, "label": self.label, "state": self.state, "progress": self.progress,
                "result": self.result, "error": self.error}


class VM:
    def __init__(self, config: dict):
        self.config = config
        self.domid: int | None = None
        self.start_time = 0.0
        self.lock = asyncio.Lock()          # one operation at a time per VM
        self.busy = 0                       # operations in flight: the monitor leaves the VM alone
        self.preserved: int | None = None   # the domid of a shut-down domain kept (on_* = preserve)

    @property
    def id(self) -> str:
        return self.config["id"]


class Xenopsd:
    def __init__(self, hypervisor, store=None, workers: int = 4, build_delay: float = 0.0,
                 shutdown_delay: float = 0.1, poll_interval: float = 0.1,
                 guest_agent_delay: float | None = None) -> None:
        self.hv = hypervisor
        if guest_agent_delay is None:
            guest_agent_delay = float(os.environ.get("XAPI_GUEST_AGENT_DELAY", "2"))
        self.guest_agent_delay = guest_agent_delay
        self.store = store
        self.workers = workers
        self.build_delay = build_delay
        self.shutdown_delay = shutdown_delay
        self.migrate_delay = 0.0                # how long live migration's pre-copy rounds take
        self.poll_interval = poll_interval
        self.pool = asyncio.Semaphore(workers)
        self.vms: dict[str, VM] = {}
        self.tasks: dict[str, Task] = {}
        self._task_ids = itertools.count(1)
        self.updates: list[tuple[int, list]] = []     # (sequence, ["VM", id])
        self._seq = 0
        self._updated = asyncio.Event()
        self._server = None
        self._monitor = None
        self._bg: set[asyncio.Task] = set()
        self.path = ""
        # Hypervisor calls that may block (libxenctrl: the "xc" backend) go to a bounded pool of
        # threads; the simulator answers at once and is called in place.  XAPI_XENOPSD_HV_THREADS
        # sets the pool's size (0: no pool).
        threads = int(os.environ.get("XAPI_XENOPSD_HV_THREADS",
                                     "0" if getattr(hypervisor, "backend", "sim") == "sim" else str(workers)))
        self._hv_pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="xenops-hv") \
            if threads > 0 else None

    async def _xc(self, fn, *args, **kw):
        """fn(*args) on the hypervisor: in the bounded pool when there is one."""
        if self._hv_pool is None:
            return fn(*args, **kw)
        return await asyncio.get_running_loop().run_in_executor(self._hv_pool, functools.partial(fn, *args, **kw))

    # -- service -------------------------------------------------------------------------------
    async def start(self, path: str) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        # a line may carry a migration image (VM.receive): up to ~1 MiB in base64. Every operation in
        # flight holds a connection (TASK.wait): a short backlog makes connects fail with EAGAIN.
        self._server = await asyncio.start_unix_server(self._connection, path, limit=16 << 20, backlog=1024)
        os.chmod(path, 0o600)
        self._monitor = asyncio.get_running_loop().create_task(self._watch_domains())

    async def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
        if self._hv_pool is not None:
            self._hv_pool.shutdown(wait=False)
        for t in list(self.tasks.values()):
            if t.aio is not None and not t.aio.done():
                t.aio.cancel()
        for t in list(self._bg):
            t.cancel()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending: set[asyncio.Task] = set()
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                t = asyncio.get_running_loop().create_task(self._answer(line, writer))
                pending.add(t)
                t.add_done_callback(pending.discard)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            for t in pending:
                t.cancel()
            writer.close()

    async def _answer(self, line: bytes, writer) -> None:
        rid = None
        try:
            req = orjson.loads(line)
            rid = req.get("id")
            reply = {"id": rid, "result": await self.call(req["method"], req.get("params") or [])}
        except XenopsError as e:
            reply = {"id": rid, "error": e.description}
        except Exception as e:  # noqa: BLE001 - every failure is answered
            log.exception("xenopsd: request failed")
            reply = {"id": rid, "error": ["INTERNAL_ERROR", f"{type(e).__name__}: {e}"]}
        with contextlib.suppress(ConnectionError, RuntimeError):
            writer.write(orjson.dumps(reply) + b"\n")

    async def call(self, method: str, params: list):
        fn = _METHODS.get(method)
        if fn is None:
            raise XenopsError("MESSAGE_METHOD_UNKNOWN", method)
        result = fn(self, *params)
        if asyncio.iscoroutine(result):
            result = await result
        return result

    # -- updates -------------------------------------------------------------------------------
    def _update(self, vm_id: str) -> None:
        self._seq += 1
        self.updates.append((self._seq, ["VM", vm_id]))
        if len(self.updates) > 1024:
            del self.updates[:512]
        self._updated.set()
        self._updated = asyncio.Event()

    async def updates_get(self, last: int, timeout: float) -> dict:
        last = int(last)
        if self._seq <= last:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._updated.wait(), float(timeout))
        items = [u for s, u in self.updates if s > last]
        seen, out = set(), []
        for u in items:
            if tuple(u) not in seen:
                seen.add(tuple(u))
                out.append(u)
        return {"updates": out, "last": self._seq}

    # -- tasks ---------------------------------------------------------------------------------
    def _spawn(self, label: str, vm: VM, body, pooled: bool = True) -> str:
        """`pooled=False`: outside the worker pool (VM.receive: a host sending VMs to a host sending
        VMs back must not wait for its own workers)."""
        task = Task(f"xenops-task-{next(self._task_ids)}", label)
        self.tasks[task.id] = task

        vm.busy += 1

        async def run():
            try:
                async with vm.lock, (self.pool if pooled else contextlib.nullcontext()):
                    task.set_progress(0.0)
                    task.result = await body(task)
                task.state = "completed"
                task.progress = 1.0
            except asyncio.CancelledError:
                task.state = "cancelled"
                task.error = ["TASK_CANCELLED", task.id]
            except XenopsError as e:
                task.state, task.error = "failed", e.description
            except Exception as e:  # noqa: BLE001
                log.exception("xenopsd: %s failed", label)
                task.state, task.error = "failed", ["INTERNAL_ERROR", f"{type(e).__name__}: {e}"]
            finally:
                vm.busy -= 1
                task.done.set()
                task.changed.set()
                self._update(vm.id)
                self._forget_old_tasks()

        task.aio = asyncio.get_running_loop().create_task(run())
        return task.id

    def _forget_old_tasks(self) -> None:
        if len(self.tasks) > 256:
            cutoff = time.time() - 600
            for tid, t in list(self.tasks.items()):
                if t.done.is_set() and t.created < cutoff:
                    del self.tasks[tid]

    def _task(self, tid: str) -> Task:
        t = self.tasks.get(tid)
        if t is None:
            raise XenopsError("HANDLE_INVALID", "task", tid)
        return t

    def task_stat(self, tid: str) -> dict:
        return self._task(tid).stat()

    async def task_wait(self, tid: str, timeout: float) -> dict:
        """The task's state once it finished, or once its progress moved, or after `timeout`."""
        t = self._task(tid)
        if not t.done.is_set():
            t.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(t.changed.wait(), float(timeout))
        return t.stat()

    def task_cancel(self, tid: str) -> None:
        t = self._task(tid)
        if not t.done.is_set() and t.aio is not None:
            t.aio.cancel()

    def task_destroy(self, tid: str) -> None:
        t = self.tasks.get(tid)
        if t is not None and t.done.is_set():
            del self.tasks[tid]

    # -- VMs -----------------------------------------------------------------------------------
    def _vm(self, vm_id: str) -> VM:
        vm = self.vms.get(vm_id)
        if vm is None:
            raise XenopsError("HANDLE_INVALID", "VM", vm_id)
        return vm

    def vm_add(self, config: dict) -> str:
        vm = self.vms.get(config["id"])
        if vm is None:
            self.vms[config["id"]] = VM(dict(config))
        else:       # a config without devices keeps the ones the VM has (they change by hotplug)
            vm.config = {"vbds": vm.config.get("vbds", []), "vifs": vm.config.get("vifs", []), **config}
        return config["id"]

    async def vm_remove(self, vm_id: str) -> None:
        vm = self.vms.get(vm_id)
        if vm is not None:
            if vm.domid is not None:
                raise XenopsError("VM_BAD_POWER_STATE", vm_id, "halted", (await self._power_state(vm)).lower())
            self.vms.pop(vm_id, None)

    def _info(self, vm: VM) -> dict | None:
        if vm.domid is None:
            return None
        try:
            return self.hv.domain_getinfo(vm.domid)
        except Exception:  # noqa: BLE001 - the domain went away
            return None

    @staticmethod
    def _power(info: dict | None) -> str:
        if info is None:
            return "Halted"
        if info.get("paused"):
            return "Paused"
        return "Running"

    async def _power_state(self, vm: VM) -> str:
        return self._power(await self._xc(self._info, vm))

    async def vm_stat(self, vm_id: str) -> dict:
        vm = self._vm(vm_id)
        info = await self._xc(self._info, vm)
        if info is None:
            return {"power_state": "Halted", "domid": -1, "memory": 0, "vcpus": 0, "cpu_time": 0,
                    "start_time": 0.0}
        return {"power_state": self._power(info), "domid": vm.domid, "hvm": bool(vm.config.get("hvm")),
                "memory": int(info.get("tot_pages", 0)) * 4096,
                "memory_target": int(info.get("max_pages", 0)) * 4096,
                "vcpus": int(vm.config.get("vcpus", info.get("nr_online_vcpus", 1))),
                "cpu_time": int(info.get("cpu_time", 0)), "start_time": vm.start_time,
                "guest_agent": self._guest_agent_data(vm.domid)}

    def host_stat(self) -> dict:
        p = self.hv.physinfo()
        return {"total_memory": p["total_pages"] * 4096, "free_memory": p["free_pages"] * 4096,
                "cpus": p["nr_cpus"]}

    async def host_stat_async(self) -> dict:
        return await self._xc(self.host_stat)

    async def host_stats_async(self) -> dict:
        return await self._xc(self.host_stats)

    def host_stats(self) -> dict:
        """One cheap snapshot for the periodic metrics (xapi.metrics): memory, the CPU time of every
        domain, and per VM its domain's CPU time, vCPUs, memory and state."""
        p = self.hv.physinfo()
        by_domid = {vm.domid: vm for vm in self.vms.values() if vm.domid is not None}
        total_cpu, vms = 0, {}
        for info in self.hv.domain_list():
            total_cpu += int(info.get("cpu_time", 0))
            vm = by_domid.get(info["domid"])
            if vm is not None:
                vms[vm.id] = {"domid": vm.domid, "cpu_time": int(info.get("cpu_time", 0)),
                              "vcpus": int(info.get("nr_online_vcpus", 1)),
                              "memory": int(info.get("tot_pages", 0)) * 4096,
                              "memory_target": int(info.get("max_pages", 0)) * 4096,
                              "paused": bool(info.get("paused")), "blocked": bool(info.get("blocked"))}
        return {"time_ns": time.monotonic_ns(), "total_memory": p["total_pages"] * 4096,
                "free_memory": p["free_pages"] * 4096, "cpus": p["nr_cpus"], "cpu_time": total_cpu, "vms": vms}

    async def _require(self, vm: VM, allowed: tuple, expected: str) -> str:
        """The VM's power state, which must be one of `allowed`."""
        actual = await self._power_state(vm)
        if actual not in allowed:
            raise XenopsError("VM_BAD_POWER_STATE", vm.id, expected, actual.lower())
        return actual

    async def _hv_quiet(self, fn, *args) -> None:
        """A hypervisor call whose failure is of no consequence (the domain may be gone already)."""
        with contextlib.suppress(Exception):
            await self._xc(fn, *args)

    # domain building blocks
    async def _build(self, vm: VM, task: Task, paused: bool, lo: float = 0.0, hi: float = 1.0) -> None:
        c = vm.config
        kib = int(c.get("memory_kib", 256 * KIB))
        need = kib * KIB
        free = (await self._xc(self.host_stat))["free_memory"]
        if need > free:
            raise XenopsError("HOST_NOT_ENOUGH_FREE_MEMORY", need, free)
        domid = await self._xc(self.hv.domain_create, c["id"], hvm=bool(c.get("hvm")),
                               max_vcpus=int(c.get("vcpus_max", c.get("vcpus", 1))), max_mem_kib=kib)
        vm.domid = domid
        try:
            await self._xc(self.hv.domain_setmaxmem, domid, kib)
            if self.store is not None and int(c.get("vcpus", 1)) < int(c.get("vcpus_max", c.get("vcpus", 1))):
                # the simulated guest brings up VCPUs_at_startup of its vcpus_max (hotplug adds more)
                await self._xc(self.hv.domain_max_vcpus, domid, int(c.get("vcpus", 1)))
            task.set_progress(lo + (hi - lo) * 0.1)
            steps = 10
            for i in range(steps):                  # the build delay, in steps that report progress
                if self.build_delay > 0:
                    await asyncio.sleep(self.build_delay / steps)
                task.set_progress(lo + (hi - lo) * (0.1 + 0.8 * (i + 1) / steps))
            await asyncio.sleep(0)
            if self.store is not None:
                self.store.populate_domain(domid, c.get("name", c["id"]), c["id"], kib, int(c.get("vcpus", 1)),
                                           vbds=[devices.vbd_spec(d) for d in c.get("vbds", [])],
                                           vifs=[devices.vif_spec(d) for d in c.get("vifs", [])],
                                           domain_type="hvm" if c.get("hvm") else "pv")
            info = await self._xc(self.hv.domain_getinfo, domid)
            if paused and not info.get("paused"):
                await self._xc(self.hv.domain_pause, domid)
            elif not paused and info.get("paused"):
                await self._xc(self.hv.domain_unpause, domid)
            vm.start_time = time.time()
            if not paused:
                self._guest_agent(vm)
        except BaseException:
            await self._destroy(vm)
            raise

    async def _destroy(self, vm: VM) -> None:
        domid, vm.domid = vm.domid, None
        vm.preserved = None
        if domid is None:
            return
        await self._hv_quiet(self.hv.domain_destroy, domid)
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.remove_domain(domid)

    async def _await_shutdown(self, vm: VM, timeout: float) -> str | None:
        deadline = time.monotonic() + float(timeout)
        while time.monotonic() < deadline:
            info = await self._xc(self._info, vm)
            if info is None:
                return "poweroff"
            if info.get("shutdown"):
                r = info.get("shutdown_reason", 0)
                return _REASONS.get(r, str(r)) if isinstance(r, int) else str(r)
            await asyncio.sleep(0.02)
        return None

    def _request_shutdown(self, vm: VM, reason: str) -> None:
        """Writes control/shutdown; the simulated guest honours it after shutdown_delay."""
        domid = vm.domid
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.write(f"/local/domain/{domid}/control/shutdown", reason)

        async def guest():
            await asyncio.sleep(self.shutdown_delay)
            if vm.domid == domid:
                with contextlib.suppress(Exception):
                    await self._xc(self.hv.domain_shutdown, domid, reason)

        self._background(guest())

    # the simulated guest agent (xe-guest-utilities): once booted, the guest writes its
    # PV drivers version, OS, memory and VIF addresses below its domain path
    def _guest_agent(self, vm: VM) -> None:
        domid = vm.domid
        if self.store is None or domid is None:
            return

        async def agent():
            await asyncio.sleep(self.guest_agent_delay)
            if vm.domid != domid:
                return
            base = f"/local/domain/{domid}"
            with contextlib.suppress(Exception):
                if self.store.exists(f"{base}/data/updated"):
                    return
                kib = int(vm.config.get("memory_kib", 256 * KIB))
                keys = {"attr/PVAddons/MajorVersion": "8", "attr/PVAddons/MinorVersion": "4",
                        "attr/PVAddons/MicroVersion": "0", "attr/PVAddons/BuildVersion": "1",
                        "data/os_name": "Debian GNU/Linux 12 (bookworm)", "data/os_distro": "debian",
                        "data/os_majorver": "12", "data/os_minorver": "5",
                        "data/os_uname": "6.1.0-18-amd64",
                        "data/meminfo_total": str(kib), "data/meminfo_free": str(kib * 3 // 4),
                        "control/feature-shutdown": "1", "control/feature-reboot": "1",
                        "control/feature-static-ip-setting": "1"}
                for vif in vm.config.get("vifs", []):
                    keys.update(self._agent_vif_keys(domid, int(vif["devid"] if isinstance(vif, dict) else vif),
                                                     vif.get("static_ip") if isinstance(vif, dict) else None))
                for k, v in keys.items():
                    self.store.write(f"{base}/{k}", v)
                self.store.write(f"{base}/data/updated", "1")    # the data is complete
                self._update(vm.id)

        self._background(agent())

    @staticmethod
    def _agent_vif_keys(domid: int, devid: int, static: dict | None = None) -> dict:
        """The addresses the agent reports for one VIF (192.0.2.0/24 and 2001:db8::/32 are for examples),
        or the static ones it was given (VIF.set_ip_configuration: {"4": {...}, "6": {...}})."""
        n = (domid * 8 + devid) % 250 + 2
        v4, v6 = f"192.0.2.{n}", f"2001:db8::{n:x}"
        for family, cfg in (static or {}).items():
            if cfg.get("mode") == "Static":
                addr = cfg["address"].partition("/")[0]
                v4, v6 = (addr, v6) if str(family) == "4" else (v4, addr)
        return {f"attr/vif/{devid}/ipv4/0": v4, f"attr/vif/{devid}/ipv6/0": v6, f"attr/eth{devid}/ip": v4}

    def _agent_vif(self, vm: VM, devid: int, plugged: bool) -> None:
        """A hotplugged or reconfigured VIF reaches the running agent's report (once it has reported)."""
        domid = vm.domid
        if self.store is None or domid is None or not self.store.exists(f"/local/domain/{domid}/data/updated"):
            return
        if plugged:
            vif = next((v for v in vm.config.get("vifs", []) if isinstance(v, dict) and int(v["devid"]) == devid), {})
            for k, v in self._agent_vif_keys(domid, devid, vif.get("static_ip")).items():
                self.store.write(f"/local/domain/{domid}/{k}", v)
        else:
            for k in (f"attr/vif/{devid}", f"attr/eth{devid}"):
                if self.store.exists(f"/local/domain/{domid}/{k}"):
                    self.store.rm(f"/local/domain/{domid}/{k}")

    def _guest_agent_data(self, domid) -> dict:
        """What the guest agent wrote: {"data/os_name": ..., "attr/vif/0/ipv4/0": ...}."""
        out: dict = {}
        if self.store is None or domid is None:
            return out
        base = f"/local/domain/{domid}"

        def walk(rel: str, depth: int) -> None:
            try:
                v = self.store.read(f"{base}/{rel}")
                if v:
                    out[rel] = v.decode(errors="replace") if isinstance(v, bytes) else str(v)
                children = self.store.directory(f"{base}/{rel}") if depth < 6 else []
            except Exception:  # noqa: BLE001 - absent
                return
            for ch in children:
                walk(f"{rel}/{ch}", depth + 1)
        for top in ("attr", "data", "control"):
            walk(top, 0)
        return out

    def _background(self, coro) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    # lifecycle calls: each answers a task id
    def vm_start(self, vm_id: str, paused: bool = False) -> str:
        vm = self._vm(vm_id)

        async def body(task):
            await self._require(vm, ("Halted",), "halted")
            await self._build(vm, task, bool(paused))
        return self._spawn(f"VM.start {vm_id}", vm, body)

    def vm_shutdown(self, vm_id: str, timeout: float = 60.0) -> str:
        vm = self._vm(vm_id)

        async def body(task):
            await self._require(vm, ("Running",), "running")
            self._request_shutdown(vm, "poweroff")
            task.set_progress(0.2)
            if await self._await_shutdown(vm, timeout) is None:
                raise XenopsError("VM_FAILED_SHUTDOWN_ACKNOWLEDGMENT", vm_id)
            task.set_progress(0.8)
            await self._destroy(vm)
        return self._spawn(f"VM.shutdown {vm_id}", vm, body)

    def vm_hard_shutdown(self, vm_id: str) -> str:
        vm = self._vm(vm_id)

        async def body(task):
            await self._require(vm, ("Running", "Paused"), "running")
            await self._destroy(vm)
        return self._spawn(f"VM.hard_shutdown {vm_id}", vm, body)

    def vm_reboot(self, vm_id: str, timeout: float = 60.0) -> str:
        vm = self._vm(vm_id)

        async def body(task):
            await self._require(vm, ("Running",), "running")
            self._request_shutdown(vm, "reboot")
            if await self._await_shutdown(vm, timeout) is None:
                raise XenopsError("VM_FAILED_SHUTDOWN_ACKNOWLEDGMENT", vm_id)
            await self._destroy(vm)
            task.set_progress(0.3)
            await self._build(vm, task, False, 0.3, 1.0)
        return self._spawn(f"VM.reboot {vm_id}", vm, body)

    def vm_hard_reboot(self, vm_id: str) -> str:
        vm = self._vm(vm_id)

        async def body(task):
            await self._require(vm, ("Running", "Paused"), "running")
            await self._destroy(vm)
            task.set_progress(0.2)
            await self._build(vm, task, False, 0.2, 1.0)
        return self._spawn(f"VM.hard_reboot {vm_id}", vm, body)

    def vm_pause(self, vm_id: str) -> str:
        vm = self._vm(vm_id)

        async def body(task):
            await self._require(vm, ("Running",), "running")
            await self._xc(self.hv.domain_pause, vm.domid)
        return self._spawn(f"VM.pause {vm_id}", vm, body)

    def vm_unpause(self, vm_id: str) -> str:
        vm = self._vm(vm_id)

        async def body(task):
            await self._require(vm, ("Paused",), "paused")
            await self._xc(self.hv.domain_unpause, vm.domid)
            self._guest_agent(vm)
        return self._spawn(f"VM.unpause {vm_id}", vm, body)

    # -- device hotplug into a running domain (xapi.xenops.devices) --------------------------------
    def _running(self, vm_id: str) -> VM:
        vm = self._vm(vm_id)
        if vm.domid is None:
            raise XenopsError("VM_BAD_POWER_STATE", vm_id, "running", "halted")
        return vm

    @staticmethod
    def _replace(devices: list, key: str, value, new: dict | None) -> list:
        out = [d for d in devices if d.get(key) != value]
        return out + [new] if new is not None else out

    async def vbd_plug(self, vm_id: str, d: dict) -> None:
        vm = self._running(vm_id)
        async with vm.lock:
            vm.config["vbds"] = self._replace(vm.config.get("vbds", []), "device", d["device"], d)
            if self.store is not None and vm.domid is not None:
                devices.plug_vbd(self.store, vm.domid, d, "hvm" if vm.config.get("hvm") else "pv")
        self._update(vm.id)

    async def vbd_unplug(self, vm_id: str, device: str, force: bool = False) -> None:
        vm = self._running(vm_id)
        async with vm.lock:
            vm.config["vbds"] = self._replace(vm.config.get("vbds", []), "device", device, None)
            if self.store is not None and vm.domid is not None:
                devices.unplug(self.store, vm.domid, "vbd", devices.vbd_devid({"device": device}))
        self._update(vm.id)

    async def vbd_set_media(self, vm_id: str, d: dict) -> None:
        """insert (params: the image) or eject (params "") of a CD drive."""
        vm = self._vm(vm_id)
        async with vm.lock:
            old = next((v for v in vm.config.get("vbds", []) if v.get("device") == d["device"]), None)
            new = {**(old or {}), **d}
            vm.config["vbds"] = self._replace(vm.config.get("vbds", []), "device", d["device"], new)
            if self.store is not None and vm.domid is not None:
                devices.set_vbd_media(self.store, vm.domid, new)
        self._update(vm.id)

    async def vif_plug(self, vm_id: str, d: dict) -> None:
        vm = self._running(vm_id)
        async with vm.lock:
            vm.config["vifs"] = self._replace(vm.config.get("vifs", []), "devid", int(d["devid"]), d)
            if self.store is not None and vm.domid is not None:
                devices.plug_vif(self.store, vm.domid, d)
                self._agent_vif(vm, int(d["devid"]), True)
        self._update(vm.id)

    async def vif_move(self, vm_id: str, devid: int, bridge: str) -> None:
        vm = self._running(vm_id)
        async with vm.lock:
            for v in vm.config.get("vifs", []):
                if int(v["devid"]) == int(devid):
                    v["bridge"] = bridge
            if self.store is not None and vm.domid is not None:
                devices.set_vif_bridge(self.store, vm.domid, int(devid), bridge)
        self._update(vm.id)

    async def vif_set_ip_configuration(self, vm_id: str, devid: int, family: int, cfg: dict) -> None:
        """A static IPv4 or IPv6 setting for the guest agent (xapi's VIF.configure_ipv4/6): written
        where xenopsd puts it, xenserver/device/vif/<devid>/static-ip-setting, and kept with the VIF;
        the simulated agent applies it and reports the address."""
        vm = self._running(vm_id)
        devid, family = int(devid), int(family)
        if family not in (4, 6):
            raise XenopsError("INVALID_VALUE", "family", family)
        async with vm.lock:
            vif = next((v for v in vm.config.get("vifs", []) if int(v["devid"]) == devid), None)
            if vif is None:
                raise XenopsError("DEVICE_NOT_ATTACHED", "VIF", devid)
            vif.setdefault("static_ip", {})[str(family)] = dict(cfg)
            if self.store is not None and vm.domid is not None:
                base = f"/local/domain/{vm.domid}/xenserver/device/vif/{devid}/static-ip-setting"
                on = "1" if cfg.get("mode") == "Static" else "0"
                suffix = "" if family == 4 else "6"
                keys = {"mac": cfg.get("mac", vif.get("mac", "")), "error-code": "0", "error-msg": "",
                        f"enabled{suffix}": on}
                if on == "1":
                    keys.update({f"address{suffix}": cfg["address"], f"gateway{suffix}": cfg.get("gateway", "")})
                for k, v in keys.items():
                    self.store.write(f"{base}/{k}", v)
                self._agent_vif(vm, devid, True)
        self._update(vm.id)

    async def vm_set_vcpus(self, vm_id: str, n: int) -> None:
        """vCPU hotplug (xenopsd's VM.set_vcpus): 1..vcpus_max or INVALID_VCPUS [vcpus_max]; each
        cpu/<i>/availability is written online or offline for the guest to follow, which the
        simulated guest does at once (its online count)."""
        vm = self._running(vm_id)
        n, top = int(n), int(vm.config.get("vcpus_max", vm.config.get("vcpus", 1)))
        if not 1 <= n <= top:
            raise XenopsError("INVALID_VCPUS", top)
        async with vm.lock:
            vm.config["vcpus"] = n
            if self.store is not None:
                for i in range(top):
                    self.store.write(f"/local/domain/{vm.domid}/cpu/{i}/availability",
                                     "online" if i < n else "offline")
                await self._xc(self.hv.domain_max_vcpus, vm.domid, n)
        self._update(vm.id)

    async def vm_set_shadow_multiplier(self, vm_id: str, multiplier: float) -> float:
        """The shadow multiplier of a running HVM domain (xenopsd's VM.set_shadow_multiplier): PV
        domains have none (UNIMPLEMENTED); a larger allocation must fit in free memory
        (HOST_NOT_ENOUGH_FREE_MEMORY [needed, free]). Answers the multiplier in effect."""
        vm = self._running(vm_id)
        if not vm.config.get("hvm"):
            raise XenopsError("UNIMPLEMENTED", "shadow_multiplier for PV domains")
        c = vm.config
        static_mib = -(-int(c.get("memory_kib", 256 * KIB)) // KIB)
        vcpus = int(c.get("vcpus_max", c.get("vcpus", 1)))

        def shadow_mib(m: float) -> int:        # memory.ml HVM.shadow_mib
            return int(-(-((static_mib + vcpus * 256) * m) // 256)) if m > 0 else 0
        async with vm.lock:
            need = (shadow_mib(float(multiplier)) - shadow_mib(float(c.get("shadow_multiplier", 1.0)))) * KIB * KIB
            free = (await self._xc(self.host_stat))["free_memory"]
            if need > free:
                raise XenopsError("HOST_NOT_ENOUGH_FREE_MEMORY", need, free)
            c["shadow_multiplier"] = float(multiplier)
        self._update(vm.id)
        return float(multiplier)

    def host_update_guest_agent_features(self, features: dict) -> None:
        """xenopsd's HOST.update_guest_agent_features: /guest_agent_features/<name>/licensed and
        enabled ("1"/"0") and its parameters/<key>, which guest agents read (the pool's guest_agent_config)."""
        if self.store is None:
            return
        for name, f in features.items():
            base = f"/guest_agent_features/{name}"
            self.store.write(f"{base}/licensed", "1" if f.get("licensed", True) else "0")
            self.store.write(f"{base}/enabled", "1" if f.get("enabled") else "0")
            for k, v in (f.get("parameters") or {}).items():
                self.store.write(f"{base}/parameters/{k}", str(v))

    async def vm_request_rdp(self, vm_id: str, enabled: bool) -> None:
        """xenopsd's VM.request_rdp: control/ts asks the guest agent to turn RDP on or off."""
        vm = self._running(vm_id)
        if self.store is not None:
            self.store.write(f"/local/domain/{vm.domid}/control/ts", "1" if enabled else "0")

    async def vif_unplug(self, vm_id: str, devid: int, force: bool = False) -> None:
        vm = self._running(vm_id)
        async with vm.lock:
            vm.config["vifs"] = self._replace(vm.config.get("vifs", []), "devid", int(devid), None)
            if self.store is not None and vm.domid is not None:
                devices.unplug(self.store, vm.domid, "vif", int(devid))
                self._agent_vif(vm, int(devid), False)
        self._update(vm.id)

    # -- suspend and resume: the domain's memory image (xapi.xenops.image) in a disk or a file ----
    async def _image_info(self, vm: VM, with_devices: bool) -> image.ImageInfo:
        """What a memory image records of the domain: for a migration its devices go along too."""
        c = vm.config
        info = await self._xc(self._info, vm) or {}
        state = {"name": c.get("name", vm.id), "hvm": bool(c.get("hvm")), "paused": bool(info.get("paused")),
                 "cpu_time": int(info.get("cpu_time", 0)), "start_time": vm.start_time,
                 "guest_agent": self._guest_agent_data(vm.domid)}
        if with_devices:
            state.update(vbds=c.get("vbds", []), vifs=c.get("vifs", []))
        return image.ImageInfo(vm.id, int(c.get("memory_kib", 256 * KIB)) * KIB, int(c.get("vcpus", 1)), state)

    def vm_save(self, vm_id: str, disk) -> str:
        """Suspends the domain into `disk` (attach information or a file path); the domain is
        destroyed once the image is complete. Cancelled or failed, the domain carries on."""
        vm = self._vm(vm_id)

        async def body(task):
            was_paused = await self._require(vm, ("Running", "Paused"), "running") == "Paused"
            domid = vm.domid
            if not was_paused:
                await self._xc(self.hv.domain_pause, domid)
            try:
                info = await self._image_info(vm, False)
                header, payload = await _blocking(image.encode, info)
                f = await _blocking(imagefile.DiskFile, disk, True)
                try:
                    await _blocking(f.write, header)
                    chunks = range(0, len(payload), _IMAGE_CHUNK)
                    for n, off in enumerate(chunks):
                        if self.build_delay > 0:
                            await asyncio.sleep(self.build_delay / len(chunks))
                        await _blocking(f.write, payload[off:off + _IMAGE_CHUNK])
                        task.set_progress(0.95 * (n + 1) / len(chunks))
                finally:
                    await _blocking(f.close)
            except BaseException as e:
                if not was_paused and vm.domid == domid:
                    await self._hv_quiet(self.hv.domain_unpause, domid)
                if isinstance(e, OSError):
                    raise XenopsError("INTERNAL_ERROR", f"writing the memory image of VM {vm_id}: {e}") from None
                raise
            await self._hv_quiet(self.hv.domain_shutdown, domid, "suspend")
            await self._destroy(vm)
            return {"size": info.size}
        return self._spawn(f"VM.save {vm_id}", vm, body)

    def vm_restore(self, vm_id: str, disk, paused: bool = False) -> str:
        """Builds the domain from the memory image in `disk`; a damaged image fails the task."""
        vm = self._vm(vm_id)

        async def body(task):
            await self._require(vm, ("Halted",), "halted")
            try:
                f = await _blocking(imagefile.DiskFile, disk, False)
                try:
                    info = image.parse_header(await _blocking(f.read, image.HEADER_SIZE))
                    check = image.Verifier(info)
                    while check.remaining > 0:
                        data = await _blocking(f.read, min(_IMAGE_CHUNK, check.remaining))
                        if not data:
                            break
                        check.update(data)
                        task.set_progress(0.5 * check.seen / max(1, info.length))
                    check.finish()
                finally:
                    await _blocking(f.close)
            except image.ImageError as e:
                raise XenopsError("INTERNAL_ERROR", f"memory image of VM {vm_id}: {e}") from None
            except OSError as e:
                raise XenopsError("INTERNAL_ERROR", f"reading the memory image of VM {vm_id}: {e}") from None
            if info.vm_uuid != vm.id:
                raise XenopsError("INTERNAL_ERROR", f"memory image of VM {info.vm_uuid} given to VM {vm.id}")
            await self._build(vm, task, bool(paused), 0.5, 1.0)
            agent = info.state.get("guest_agent") or {}
            if self.store is not None and agent:        # the guest's agent data comes back with it
                with contextlib.suppress(Exception):
                    for k, v in agent.items():
                        self.store.write(f"/local/domain/{vm.domid}/{k}", v)
        return self._spawn(f"VM.restore {vm_id}", vm, body)

    # -- live migration: VM.migrate_send on the source streams the memory image (xapi.xenops.image)
    # to the destination's /migrate handler, which hands it to VM.receive there ------------------
    def vm_migrate_send(self, vm_id: str, url: str, options: dict | None = None) -> str:
        """options: "headers" (sent with the PUT: the pool secret), "fingerprint" (a TLS pin)."""
        from xapi.xenops import migrate     # (it imports XenopsError from here)
        vm = self._vm(vm_id)
        options = dict(options or {})

        async def body(task):
            was_paused = await self._require(vm, ("Running", "Paused"), "running") == "Paused"
            steps = 10
            for i in range(steps):          # pre-copy rounds while the guest runs (migrate_delay)
                if self.migrate_delay > 0:
                    await asyncio.sleep(self.migrate_delay / steps)
                task.set_progress(0.5 * (i + 1) / steps)
            data = image.dumps(await self._image_info(vm, True))
            if not was_paused:              # the last round: the guest stops while its pages go over
                await self._xc(self.hv.domain_pause, vm.domid)
            try:
                await migrate.send(url, data, lambda p: task.set_progress(0.5 + 0.45 * p),
                                   options.get("headers"), options.get("fingerprint"))
            except BaseException:
                if not was_paused and vm.domid is not None:     # the VM carries on here
                    await self._hv_quiet(self.hv.domain_unpause, vm.domid)
                raise
            await self._destroy(vm)             # the destination acknowledged: its domain runs
        return self._spawn(f"VM.migrate_send {vm_id}", vm, body)

    def vm_migrate_local(self, vm_id: str) -> str:
        """Localhost migration: a new domain built here from the VM's checked image, then the old one
        destroyed (memory for both is needed meanwhile, as in xenopsd)."""
        vm = self._vm(vm_id)

        async def body(task):
            was_paused = await self._require(vm, ("Running", "Paused"), "running") == "Paused"
            info = image.loads(image.dumps(await self._image_info(vm, True)))    # checked as sent
            old = vm.domid
            if not was_paused:
                await self._xc(self.hv.domain_pause, old)
            try:
                await self._build(vm, task, True)
            except BaseException:
                vm.domid = old                  # the old domain carries on
                if not was_paused:
                    await self._hv_quiet(self.hv.domain_unpause, old)
                raise
            new, vm.domid = vm.domid, old
            await self._destroy(vm)
            vm.domid = new
            vm.start_time = float(info.state.get("start_time") or vm.start_time)
            if self.store is not None:
                with contextlib.suppress(Exception):
                    for k, v in (info.state.get("guest_agent") or {}).items():
                        self.store.write(f"/local/domain/{new}/{k}", v)
            if not was_paused:
                await self._xc(self.hv.domain_unpause, new)
        return self._spawn(f"VM.migrate_local {vm_id}", vm, body)

    def vm_receive(self, vm_id: str, data: str) -> str:
        """Builds the VM's domain from a migration image (base64); VM.add gave its configuration."""
        vm = self._vm(vm_id)
        raw = base64.b64decode(data)

        async def body(task):
            await self._require(vm, ("Halted",), "halted")
            try:
                info = image.loads(raw)
            except image.ImageError as e:
                raise XenopsError("INTERNAL_ERROR", f"memory image rejected: {e}") from None
            if info.vm_uuid != vm.id:
                raise XenopsError("INTERNAL_ERROR", f"memory image of VM {info.vm_uuid} received for {vm.id}")
            paused = bool(info.state.get("paused"))
            for key in ("vbds", "vifs"):        # devices not given by VM.add come with the image
                if info.state.get(key) and not vm.config.get(key):
                    vm.config[key] = info.state[key]
            await self._build(vm, task, True)
            vm.start_time = float(info.state.get("start_time") or vm.start_time)
            agent = info.state.get("guest_agent") or {}
            if self.store is not None and agent:
                with contextlib.suppress(Exception):
                    for k, v in agent.items():
                        self.store.write(f"/local/domain/{vm.domid}/{k}", v)
            if not paused:
                await self._xc(self.hv.domain_unpause, vm.domid)
                if not agent:
                    self._guest_agent(vm)
        return self._spawn(f"VM.receive {vm_id}", vm, body, pooled=False)

    # -- domains that change by themselves -------------------------------------------------------
    async def debug_trigger(self, vm_id: str, reason: str) -> None:
        """Test hook: the guest shuts itself down ("poweroff", "reboot") or crashes ("crash")."""
        vm = self._vm(vm_id)
        if vm.domid is None:
            raise XenopsError("VM_BAD_POWER_STATE", vm_id, "running", "halted")
        await self._xc(self.hv.domain_shutdown, vm.domid, reason)

    def debug_set(self, key: str, value) -> None:
        if key not in ("build_delay", "shutdown_delay", "poll_interval", "guest_agent_delay", "migrate_delay"):
            raise XenopsError("INVALID_VALUE", key, value)
        setattr(self, key, float(value))

    async def _watch_domains(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            if not any(vm.domid is not None and not vm.busy for vm in self.vms.values()):
                continue
            try:       # one call for all the domains, not one per VM
                infos = {i["domid"]: i for i in await self._xc(self.hv.domain_list)}
            except Exception:  # noqa: BLE001 - try again next time
                log.exception("xenopsd: listing the domains failed")
                continue
            for vm in list(self.vms.values()):
                if vm.domid is None or vm.busy:
                    continue
                info = infos.get(vm.domid)
                if info is None:                    # gone behind our back
                    vm.domid = None
                    self._update(vm.id)
                    continue
                if info.get("shutdown") and vm.preserved != vm.domid:
                    r = info.get("shutdown_reason", 0)
                    reason = _REASONS.get(r, str(r)) if isinstance(r, int) else str(r)
                    self._on_guest_shutdown(vm, reason)

    def _on_guest_shutdown(self, vm: VM, reason: str) -> None:
        key = {"poweroff": "on_shutdown", "reboot": "on_reboot"}.get(reason, "on_crash")
        action = vm.config.get(key, "restart" if reason == "reboot" else "destroy")
        log.info("xenopsd: VM %s shut down (%s): %s", vm.id, reason, action)

        async def body(task):
            if action == "preserve":        # the domain stays for inspection, paused (Vm.Pause)
                vm.preserved = vm.domid
                await self._hv_quiet(self.hv.domain_pause, vm.domid)
                return
            await self._destroy(vm)
            if action in ("restart", "coredump_and_restart", "rename_restart"):
                await self._build(vm, task, False, 0.2, 1.0)
        self._spawn(f"VM.{reason} {vm.id}", vm, body)


_METHODS = {
    "VM.add": Xenopsd.vm_add,
    "VM.remove": Xenopsd.vm_remove,
    "VM.stat": Xenopsd.vm_stat,
    "VM.start": Xenopsd.vm_start,
    "VM.shutdown": Xenopsd.vm_shutdown,
    "VM.hard_shutdown": Xenopsd.vm_hard_shutdown,
    "VM.reboot": Xenopsd.vm_reboot,
    "VM.hard_reboot": Xenopsd.vm_hard_reboot,
    "VM.pause": Xenopsd.vm_pause,
    "VM.unpause": Xenopsd.vm_unpause,
    "VM.save": Xenopsd.vm_save,
    "VM.restore": Xenopsd.vm_restore,
    "VM.migrate_send": Xenopsd.vm_migrate_send,
    "VM.receive": Xenopsd.vm_receive,
    "VM.migrate_local": Xenopsd.vm_migrate_local,
    "HOST.stat": Xenopsd.host_stat_async,
    "HOST.stats": Xenopsd.host_stats_async,
    "TASK.stat": Xenopsd.task_stat,
    "TASK.wait": Xenopsd.task_wait,
    "TASK.cancel": Xenopsd.task_cancel,
    "TASK.destroy": Xenopsd.task_destroy,
    "UPDATES.get": Xenopsd.updates_get,
    "DEBUG.trigger": Xenopsd.debug_trigger,
    "DEBUG.set": Xenopsd.debug_set,
    "VBD.plug": Xenopsd.vbd_plug,
    "VBD.unplug": Xenopsd.vbd_unplug,
    "VBD.set_media": Xenopsd.vbd_set_media,
    "VIF.plug": Xenopsd.vif_plug,
    "VIF.unplug": Xenopsd.vif_unplug,
    "VIF.move": Xenopsd.vif_move,
    "VIF.set_ip_configuration": Xenopsd.vif_set_ip_configuration,
    "VM.set_vcpus": Xenopsd.vm_set_vcpus,
    "VM.set_shadow_multiplier": Xenopsd.vm_set_shadow_multiplier,
    "VM.request_rdp": Xenopsd.vm_request_rdp,
    "HOST.update_guest_agent_features": Xenopsd.host_update_guest_agent_features,
}
