"""The RPC endpoints: request body in, reply body out, XML-RPC and JSON-RPC. No IO here.

A reply is bytes for HTTP 200, an HttpReply for anything else, or a coroutine that yields one of
those when the action is asynchronous (logins, long polls).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from xmlrpc.client import Fault

from xapi import rpc
from xapi.datamodel.errors import XapiError

log = logging.getLogger("xapi.rpc")

XML = b"text/xml"
JSON = b"application/json"


@dataclass(slots=True)
class HttpReply:
    status: int
    content_type: bytes
    body: bytes


def _xml_failure(description: list) -> bytes:
    """The failure envelope; parameters that came in over JSON may hold characters XML can't carry."""
    try:
        return rpc.dumps_failure(description)
    except rpc.CodecError:
        return rpc.dumps_failure([str(x).encode("ascii", "backslashreplace").decode("ascii")
                                  .translate(_CONTROL) for x in description])


_CONTROL = {c: "?" for c in range(32) if c not in (9, 10, 13)}


def _internal(e: BaseException) -> XapiError:
    log.exception("unexpected error in a call", exc_info=e)
    return XapiError("INTERNAL_ERROR", f"{type(e).__name__}: {e}")


class Endpoints:
    def __init__(self, dispatcher, hub, audit=None, durable=None) -> None:
        self.dispatcher = dispatcher
        self.poke = hub.poke      # after any call that may have written: wake event waiters
        # After a call that may have written: an awaitable that ends once its changes are in the
        # redo-log, or None (no log, nothing new). The answer waits for it, as xapi's writes are
        # logged before it answers; whichever way the log was switched on (start-up or the API).
        self.durable = durable or (lambda: None)
        # -- audit log (xapi.audit): the entries it records; reads cost one attribute test --
        self.audit = audit
        self.audited = frozenset(e for e in dispatcher.entries.values() if audit.is_audited(e)) \
            if audit is not None else frozenset()

    # -- both transports -------------------------------------------------------------------------
    def _call(self, ctx, method: str, params):
        """Runs one call, then wakes event waiters and writes its audit line: returns (entry, result),
        the result a coroutine for asynchronous actions; every failure is a XapiError."""
        who = None
        try:
            entry = self.dispatcher.lookup(ctx, method, params)
            if not entry.readonly and entry in self.audited:
                who = self.audit.who(ctx, entry, params)
            result = entry(ctx, params)
        except XapiError as e:
            self.poke()
            if who is not None or e.code == "RBAC_PERMISSION_DENIED":
                self._audit_failure(ctx, who, method, params, e)
            raise
        except Exception as e:  # noqa: BLE001 - every failure becomes a XenAPI error, never a traceback
            self.poke()
            error = _internal(e)
            if who is not None:
                self._audit_failure(ctx, who, method, params, error)
            raise error from None
        if not entry.readonly:
            self.poke()
            if who is not None:
                if entry.is_async:
                    result = self._audit_later(ctx, who, entry, params, result)
                else:
                    self.audit.ok(ctx, who, entry, params)
        return entry, result

    def call(self, ctx, method: str, params):
        """One call made in process (the xe server's commands), checked, audited and waking event
        waiters as a call over HTTP: its result, or a coroutine for an asynchronous action; every
        failure is a XapiError."""
        entry, result = self._call(ctx, method, params)
        if entry.readonly:
            return result
        if entry.is_async:
            return self._poke_later(result)
        logged = self.durable()
        return result if logged is None else self._logged(logged, result)

    async def _poke_later(self, pending):
        """An asynchronous action's writes happen while it runs: wake event waiters once it is done
        (as the HTTP transports do), not at the next unrelated call."""
        try:
            result = await pending
        finally:
            self.poke()
        await self._log()
        return result

    async def _log(self) -> None:
        logged = self.durable()
        if logged is not None:
            await logged

    @staticmethod
    async def _logged(logged, reply):
        await logged
        return reply

    # -- XML-RPC --------------------------------------------------------------------------------
    def xml(self, ctx, body: bytes):
        try:
            params, method = rpc.loads(body)
            if method is None:
                raise rpc.CodecError("a methodCall was expected")
        except (rpc.CodecError, Fault) as e:
            # xapi answers a body it cannot parse with HTTP 500; we keep the envelope and the connection
            return HttpReply(500, XML, _xml_failure(["INTERNAL_ERROR", f"cannot parse XML-RPC request: {e}"]))
        try:
            entry, result = self._call(ctx, method, params)
        except XapiError as e:
            return _xml_failure(e.description)
        if entry.is_async:
            return self._xml_later(entry, result)
        reply = self._xml_encode(entry, result)
        if not entry.readonly:
            logged = self.durable()
            if logged is not None:
                return self._reply_logged(logged, reply, _xml_failure)
        return reply

    @staticmethod
    async def _reply_logged(logged, reply, failure):
        try:
            await logged
        except Exception as e:  # noqa: BLE001 - the log could not be written: the call is not durable
            return failure(_internal(e).description)
        return reply

    @staticmethod
    def _xml_encode(entry, result) -> bytes:
        try:
            if entry.raw:
                return rpc.dumps((result,), methodresponse=True, ints_as_strings=True)
            if entry.xml_prepare is not None:
                return rpc.dumps_success(entry.xml_prepare(result), ints_as_strings=False)
            return rpc.dumps_success(result)
        except Exception as e:  # noqa: BLE001 - a value that cannot be encoded
            return _xml_failure(_internal(e).description)

    async def _xml_later(self, entry, pending):
        try:
            result = await pending
            if not entry.readonly:
                await self._log()
        except XapiError as e:
            return _xml_failure(e.description)
        except Exception as e:  # noqa: BLE001
            return _xml_failure(_internal(e).description)
        finally:
            self.poke()
        return self._xml_encode(entry, result)

    # -- audit log ------------------------------------------------------------------------------
    def _audit_failure(self, ctx, who, method, params, error: XapiError) -> None:
        entry = self.dispatcher.entries.get(method)
        if self.audit is not None and entry is not None:
            self.audit.failed(ctx, who, entry, params, error)

    async def _audit_later(self, ctx, who, entry, params, pending):
        """An audited asynchronous call (a login): its line once it has finished."""
        try:
            result = await pending
        except XapiError as e:
            self.audit.failed(ctx, who, entry, params, e)
            raise
        except Exception:
            self.audit.failed(ctx, who, entry, params, XapiError("INTERNAL_ERROR"))
            raise
        self.audit.ok(ctx, who, entry, params)
        return result

    # -- JSON-RPC -------------------------------------------------------------------------------
    def json(self, ctx, body: bytes):
        try:
            method, params, rid, version = rpc.json_loads_request(body)
        except rpc.CodecError as e:
            rid = getattr(e, "id", None)
            return HttpReply(500, JSON, rpc.json_dumps_failure(
                ["INTERNAL_ERROR", f"cannot parse JSON-RPC request: {e}"], rid, 2))
        if type(params) is not list:
            return rpc.json_dumps_failure(["INTERNAL_ERROR", "parameters by name are not supported"], rid, version)
        try:
            entry, result = self._call(ctx, method, params)
        except XapiError as e:
            return rpc.json_dumps_failure(e.description, rid, version)
        if entry.is_async:
            return self._json_later(entry, result, rid, version)
        reply = self._json_encode(result, rid, version)
        if not entry.readonly:
            logged = self.durable()
            if logged is not None:
                return self._reply_logged(logged, reply,
                                          lambda d: rpc.json_dumps_failure(d, rid, version))
        return reply

    @staticmethod
    def _json_encode(result, rid, version) -> bytes:
        try:
            return rpc.json_dumps_success(result, rid, version)
        except Exception as e:  # noqa: BLE001
            return rpc.json_dumps_failure(_internal(e).description, rid, version)

    async def _json_later(self, entry, pending, rid, version):
        try:
            result = await pending
            if not entry.readonly:
                await self._log()
        except XapiError as e:
            return rpc.json_dumps_failure(e.description, rid, version)
        except Exception as e:  # noqa: BLE001
            return rpc.json_dumps_failure(_internal(e).description, rid, version)
        finally:
            self.poke()
        return self._json_encode(result, rid, version)
