"""Tasks: the record clients watch for `Async.*` calls and long operations.

An Async call creates a pending task, runs the action in the background and settles the task:
success with progress 1 and the result as XML-RPC value text (as xapi stores it, even for JSON
clients), failure with error_info, or cancelled.

Collection follows xapi's timeout_tasks (db_gc_util.ml), whatever made or settled the task: a task
finished more than 65 minutes ago goes; a pending one created more than 24 hours ago goes once a
sweep finds its progress unchanged since the previous sweep (hung); beyond 200 young tasks, the
oldest finished ones go first.
"""
from __future__ import annotations

import asyncio
import calendar
import logging
import time

from xapi import rpc
from xapi.datamodel.errors import XapiError
from xapi.datamodel.types import datetime_now
from xapi.db.schema import insert

log = logging.getLogger("xapi.tasks")

_PREFIX = b'<?xml version="1.0"?><params><param>'
_SUFFIX = b"</param></params>"


def value_text(result) -> str:
    """A result as the text of one XML-RPC <value> element, as xapi keeps it in task.result."""
    doc = rpc.dumps((result,), ints_as_strings=True)
    assert doc.startswith(_PREFIX) and doc.endswith(_SUFFIX)
    return doc[len(_PREFIX):-len(_SUFFIX)].decode()


# xapi's Xapi_globs: completed_task_timeout, pending_task_timeout, max_tasks
COMPLETED_TASK_TIMEOUT = 3900.0
PENDING_TASK_TIMEOUT = 86400.0
MAX_TASKS = 200
_FINISHED = ("success", "failure", "cancelled")


def _epoch(value) -> float:
    """A task's created/finished DateTime as seconds since the epoch (0 when unreadable)."""
    text = getattr(value, "value", value)
    for fmt in ("%Y%m%dT%H:%M:%SZ", "%Y%m%dT%H:%M:%S"):
        try:
            return float(calendar.timegm(time.strptime(text, fmt)))
        except (TypeError, ValueError):
            continue
    return 0.0


class Tasks:
    def __init__(self, app, keep_finished: float = COMPLETED_TASK_TIMEOUT,
                 keep_pending: float = PENDING_TASK_TIMEOUT, max_tasks: int = MAX_TASKS) -> None:
        self.app = app
        self.keep_finished = keep_finished
        self.keep_pending = keep_pending
        self.max_tasks = max_tasks
        self.running: dict[str, asyncio.Task] = {}
        self.destroy_when_done: set[str] = set()
        self._probation: dict[str, float] = {}      # old pending task -> its progress at the last sweep

    @property
    def table(self):
        return self.app.db.table("task")

    def create(self, label: str, description: str = "", cancellable: bool = True) -> str:
        return insert(self.app.db, "task", name_label=label, name_description=description,
                      created=datetime_now(), status="pending", progress=0.0,
                      resident_on=self.app.host_ref, allowed_operations=["cancel"] if cancellable else [])

    def spawn(self, label: str, handler, ctx, session, args) -> str:
        ref = self.create(label)

        async def run():
            try:
                result = handler(ctx, session, *args)
                if asyncio.iscoroutine(result):
                    result = await result
                self._settle(ref, "success", result=value_text(result))
            except asyncio.CancelledError:
                self._settle(ref, "cancelled", error=["TASK_CANCELLED", ref])
            except XapiError as e:
                status = "cancelled" if e.code == "TASK_CANCELLED" else "failure"
                self._settle(ref, status, error=e.description)
            except Exception as e:  # noqa: BLE001 - any failure settles the task
                log.exception("task %s failed", label)
                self._settle(ref, "failure", error=["INTERNAL_ERROR", f"{type(e).__name__}: {e}"])
            finally:
                self.running.pop(ref, None)
                self.app.hub.poke()

        self.running[ref] = asyncio.get_running_loop().create_task(run())
        return ref

    def _settle(self, ref: str, status: str, result: str = "", error=()) -> None:
        if ref not in self.table:
            return
        values = {"status": status, "finished": datetime_now(), "allowed_operations": [],
                  "current_operations": {}, "error_info": list(error), "result": result}
        if status == "success":
            values["progress"] = 1.0
        self.table.update(ref, values)
        if ref in self.destroy_when_done:
            self.destroy(ref)

    def cancel(self, ref: str, session_ref: str) -> None:
        status = self.table.get_field(ref, "status")
        if status != "pending":
            raise XapiError("OPERATION_NOT_ALLOWED", f"task is {status}")
        self.table.update(ref, {"status": "cancelling", "current_operations": {session_ref: "cancel"}})
        running = self.running.get(ref)
        if running is not None:
            running.cancel()

    def destroy(self, ref: str) -> None:
        if self.table.get_field(ref, "status") in ("pending", "cancelling") and ref in self.running:
            self.destroy_when_done.add(ref)         # collected once it settles, as xapi does
            return
        self.destroy_when_done.discard(ref)
        self.table.remove(ref)

    def sweep(self, now: float | None = None) -> list[str]:
        """One collection pass (xapi's timeout_tasks); returns the tasks removed."""
        now = time.time() if now is None else now
        table = self.table
        completed_old, pending_hung, young = [], [], []
        probation = {}
        for ref, rec in table.all_records().items():
            if rec["status"] in _FINISHED:
                finished = _epoch(rec["finished"])
                (completed_old if finished < now - self.keep_finished else young).append((finished, ref))
            elif _epoch(rec["created"]) < now - self.keep_pending:
                before = self._probation.get(ref)
                progress = rec["progress"]
                probation[ref] = progress
                if before is not None and not progress - before > 0:
                    pending_hung.append(ref)
                else:
                    young.append((None, ref))
            else:
                young.append((None, ref))
        self._probation = {r: p for r, p in probation.items() if r not in pending_hung}
        doomed = [ref for _, ref in completed_old] + pending_hung
        overflow = len(young) - self.max_tasks
        if overflow > 0:           # too many: the oldest finished ones go first, never pending ones
            finished = sorted(t for t in young if t[0] is not None)
            doomed += [ref for _, ref in finished[:overflow]]
        for ref in doomed:
            if ref in pending_hung:
                log.warning("collected old task still pending: %s", ref)
                running = self.running.pop(ref, None)
                if running is not None:
                    running.cancel()
            if ref in table:
                self.destroy_when_done.discard(ref)
                table.remove(ref)
        return doomed

    async def collect(self, period: float = 30.0) -> None:
        """Sweeps every `period` seconds."""
        while True:
            await asyncio.sleep(period)
            try:
                if self.sweep():
                    self.app.hub.poke()
            except Exception:  # noqa: BLE001 - the collector must outlive a bad row
                log.exception("task collection failed")
