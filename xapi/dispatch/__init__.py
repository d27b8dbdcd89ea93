"""The server layer's last step: arity, types, session and RBAC, then the forwarding layer's callable.

One Entry per wire name ("VM.start", its alias "VM_start"), all built from the datamodel.
"""
from __future__ import annotations

import inspect

from xapi import datamodel as dm, events
from xapi.auth import rbac
from xapi.auth.sessions import CLOCK
from xapi.datamodel import flags
from xapi.datamodel.defaults import PARAM_DEFAULTS
from xapi.datamodel.errors import XapiError

from .convert import converter


def _denied(permission: str) -> XapiError:
    """RBAC_PERMISSION_DENIED as xapi words it, naming the roles that hold the permission."""
    return rbac.denied(permission)


class Entry:
    """How to call one message: checks in xapi's order (arity, types, session, RBAC), then the action."""

    __slots__ = ("name", "message", "nparams", "min_params", "defaults", "convs", "conv1", "skip",
                 "sessions", "roles", "permission", "keyed", "handler", "is_async", "raw", "readonly",
                 "xml_prepare")

    def __init__(self, name: str, message: dm.Message | None, handler, sessions: dict, *, nparams: int,
                 takes_session: bool, convs=(), defaults=(), roles=frozenset(), keyed=None, raw: bool = False,
                 readonly: bool = False, xml_prepare=None) -> None:
        self.name = name
        self.message = message
        self.nparams = nparams
        self.defaults = tuple(defaults)
        self.min_params = nparams - len(self.defaults)
        self.convs = tuple(convs)
        self.conv1 = self.convs[0] if len(self.convs) == 1 else None   # the common one-argument case
        self.skip = 1 if takes_session else 0
        self.sessions = sessions            # ref -> Session, shared with the session table
        self.roles = roles
        # RBAC, decided once per entry: the permission a session needs (its lowercase wire name), and
        # for maps with protected keys a check that looks at the arguments (rbac.key_check)
        self.permission = rbac.permission_of(message) if message is not None else ""
        self.keyed = keyed
        self.handler = handler
        self.is_async = inspect.iscoroutinefunction(handler)
        self.raw = raw                      # reply without the Status/Value envelope (system.listMethods)
        self.readonly = readonly            # cannot write: no event delivery after it
        self.xml_prepare = xml_prepare      # result -> value to encode with ints kept typed (event.from)

    def __call__(self, ctx, params):
        """Runs the call for connection `ctx`; returns the value, or a coroutine for async actions."""
        skip = self.skip
        received = len(params) - skip
        if received != self.nparams:
            if self.min_params <= received < self.nparams:
                params = list(params) + [v for _, v in self.defaults[received - self.min_params:]]
            else:
                raise XapiError("MESSAGE_PARAMETER_COUNT_MISMATCH", self.name, self.min_params, max(received, 0))
        if self.conv1 is not None:
            args = (self.conv1(params[skip]),)
        else:
            args = [conv(v) for conv, v in zip(self.convs, params[skip:])]
        if skip:
            session = self.sessions.get(params[0]) if type(params[0]) is str else None
            if session is None:
                raise XapiError("SESSION_INVALID", params[0])
            session.last_active = CLOCK[0]
            if not session.superuser:
                if self.keyed is not None:
                    self.keyed(session, args)
                elif self.permission not in session.permissions:
                    raise _denied(self.permission)
        else:
            session = None
        return self.handler(ctx, session, *args)


class Dispatcher:
    def __init__(self, resolve, db, sessions: dict) -> None:
        """`resolve(message, db) -> callable | None` gives the forwarding layer's callable for a message;
        `sessions` maps live session refs to sessions."""
        self.entries: dict[str, Entry] = {}
        for cls in dm.CLASSES.values():
            for m in cls.messages.values():
                handler = resolve(m, db)
                if handler is None:
                    handler = _not_implemented(m.wire_name)
                common = dict(nparams=len(m.params), takes_session=m.takes_session,
                              convs=[converter(p.type, p.name) for p in m.params],
                              defaults=PARAM_DEFAULTS.get(m.wire_name, ()), roles=m.roles,
                              keyed=rbac.key_check(m, db))
                entry = Entry(m.wire_name, m, handler, sessions, readonly=flags.readonly(m),
                              xml_prepare=events.xml_prepare if m.result.kind == "event_batch" else None, **common)
                self.entries[m.wire_name] = entry
                self.entries[f"{cls.name}_{m.name}"] = entry
                if flags.has_async(m):
                    name = f"Async.{m.wire_name}"
                    self.entries[name] = Entry(name, m, _spawner(name, handler), sessions, **common)
        self.entries["system.listMethods"] = Entry("system.listMethods", None, self._list_methods, sessions, nparams=0,
                                                   takes_session=False, raw=True)
        self.sessions = sessions
        # xapi lists the synchronous wire names only (clients derive class names from them)
        self.method_names = sorted(n for n, e in self.entries.items() if n == e.name and not n.startswith("Async."))

    def _list_methods(self, ctx, session):
        return self.method_names

    def lookup(self, ctx, name: str, params) -> Entry:
        entry = self.entries.get(name)
        if entry is None:
            # xapi checks the session before saying the method is unknown
            if params and type(params[0]) is str and params[0].startswith("OpaqueRef:") \
                    and params[0] not in self.sessions:
                raise XapiError("SESSION_INVALID", params[0])
            if name.startswith("Async.") and name[6:] in self.entries:
                raise XapiError("Fault", f"No async mode for this operation (rpc: {name})")
            raise XapiError("MESSAGE_METHOD_UNKNOWN", name)
        return entry


def _spawner(name: str, handler):
    """An Async form: starts the call as a task and answers with the task's ref at once."""
    def spawn(ctx, session, *args):
        return ctx.app.tasks.spawn(name, handler, ctx, session, args)
    return spawn


def _not_implemented(name: str):
    def handler(ctx, session, *args):
        raise XapiError("NOT_IMPLEMENTED", name)
    return handler
