"""The JSON-RPC side of the codec (v1 and v2), run against both implementations."""
import importlib
import json
from datetime import datetime
from xmlrpc.client import Binary, DateTime

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from tests.unit.test_rpc_codec import IMPLS
from xapi.rpc_errors import CodecError


@pytest.fixture(params=IMPLS, scope="module")
def rpc(request):
    return importlib.import_module(request.param)


@pytest.mark.parametrize("req, expected", [
    ({"method": "session.login_with_password", "params": ["root", "pw"], "id": 1},
     ("session.login_with_password", ["root", "pw"], 1, 1)),
    ({"method": "VM.get_all", "params": [], "id": "abc"}, ("VM.get_all", [], "abc", 1)),
    ({"method": "m", "params": [], "id": None}, ("m", [], None, 1)),
    ({"jsonrpc": "2.0", "method": "VM.get_all", "params": ["OpaqueRef:s"], "id": 0},
     ("VM.get_all", ["OpaqueRef:s"], 0, 2)),
    ({"id": 7, "jsonrpc": "2.0", "method": "system.listMethods"}, ("system.listMethods", [], 7, 2)),
    ({"jsonrpc": "2.0", "method": "m", "params": {"a": 1}, "id": "x"}, ("m", {"a": 1}, "x", 2)),
    ({"jsonrpc": "2.0", "method": "m", "params": [], "id": None, "extra": 1}, ("m", [], None, 2)),
])
def test_json_request(rpc, req, expected):
    assert rpc.json_loads_request(orjson.dumps(req)) == expected
    assert rpc.json_loads_request(json.dumps(req)) == expected
    assert rpc.json_loads_request(bytearray(orjson.dumps(req))) == expected


@pytest.mark.parametrize("data, rid", [
    (b"", None), (b"{", None), (b"nul", None), (b"[]", None), (b"null", None), (b'"x"', None),
    (b"\xff", None), (b'{"method": "m", "params": [], "id": 1}x', None),
    (b'{"method": "m", "params": []}', None),                                  # v1 without id
    (b'{"jsonrpc": "2.0", "method": "m"}', None),                              # v2 without id
    (b'{"method": "m", "params": [], "id": true}', None),                      # bad id types
    (b'{"method": "m", "params": [], "id": 1.5}', None),
    (b'{"method": "m", "params": [], "id": [1]}', None),
    (b'{"method": "m", "params": [], "id": {}}', None),
    (b'{"params": [], "id": 3}', 3),                                           # no method
    (b'{"method": 5, "params": [], "id": 3}', 3),
    (b'{"method": null, "params": [], "id": "s"}', "s"),
    (b'{"method": "m", "id": 4}', 4),                                          # v1 without params
    (b'{"method": "m", "params": {"a": 1}, "id": 4}', 4),                      # v1 params must be a list
    (b'{"method": "m", "params": "x", "id": 4}', 4),
    (b'{"jsonrpc": "2.0", "method": "m", "params": "x", "id": 5}', 5),
    (b'{"jsonrpc": "2.0", "method": "m", "params": null, "id": 5}', 5),
    (b'{"jsonrpc": "1.0", "method": "m", "params": [], "id": 6}', 6),
    (b'{"jsonrpc": null, "method": "m", "params": [], "id": 6}', 6),
    (b'{"jsonrpc": 2, "method": "m", "params": [], "id": 6}', 6),
    (b'{"method": "m", "params": ' + b"[" * 2000 + b"]" * 2000 + b', "id": 1}', None),  # too deep
])
def test_json_request_errors(rpc, data, rid):
    with pytest.raises(CodecError) as e:
        rpc.json_loads_request(data)
    assert e.value.id == rid


def test_json_request_size_limit(rpc, monkeypatch):
    req = orjson.dumps({"method": "m", "params": ["x" * 100], "id": 1})
    rpc.json_loads_request(req)
    monkeypatch.setattr(rpc, "MAX_SIZE", 50)
    with pytest.raises(CodecError):
        rpc.json_loads_request(req)


