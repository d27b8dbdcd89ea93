"""The daemon's side of the storage garbage collector (``xapi.sm.gc``): when it runs, under which
lock, and what it is told.

* **The SR lock.** ``sr_lock(storage, sr)`` is the per-SR lock (``storage.lock("sr/<ref>")``, the
  one PBD plug/unplug and SR.destroy hold). The operations that change an SR's VHD tree hold it too
  (SR.scan, VDI.create/destroy/snapshot/clone/resize/introduce/update), so they never run while the
  collector changes files. On taking it, an unfinished journalled step of the SR (a collector
  killed part way, the daemon stopped mid-step) is first rolled back or forward, so nothing else
  ever sees a half-done step.
* **When.** ``kick(sr)`` after SR.scan, VDI.destroy, snapshot and clone, debounced
  (``XAPI_GC_DELAY`` seconds, default 10; SM waits five minutes); a kick during a run makes it run
  again once done. At start-up, SRs with an unfinished step are collected at once. Only on the SR
  master (the coordinator for shared SRs, the PBD's host for local ones), only ext and nfs SRs
  that are plugged here, and not when SR other-config ``gc=false`` (SM's switch).
* **How.** One step at a time, each in a subprocess (``python -m xapi.sm.gc --steps 1``, at most one
  at a time for the daemon, killed on timeout or shutdown: the journal makes that safe), the SR
  lock held for the step and released between steps so waiting operations go first. The
  collector is told the locations of managed VDIs (never removed), of VDIs in use (their chains
  are not coalesced), and which leaves it may leaf-coalesce: only VDIs the access layer does not
  hold, with no attached VBD nor ``host_*`` activation, not reset-on-boot nor caching, and not
  ``other-config:leaf-coalesce=false`` (VDI or SR) nor SR ``coalesce=false``; the access layer's
  lock of each such VDI is held while the step runs, so it cannot be attached meanwhile.
* **After a step** that changed files, the driver's ``sr_scan`` puts the database right: records of
  removed files are forgotten, the leaf keeps its record (its location names the merged file),
  ``vhd-parent``, the VDIs' sizes and the SR's ``physical_utilisation`` are written through the
  same internal calls the drivers use.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys

from xapi.sm import gc as engine
from xapi.sm.exec import PACKAGE_ROOT

log = logging.getLogger("xapi.sm.gc")

FILE_SR_TYPES = ("ext", "nfs")
DEFAULT_DELAY = 10.0
STEP_TIMEOUT = 3600.0
MAX_STEPS = 200


def _delay() -> float:
    try:
        return max(0.0, float(os.environ.get("XAPI_GC_DELAY", DEFAULT_DELAY)))
    except ValueError:
        return DEFAULT_DELAY


def sr_path(storage, sr: str) -> str | None:
    """The folder of a file-based SR plugged here, or None."""
    db = storage.db
    srs = db.table("SR")
    if sr not in srs:
        return None
    rec = srs.get(sr)
    if rec["type"] not in FILE_SR_TYPES:
        return None
    pbd = storage.my_pbd(sr)
    if pbd is None:
        return None
    dc = db.table("PBD").get_field(pbd, "device_config")
    return engine.sr_folder(rec["type"], dc, rec["uuid"], storage.app.config.data_dir)


@contextlib.asynccontextmanager
async def sr_lock(storage, sr: str):
    """The SR lock, with any unfinished collector step of the SR finished first."""
    async with storage.lock(f"sr/{sr}"):
        collector = getattr(storage, "gc", None)
        if collector is not None:
            await collector.recover_if_needed(sr)
        yield


def kick(app, sr: str) -> None:
    collector = getattr(getattr(app, "storage", None), "gc", None)
    if collector is not None:
        collector.kick(sr)


class GarbageCollector:
    def __init__(self, storage) -> None:
        self.storage = storage
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._running: dict[str, asyncio.Task] = {}
        self._again: set[str] = set()
        self._sem: asyncio.Semaphore | None = None
        self._procs: set = set()
        self._others: set[asyncio.Task] = set()
        self.closed = False
        self.runs = 0                       # finished collections (for tests and logs)
        self.last: dict[str, dict] = {}     # sr -> the last collection's summary

    @property
    def app(self):
        return self.storage.app

    # -- scheduling ------------------------------------------------------------------------------
    def kick(self, sr: str, delay: float | None = None) -> None:
        if self.closed:
            return
        if sr in self._running:
            self._again.add(sr)
            return
        old = self._timers.pop(sr, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[sr] = loop.call_later(_delay() if delay is None else delay, self._start, sr)

    def kick_pending(self) -> None:
        """At start-up: collects at once the SRs an unfinished step was left in."""
        if not self.closed:
            task = asyncio.get_running_loop().create_task(self._kick_pending())
            self._others.add(task)
            task.add_done_callback(self._others.discard)

    async def _kick_pending(self) -> None:
        for sr in list(self.storage.db.table("SR").refs()):
            path = sr_path(self.storage, sr)
            if path and await _pending(path):
                log.info("SR %s has an unfinished garbage-collection step", sr)
                self.kick(sr, 0)

    def _start(self, sr: str) -> None:
        self._timers.pop(sr, None)
        if self.closed or sr in self._running:
            return
        task = asyncio.get_running_loop().create_task(self._collect_logged(sr))
        self._running[sr] = task
        task.add_done_callback(lambda _t, sr=sr: self._done(sr))

    def _done(self, sr: str) -> None:
        self._running.pop(sr, None)
        self.runs += 1
        if sr in self._again and not self.closed:
            self._again.discard(sr)
            self.kick(sr)

    async def wait_idle(self) -> None:
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def close(self) -> None:
        """No more runs; a running step is killed (its journal is finished at the next start)."""
        self.closed = True
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()
        for proc in list(self._procs):
            _kill(proc)
        tasks = [*self._running.values(), *self._others]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- what the collector is told --------------------------------------------------------------
    def _context(self, sr: str) -> dict | None:
        """Everything one step needs, or None when this host must not collect the SR now."""
        storage, db = self.storage, self.storage.db
        srs = db.table("SR")
        if sr not in srs:
            return None
        rec = srs.get(sr)
        pbd = storage.my_pbd(sr)
        if pbd is None or not db.table("PBD").get_field(pbd, "currently_attached") \
                or not storage.is_sr_master(sr):
            return None
        oc = rec["other_config"]
        if oc.get("gc") == "false":
            return None
        path = sr_path(storage, sr)
        if path is None:
            return None
        vdis, vbds = db.table("VDI"), db.table("VBD")
        protect, busy, eligible = [], [], {}
        for ref in list(vdis.find("SR", sr)):
            v = vdis.get(ref)
            if not v["managed"]:
                continue
            protect.append(v["location"])
            in_use = storage.access.in_use(v["uuid"]) \
                or any(k.startswith("host_") for k in v["sm_config"]) \
                or any(vbds.get_field(b, "currently_attached") or vbds.get_field(b, "reserved")
                       for b in v["VBDs"] if b in vbds)
            if in_use:
                busy.append(v["location"])
            elif v["on_boot"] != "reset" and not v["allow_caching"] \
                    and v["other_config"].get("leaf-coalesce") != "false":
                eligible[v["location"]] = v["uuid"]
        coalesce = oc.get("coalesce") != "false"
        leaf = coalesce and oc.get("leaf-coalesce") != "false"
        return {"path": path, "protect": protect, "busy": busy, "eligible": eligible, "coalesce": coalesce,
                "leaf": leaf}

    # -- a collection ----------------------------------------------------------------------------
    async def _collect_logged(self, sr: str) -> None:
        try:
            await self.collect(sr)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a background task: logged, retried at the next kick
            log.exception("garbage collection of SR %s", sr)

    async def collect(self, sr: str) -> dict:
        """Steps until nothing is left to do; returns a summary."""
        storage = self.storage
        summary: dict = {"steps": [], "reclaimed": 0}
        skip: set[str] = set()
        tried: set[str] = set()
        allowed: list[str] = []
        for _ in range(MAX_STEPS):
            if self.closed:
                break
            async with sr_lock(storage, sr):
                ctx = self._context(sr)
                if ctx is None or not await asyncio.to_thread(os.path.isdir, ctx["path"]):
                    break
                held = await self._hold(ctx, allowed)
                try:
                    report = await self._run(ctx, skip=skip, leaves=[loc for loc, _ in held])
                finally:
                    for _, lock in held:
                        lock.release()
                if report is not None and report.get("changed"):
                    await self._rescan(sr)
            if report is None:
                break
            skip.update(report.get("failed", {}))
            steps = report.get("steps", [])
            if steps:
                summary["steps"].extend(steps)
                summary["reclaimed"] += report.get("reclaimed", 0)
                allowed = []
                continue
            new = [loc for loc in report.get("leaf_candidates", [])
                   if loc in ctx["eligible"] and loc not in tried]
            if not new:
                break
            tried.update(new)
            allowed = new
        self.last[sr] = summary
        if summary["steps"]:
            log.info("garbage collection of SR %s: %d steps, %d bytes reclaimed", sr, len(summary["steps"]),
                     summary["reclaimed"])
        return summary

    async def _hold(self, ctx: dict, locations: list[str]) -> list[tuple[str, asyncio.Lock]]:
        """The access layer's locks of the leaves to leaf-coalesce, when free and not in use."""
        access = self.storage.access
        lock_of = getattr(access, "_lock", None)
        held = []
        if lock_of is None:
            return held
        for loc in locations:
            uuid = ctx["eligible"].get(loc)
            if uuid is None:
                continue
            lock = lock_of(uuid)
            if lock.locked():
                continue
            await lock.acquire()
            if access.in_use(uuid):
                lock.release()
                continue
            held.append((loc, lock))
        return held

    async def _rescan(self, sr: str) -> None:
        from xapi.sm import rows
        try:
            await self.storage.sr_command(sr, "sr_scan")
        except Exception as e:  # noqa: BLE001 - the files are right; the records follow at the next scan
            log.warning("scan of SR %s after garbage collection failed: %s", sr, e)
            return
        rows.refresh_sr_and_vdis(self.app, sr)
        hub = getattr(self.app, "hub", None)
        if hub is not None:
            hub.poke()

    async def recover_if_needed(self, sr: str) -> None:
        """Finishes an unfinished step of the SR (the caller holds the SR lock)."""
        path = sr_path(self.storage, sr)
        if not path or not await _pending(path):
            return
        log.warning("SR %s: finishing an interrupted garbage-collection step", sr)
        report = await self._exec(path, ["--recover-only"])
        if report is None or report.get("pending"):
            log.error("SR %s: an interrupted garbage-collection step could not be finished", sr)
        elif report.get("changed") and not self.closed:
            await self._rescan(sr)

    async def _run(self, ctx: dict, *, skip, leaves) -> dict | None:
        args = ["--steps", "1"]
        for flag, values in (("--protect", ctx["protect"]), ("--busy", ctx["busy"]), ("--leaf", leaves),
                             ("--skip", sorted(skip))):
            for v in values:
                args += [flag, v]
        if not ctx["coalesce"]:
            args.append("--no-coalesce")
        if not ctx["leaf"]:
            args.append("--no-leaf-coalesce")
        return await self._exec(ctx["path"], args)

    async def _exec(self, path: str, args: list[str]) -> dict | None:
        if self._sem is None:
            self._sem = asyncio.Semaphore(1)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)
        argv = [sys.executable, "-m", "xapi.sm.gc", "--sr-path", path, *args]
        async with self._sem:
            if self.closed:
                return None
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True)
            self._procs.add(proc)
            try:
                out, err = await asyncio.wait_for(proc.communicate(), STEP_TIMEOUT)
            except asyncio.TimeoutError:
                _kill(proc)
                await proc.wait()
                log.error("garbage collection of %s timed out after %gs", path, STEP_TIMEOUT)
                return None
            except BaseException:
                _kill(proc)
                raise
            finally:
                self._procs.discard(proc)
        for line in err.decode("utf-8", "replace").splitlines():
            log.info("%s", line)
        if proc.returncode:
            log.error("garbage collection of %s exited with %s", path, proc.returncode)
            return None
        try:
            return json.loads(out.decode("utf-8", "replace").strip().splitlines()[-1])
        except (ValueError, IndexError):
            log.error("garbage collection of %s answered %r", path, out[-200:])
            return None


async def _pending(path: str) -> bool:
    """Whether the SR folder holds an unfinished step (in a thread: the folder may be a stuck mount)."""
    return await asyncio.to_thread(engine.pending, path)


def _kill(proc) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
