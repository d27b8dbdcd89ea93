"""A member's writes to the pool database, run by its coordinator: one path for all of them.

Member side (`app.pool.coordinator_api`, xapi.pool.remote.CoordinatorApi): one internal call per
write, answered with the result and the coordinator's generation after the write; the member goes
on once its replica holds that generation, so what it reads next is there. The writes:
- XenAPI calls (internal method `member.call`), run on the coordinator with a pool session of the
  member's host, as a call over /jsonrpc would be (arity, types, RBAC, audit, event delivery):
  its storage drivers' calls, relayed (below), PBD.plug of its own PBDs, other-config keys its
  storage layer keeps (SR "dirty", VDI "content_id");
- the fields of its own rows it refreshes at start, which no XenAPI setter writes (internal method
  `member.started`, xapi.pool.member_start).
Coordinator side: `member_write` registers such an internal method.

A member's storage drivers write through their own host: the calls they make on the member's local
socket with their SM session (xapi.sm.service: VDI.db_introduce, SR.set_physical_utilisation,
VDI.remove_from_sm_config...) that only the coordinator may run are relayed as `member.call`, as
xapi's SM calls on a slave reach the master. Any other session still gets HOST_IS_SLAVE for these
calls on a member (xapi.forwarding).
"""
from __future__ import annotations

import inspect
from xmlrpc.client import DateTime

import orjson

from xapi import rpc
from xapi.datamodel.errors import XapiError
from xapi.datamodel.flags import forwarding
from xapi.pool.internal import method

SM_ORIGINATOR = "SM"        # the originator of the storage layer's driver sessions (xapi.sm.service)
CLASSES = ("SR", "VDI", "PBD", "SM")


# -- coordinator side ---------------------------------------------------------------------------------
def member_write(name: str):
    """Registers internal method `name` (`fn(app, host, *params)`) for members' writes: refused with
    HOST_IS_SLAVE unless this host is the coordinator; answers {"result", "generation"}."""
    def register(fn):
        async def run(app, host, *params):
            if not app.is_coordinator:
                raise XapiError("HOST_IS_SLAVE", app.coordinator_address)
            if type(host) is not str or host not in app.db.table("host"):
                raise XapiError("HANDLE_INVALID", "host", host)
            try:
                result = fn(app, host, *params)
                if inspect.isawaitable(result):
                    result = await result
            finally:
                app.hub.poke()      # the waiters of what it wrote (the member's replica among them)
            return {"result": result, "generation": app.db.generation}
        run.__name__ = fn.__name__
        method(name)(run)
        return fn
    return register


class _MemberRequest:
    """The context a member's XenAPI call runs in: the member's address (audit log), not a local caller."""

    __slots__ = ("app", "peer", "local")

    def __init__(self, app, peer: str) -> None:
        self.app, self.peer, self.local = app, peer, False


def _pool_session(app, host: str) -> str:
    """The pool session the coordinator runs a member's calls with (as session.slave_login makes),
    one per member host, made again once collected or ended."""
    sessions = getattr(app, "member_sessions", None)
    if sessions is None:
        sessions = app.member_sessions = {}
    ref = sessions.get(host)
    if ref is None or ref not in app.sessions.by_ref:
        ref = sessions[host] = app.sessions.create("", superuser=True, pool=True, originator="").ref
    return ref


@member_write("member.call")
async def member_call(app, host: str, wire: str, params: list):
    """XenAPI call `wire` for member `host`; the result as the JSON-RPC endpoint would encode it."""
    if type(wire) is not str or type(params) is not list:
        raise XapiError("INTERNAL_ERROR", f"member.call: bad request {wire!r:.80}")
    ctx = _MemberRequest(app, app.db.table("host").get_field(host, "address"))
    result = app.endpoints.call(ctx, wire, [_pool_session(app, host), *params])
    if inspect.isawaitable(result):
        result = await result
    try:
        return orjson.loads(rpc.json_dumps_success(result, 0, 2))["result"]
    except (rpc.CodecError, orjson.JSONDecodeError) as e:
        raise XapiError("INTERNAL_ERROR", f"{wire}: cannot encode the result: {e}") from None


# -- member side: its storage drivers' calls ----------------------------------------------------------
def install(app) -> None:
    """Wraps the dispatcher's coordinator-only entries of the storage classes (once per daemon)."""
    for name, entry in app.dispatcher.entries.items():
        m = entry.message
        if (name != entry.name or m is None or m.cls not in CLASSES or not entry.skip
                or forwarding(m) != "master"):
            continue
        entry.handler = _relaying(app, entry.name, entry.handler, entry.is_async)
        entry.is_async = True


def _relaying(app, wire: str, handler, is_async: bool):
    async def relay_or_run(ctx, session, *args):
        if not app.is_coordinator and session is not None and session.originator == SM_ORIGINATOR:
            return await relay(app, wire, args)
        result = handler(ctx, session, *args)
        return await result if is_async else result
    relay_or_run.__name__ = getattr(handler, "__name__", wire)
    return relay_or_run


async def relay(app, wire: str, args) -> object:
    return await app.pool.coordinator_api.call(wire, *(_wire(a) for a in args))


def _wire(v):
    """A converted argument back in JSON-RPC form (datetimes as xapi's strings)."""
    if isinstance(v, DateTime):
        return v.value
    if isinstance(v, dict):
        return {str(k): _wire(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_wire(x) for x in v]
    return v