def test_json_request_wrong_type(rpc):
    with pytest.raises(TypeError):
        rpc.json_loads_request(5)


def test_json_success(rpc):
    assert rpc.json_dumps_success({"a": [1, None]}, 3, 1) == b'{"result":{"a":[1,null]},"error":null,"id":3}'
    assert rpc.json_dumps_success("OpaqueRef:x", 0, 2) == b'{"jsonrpc":"2.0","result":"OpaqueRef:x","id":0}'
    assert rpc.json_dumps_success(None, "id", 2) == b'{"jsonrpc":"2.0","result":null,"id":"id"}'
    v = {1: DateTime("20250319T04:16:24Z"), "b": Binary(b"abc"), "c": b"xy", "d": (1 << 62, True, 1.5),
         "e": datetime(2025, 3, 19, 4, 16, 24)}
    assert orjson.loads(rpc.json_dumps_success(v, 1, 2)) == {
        "jsonrpc": "2.0", "id": 1,
        "result": {"1": "20250319T04:16:24Z", "b": "YWJj", "c": "eHk=", "d": [1 << 62, True, 1.5],
                   "e": "20250319T04:16:24"}}


def test_json_failure(rpc):
    assert rpc.json_dumps_failure(["HANDLE_INVALID", "VM", 3], 9, 1) == (
        b'{"result":null,"error":["HANDLE_INVALID","VM","3"],"id":9}')
    assert rpc.json_dumps_failure(["SESSION_INVALID", "OpaqueRef:s"], 0, 2) == (
        b'{"jsonrpc":"2.0","error":{"code":1,"message":"SESSION_INVALID","data":["OpaqueRef:s"]},"id":0}')
    assert rpc.json_dumps_failure([], None, 2) == (
        b'{"jsonrpc":"2.0","error":{"code":1,"message":"","data":[]},"id":null}')


@pytest.mark.parametrize("bad", [{1, 2}, object(), 1 << 70, 1j, {"x": {1, 2}}])
def test_json_encode_errors(rpc, bad):
    with pytest.raises(CodecError):
        rpc.json_dumps_success(bad, 1, 2)


def test_json_version_check(rpc):
    for fn, args in ((rpc.json_dumps_success, ("x", 1, 3)), (rpc.json_dumps_failure, (["X"], 1, 0))):
        with pytest.raises(CodecError):
            fn(*args)
    with pytest.raises(CodecError):
        rpc.json_dumps_failure("X", 1, 2)


json_values = st.recursive(
    st.one_of(st.text(max_size=10), st.integers(-(1 << 63), (1 << 63) - 1), st.booleans(), st.none(),
              st.floats(allow_nan=False, allow_infinity=False)),
    lambda ch: st.one_of(st.lists(ch, max_size=4), st.dictionaries(st.text(max_size=8), ch, max_size=4)),
    max_leaves=12)


@settings(max_examples=100, deadline=None)
@given(method=st.text(max_size=20), params=st.one_of(st.lists(json_values, max_size=3),
                                                     st.dictionaries(st.text(max_size=5), json_values, max_size=3)),
       rid=st.one_of(st.none(), st.text(max_size=8), st.integers(-(1 << 63), (1 << 63) - 1)),
       result=json_values)
def test_json_round_trips(rpc, method, params, rid, result):
    req = orjson.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": rid})
    assert rpc.json_loads_request(req) == (method, params, rid, 2)
    if isinstance(params, list):
        req = orjson.dumps({"method": method, "params": params, "id": rid})
        assert rpc.json_loads_request(req) == (method, params, rid, 1)
    assert json.loads(rpc.json_dumps_success(result, rid, 2)) == {"jsonrpc": "2.0", "result": result, "id": rid}
    assert json.loads(rpc.json_dumps_success(result, rid, 1)) == {"result": result, "error": None, "id": rid}
