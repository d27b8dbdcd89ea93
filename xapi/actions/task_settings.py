"""task.set_status, set_progress, set_result, set_error_info: how a client that runs the work itself
(task.create) reports on it. As xapi (xapi_task.ml, TaskHelper.assert_op_valid), the caller must own the
task (its session has the same authenticated user as the one that made it) or hold
`task.destroy/any`, else RBAC_PERMISSION_DENIED; the values are stored as given.

xapi keeps the creating session in the task's hidden `session` field; here `remember` notes the creator
of each task.create'd task. Tasks whose creator is not known (Async calls) can be set by holders of
`task.destroy/any` only.
"""
from __future__ import annotations

from xapi.auth import rbac
from xapi.datamodel.errors import XapiError


def _owners(app) -> dict:
    owners = getattr(app, "task_owners", None)
    if owners is None:
        owners = app.task_owners = {}
    return owners


def remember(app, task: str, session) -> str:
    """Notes who made `task` (task.create); returns it."""
    owners = _owners(app)
    owners[task] = session.auth_user_sid
    if len(owners) > 4096:                       # forget tasks that no longer exist
        table = app.db.table("task")
        for ref in [r for r in owners if r not in table]:
            del owners[ref]
    return task


def assert_op_valid(ctx, session, task) -> None:
    app = ctx.app
    if type(task) is not str or task not in app.db.table("task"):
        raise XapiError("HANDLE_INVALID", "task", task)
    if session.superuser:
        return
    owners = _owners(app)
    if task in owners and owners[task] == session.auth_user_sid:
        return
    if rbac.TASK_DESTROY_ANY not in session.permissions:
        raise rbac.denied(rbac.TASK_DESTROY_ANY)


def _setter(field: str):
    def set_value(ctx, session, self, value):
        assert_op_valid(ctx, session, self)
        ctx.app.db.table("task").set_field(self, field, value)
        return ""
    set_value.__name__ = set_value.__qualname__ = "set_" + field
    return set_value


set_status = _setter("status")
set_progress = _setter("progress")
set_result = _setter("result")
set_error_info = _setter("error_info")
