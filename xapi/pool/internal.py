"""The internal endpoint every host serves: `POST /internal` over TLS, for calls between pool hosts.

A request carries the pool secret in `X-Pool-Secret` and one JSON object {"method", "params"}; the
reply is {"result": ...}, or {"error": [code, *params]} with "source": "xenops" for xenopsd's errors
(so the caller re-raises the same exception class). Methods are registered by name with `method`:
`fn(app, *params)`, plain or async. Plain HTTP and a wrong secret get 403 (nothing runs).
"""
from __future__ import annotations

import inspect
import logging

import orjson

from xapi.datamodel.errors import XapiError
from xapi.pool import secret
from xapi.server.handlers import HttpError
from xapi.xenops.server import XenopsError

log = logging.getLogger("xapi.pool.internal")

PATH = "/internal"
SECRET_HEADER = "x-pool-secret"
METHODS: dict = {}


def method(name: str):
    def register(fn):
        METHODS[name] = fn
        return fn
    return register


def encode_error(e: Exception) -> dict:
    if isinstance(e, XapiError):
        return {"error": [str(x) for x in e.description]}
    if isinstance(e, XenopsError):
        return {"error": [str(x) for x in e.args], "source": "xenops"}
    log.exception("internal call failed")
    return {"error": ["INTERNAL_ERROR", str(e)]}


async def _read_all(request, limit: int) -> bytes:
    parts, size = [], 0
    async for chunk in request.body():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, close=True)
        parts.append(chunk)
    return b"".join(parts)


def authenticate(request) -> None:
    """A pool host's request: over TLS with the pool secret, else 403 (for every internal endpoint)."""
    transport = request._exchange.proto.transport
    if transport is None or transport.get_extra_info("ssl_object") is None:
        raise HttpError(403, "internal calls only over TLS", close=True)
    if not secret.matches(request.app.pool_secret, request.headers.get(SECRET_HEADER)):
        raise HttpError(403, "bad pool secret", close=True)


async def _handle(request, response) -> None:
    app = request.app
    authenticate(request)
    body = await _read_all(request, app.config.max_request_size)
    try:
        call = orjson.loads(body)
        name, params = call["method"], call.get("params", [])
        fn = METHODS[name]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        reply = {"error": ["MESSAGE_METHOD_UNKNOWN", f"internal: {body[:80]!r}"]}
    else:
        try:
            result = fn(app, *params)
            if inspect.isawaitable(result):
                result = await result
            reply = {"result": result}
        except (XapiError, XenopsError) as e:
            reply = encode_error(e)
        except TypeError as e:
            reply = {"error": ["MESSAGE_PARAMETER_COUNT_MISMATCH", name, str(e)]}
        except Exception as e:                                # noqa: BLE001 - answered, not raised
            reply = encode_error(e)
    data = orjson.dumps(reply)
    response.start(200, [("Content-Type", "application/json")], length=len(data))
    await response.end(data)


def register(routes) -> None:
    routes.add("POST", PATH, _handle, auth=False)
    from xapi.sm import mirror_stream
    mirror_stream.register(routes)          # CONNECT /services/SM/mirror: storage motion's data stream
    from xapi.pool import (certificates, liveness, member_start, membership, methods,  # noqa: F401 - internal
                           relay, replica, transitions)                        # methods register
    membership.register(routes)
