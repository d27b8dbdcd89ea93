"""task.*: tasks made by clients, cancel and destroy."""
from xapi.datamodel.errors import XapiError


def _check(ctx, task):
    if task not in ctx.app.db.table("task"):
        raise XapiError("HANDLE_INVALID", "task", task)


def create(ctx, session, label, description):
    return remember(ctx.app, ctx.app.tasks.create(label, description, cancellable=False), session)


def cancel(ctx, session, task):
    _check(ctx, task)
    ctx.app.tasks.cancel(task, session.ref)
    return ""


def destroy(ctx, session, self):
    _check(ctx, self)
    ctx.app.tasks.destroy(self)
    return ""


from xapi.actions.task_settings import (remember, set_error_info, set_progress, set_result,  # noqa: E402,F401
                                      set_status)
