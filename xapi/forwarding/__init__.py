"""Where a call runs. A pool member refuses coordinator-only calls with HOST_IS_SLAVE; the coordinator
runs them locally. (Locks and calls to other members arrive with the pool.)"""
from __future__ import annotations

import functools
import inspect

from xapi import datamodel as dm
from xapi.actions import action
from xapi.datamodel.errors import XapiError

# Calls a member still answers itself when it cannot reach the coordinator (xapi's emergency_calls).
EMERGENCY_CALLS = frozenset({
    "pool.emergency_transition_to_master", "pool.emergency_reset_master", "pool.ping_slave",
    "session.slave_local_login", "session.slave_local_login_with_password", "session.local_logout",
    "host.propose_new_master", "host.commit_new_master", "host.abort_new_master",
    "host.local_management_reconfigure", "host.emergency_ha_disable", "host.management_disable",
    "host.is_in_emergency_mode", "host.shutdown_agent",
})


def resolve(message: dm.Message, db):
    fn = action(message, db)
    if fn is None or message.wire_name in EMERGENCY_CALLS:
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
