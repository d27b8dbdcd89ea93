"""The XenAPI wire codec: XML-RPC and JSON-RPC encoding and decoding.

The compiled ``xapi._rpc`` is used, or the pure-Python ``xapi.rpc_ref`` when
``XAPI_PURE=1``; both have the same API and behaviour (see ``xapi.rpc_ref``):

* ``loads(data) -> (params, methodname)``, like ``xmlrpc.client.loads``;
* ``dumps(params, methodname=None, methodresponse=False, allow_none=True, *,
  ints_as_strings=False) -> bytes``, compact, in xapi's style;
* ``dumps_success(value, ints_as_strings=True)`` and ``dumps_failure(description)``:
  xapi's ``{Status, Value}`` / ``{Status, ErrorDescription}`` replies;
* ``json_loads_request(data) -> (method, params, id, version)``,
  ``json_dumps_success(result, id, version)``, ``json_dumps_failure(description, id, version)``.

Anything malformed raises :class:`CodecError` (a ``ValueError``).
"""
from xapi.compiled import load
from xapi.rpc_errors import CodecError

_impl = load("xapi._rpc", "xapi.rpc_ref")

IMPLEMENTATION = _impl.__name__

loads = _impl.loads
dumps = _impl.dumps
dumps_success = _impl.dumps_success
dumps_failure = _impl.dumps_failure
json_loads_request = _impl.json_loads_request
json_dumps_success = _impl.json_dumps_success
json_dumps_failure = _impl.json_dumps_failure

__all__ = [
    "CodecError", "IMPLEMENTATION", "loads", "dumps", "dumps_success", "dumps_failure",
    "json_loads_request", "json_dumps_success", "json_dumps_failure",
]
