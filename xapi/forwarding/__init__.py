"""Where a call runs, by the forwarding class the datamodel gives each message
(xapi.datamodel.flags.forwarding, the only place it is decided):

- "emergency": any host runs it, even one that has lost its coordinator (xapi's emergency_calls).
- "local" (normally-local): reads (the get_* accessors, get_record, get_all...) taking a session. A
  member answers them from its replica of the pool database (xapi.pool.replica), to the sessions it
  made itself (session.slave_local_login_with_password, its Unix socket).
- "master": everything else. A member refuses it with HOST_IS_SLAVE [coordinator address]; the
  coordinator runs it. (With a redo-log, every call that may have written is answered once its
  changes are on disk: xapi.server.rpc, whichever way the log was switched on.)

The host that owns the object. xapi's coordinator forwards a side-effecting call, with a pool session,
to the host that owns its object (message_forwarding.ml: do_op_on after a liveness check, else
HOST_OFFLINE), and that host runs it locally: VM operations of a running or paused VM go to its
resident host (forward_vm_op), VM.start/resume to the host chosen for it (VM.start_on to the named
one), VBD/VIF plug and unplug to their VM's resident host, PBD.plug/unplug to the PBD's host,
host.* calls to that host, SR/VDI operations to the host of a plugged PBD of the SR (the
coordinator's for a shared SR, the only PBD's host for a local one: choose_pbd_for_sr). Here the
coordinator runs every "master" call itself and reaches the owning host's resources with internal
calls instead of forwarding the XenAPI call (xapi.pool.calls, `app.pool.call(host, ...)`):
- VM and VBD/VIF device operations: the resident (or chosen) host's xenopsd, `app.xenops_for(host)`
  (xapi.actions.vm.xenops_of / vm_devices.xenops_for_vm, xapi.pool.xenops);
- SR/VDI operations: the driver runs on the host whose PBD serves the SR (xapi.sm.service.run ->
  internal "storage.run"), disks are attached on the VM's host ("storage.attach"/"activate");
- PBD.plug/unplug of another host's PBD and host.destroy: overrides in xapi.pool.api (internal
  "storage.plug"/"storage.unplug" on the PBD's host; host.destroy pings the host first, HOST_IS_LIVE);
- host.* that act on the machine itself: internal host_info.*, host.power on that host.
A member's own writes go the other way: its storage drivers' and start-up writes run on the
coordinator (xapi.pool.relay), and the member goes on once its replica holds them.
"""
from __future__ import annotations

import functools
import inspect

from xapi import datamodel as dm
from xapi.actions import action
from xapi.datamodel.errors import XapiError
from xapi.datamodel.flags import forwarding


def resolve(message: dm.Message, db):
    # imported here: the pool's actions import the action modules, which use xapi.forwarding.locks
    from xapi.pool.api import MESSAGES as POOL_MESSAGES
    fn = POOL_MESSAGES.get(message.wire_name) or action(message, db)
    if fn is None or forwarding(message) != "master":
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
