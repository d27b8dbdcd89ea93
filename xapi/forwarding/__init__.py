"""Where a call runs. A pool member refuses coordinator-only calls with HOST_IS_SLAVE; the coordinator
runs them locally. (Locks and calls to other members arrive with the pool.)"""
from __future__ import annotations

import functools
import inspect

from xapi import datamodel as dm
from xapi.actions import action
from xapi.datamodel.errors import XapiError
from xapi.datamodel.flags import forwarding
from xapi.pool.api import MESSAGES as POOL_MESSAGES


def resolve(message: dm.Message, db):
    fn = POOL_MESSAGES.get(message.wire_name) or action(message, db)
    if fn is None or forwarding(message) == "emergency":
        return fn

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
