"""Where a call runs. A pool member refuses coordinator-only calls with HOST_IS_SLAVE; the coordinator
runs them locally. Reads (accessors, get_record, get_all...) are normally-local: a member answers
them from its replica of the pool database (xapi.pool.replica), to sessions it made itself
(session.slave_local_login_with_password, its Unix socket). Emergency calls run anywhere."""
from __future__ import annotations

import functools
import inspect

from xapi import datamodel as dm
from xapi.actions import action
from xapi.datamodel.errors import XapiError
from xapi.datamodel.flags import forwarding, readonly
from xapi.pool import redolog
from xapi.pool.api import MESSAGES as POOL_MESSAGES


# explicit messages that only read (the rest of the reads are the implicit get_* accessors)
_READS = frozenset({"get_all", "get_all_records", "get_record", "get_by_uuid", "get_by_name_label",
                    "get_all_records_where"})


def _replica_read(message: dm.Message) -> bool:
    return message.takes_session and (readonly(message) or message.name in _READS)


def resolve(message: dm.Message, db):
    fn = POOL_MESSAGES.get(message.wire_name) or action(message, db)
    if fn is None or forwarding(message) == "emergency" or _replica_read(message):
        return fn

    if redolog.configured():
        # With a redo-log, a call that may have written is answered once its changes are on disk.
        @functools.wraps(fn)
        async def coordinator_only_logged(ctx, session, *args):
            app = ctx.app
            if not app.is_coordinator:
                raise XapiError("HOST_IS_SLAVE", app.coordinator_address)
            result = fn(ctx, session, *args)
            if inspect.isawaitable(result):
                result = await result
            if app.redo is not None:
                await app.redo.commit()
            return result
        return coordinator_only_logged

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def coordinator_only_async(ctx, session, *args):
            if not ctx.app.is_coordinator:
                raise XapiError("HOST_IS_SLAVE", ctx.app.coordinator_address)
            return await fn(ctx, session, *args)
        return coordinator_only_async

    @functools.wraps(fn)
    def coordinator_only(ctx, session, *args):
        if not ctx.app.is_coordinator:
            raise XapiError("HOST_IS_SLAVE", ctx.app.coordinator_address)
        return fn(ctx, session, *args)
    return coordinator_only
