"""Tasks: the record clients watch for `Async.*` calls and long operations.

An Async call creates a pending task, runs the action in the background and settles the task:
success with progress 1 and the result as XML-RPC value text (as xapi stores it, even for JSON
clients), failure with error_info, or cancelled. Finished tasks are collected after a while.
"""
from __future__ import annotations

import asyncio
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


class Tasks:
    def __init__(self, app, keep_finished: float = 3600.0) -> None:
        self.app = app
        self.keep_finished = keep_finished
        self.running: dict[str, asyncio.Task] = {}
        self.finished_at: dict[str, float] = {}
        self.destroy_when_done: set[str] = set()

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
        self.finished_at[ref] = time.monotonic()
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
        self.finished_at.pop(ref, None)
        self.table.remove(ref)

    async def collect(self, period: float = 60.0) -> None:
        """Removes tasks that finished more than `keep_finished` seconds ago."""
        while True:
            await asyncio.sleep(period)
            cutoff = time.monotonic() - self.keep_finished
            for ref, at in list(self.finished_at.items()):
                if at < cutoff and ref in self.table:
                    self.destroy(ref)
                elif ref not in self.table:
                    self.finished_at.pop(ref, None)
            self.app.hub.poke()
