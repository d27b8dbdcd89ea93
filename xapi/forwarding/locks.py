"""The current_operations lock, as message_forwarding.ml's with_vm_operation / with_host_operation:
check that the operation is allowed (the class's own rules raise xapi's error:
OTHER_OPERATION_IN_PROGRESS [class, ref, op], VM_BAD_POWER_STATE...), add {task ref: op} to the
object's current_operations, refresh its allowed_operations, run the body, then remove the entry
and refresh again, whether the body returned, failed or was cancelled.

The key is the task ref of the call, as xapi's Context.get_task_id; a call that runs outside a
task gets a fresh ref of its own so that two such calls never share an entry. `hold`/`release` are
the two halves for a hold that outlives one block (an XVA import; with_sr_andor_vdi in
xapi.sm.operations, whose callers wait for `wait_released` as xapi's retry_with_global_lock does).
"""
from __future__ import annotations

import asyncio
import contextlib
import uuid as uuidlib
from typing import Any, Callable

from xapi.datamodel.errors import XapiError


class Verdicts(dict):
    """A class's valid_operations table (xapi's *_helpers.valid_operations): op -> the error xapi
    raises for it (a list), or None where it is allowed.  The first rule that blocks an op wins."""

    def __init__(self, ops) -> None:
        super().__init__(dict.fromkeys(ops))

    def block(self, err: list, ops) -> None:
        for op in ops:
            if self[op] is None:
                self[op] = err

    def allowed(self) -> list:
        return [op for op, err in self.items() if err is None]

    def check(self, op: str) -> None:
        err = self[op]
        if err is not None:
            raise XapiError(*err)


def store_allowed(db, cls: str, ref: str, allowed: list) -> None:
    """allowed_operations, written only when the set changed (each write is an event)."""
    table = db.table(cls)
    if sorted(table.get_field(ref, "allowed_operations") or []) != sorted(allowed):
        table.set_field(ref, "allowed_operations", allowed)


def current_task(app) -> str | None:
    """The ref of the task this coroutine runs as (an Async call, an HTTP handler's task), or None."""
    me = asyncio.current_task()
    for ref, t in list(app.tasks.running.items()):
        if t is me:
            return ref
    return None


def hold(app, cls: str, ref: str, op: str, *, check: Callable[[Any, str, str], Any] | None,
         refresh: Callable[[Any, str], None] | None = None, key: str | None = None) -> tuple[str, Any]:
    """The first half of `operation`, for a hold that spans more than one block (an import: from
    its VM's creation to complete/undo): (the entry's key, what check returned). `release` ends it."""
    db = app.db
    checked = check(db, ref, op) if check is not None else None
    key = key or current_task(app) or f"OpaqueRef:{uuidlib.uuid4()}"
    table = db.table(cls)
    table.set_field(ref, "current_operations", {**(table.get_field(ref, "current_operations") or {}), key: op})
    if refresh is not None:
        refresh(db, ref)
    return key, checked


def release(app, cls: str, ref: str, key: str, refresh: Callable[[Any, str], None] | None = None) -> None:
    """Removes `hold`'s entry (if a reset did not clear it already, or the ref went), refreshes,
    and wakes whoever waits for that object (`wait_released`)."""
    db = app.db
    table = db.table(cls)
    if ref in table:
        ops = dict(table.get_field(ref, "current_operations") or {})
        if ops.pop(key, None) is not None:      # a reset (power_state_reset...) may have cleared it
            table.set_field(ref, "current_operations", ops)
    if refresh is not None:
        refresh(db, ref)
    waiters = _waiters.pop((id(db), cls, ref), None)
    if waiters is not None:
        waiters.set()


# Helpers.Early_wakeup: a caller refused with OTHER_OPERATION_IN_PROGRESS waits for the object's
# next release (or its backoff delay) before it checks again
_waiters: dict[tuple, asyncio.Event] = {}


async def wait_released(app, cls: str, ref: str, timeout: float) -> None:
    """Until an operation on `cls` `ref` ends, or `timeout` seconds."""
    key = (id(app.db), cls, ref)
    event = _waiters.get(key)
    if event is None:
        event = _waiters[key] = asyncio.Event()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


@contextlib.asynccontextmanager
async def operation(app, cls: str, ref: str, op: str, *,
                    check: Callable[[Any, str, str], Any] | None,
                    refresh: Callable[[Any, str], None] | None = None, key: str | None = None):
    """Holds `op` in `cls` `ref`'s current_operations for the body of the `async with`.

    `check(db, ref, op)` raises the XapiError that refuses the operation (HANDLE_INVALID for a ref
    that is not there); what it returns is what the `async with` gives.  `refresh(db, ref)` recomputes
    allowed_operations (it must cope with a ref the body destroyed).  `key` defaults to the task ref.
    """
    key, checked = hold(app, cls, ref, op, check=check, refresh=refresh, key=key)
    try:
        yield checked
    finally:
        release(app, cls, ref, key, refresh)
