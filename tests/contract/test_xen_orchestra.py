"""Xen Orchestra's connector (npm `xen-api` 4.7.6, under node) against the running daemon, over
JSON-RPC and XML-RPC: it connects, loads every object, sees an SDK change within a second, and its
write barrier on `pool.other_config` resolves. The node side is tests/js/xo_connect.mjs."""
import time
import xmlrpc.client

import pytest
import XenAPI

from tests.contract.xo_client import HAVE_XO, WHY_NOT, XoClient
from tests.fixtures import root_xenapi

pytestmark = pytest.mark.skipif(not HAVE_XO, reason=WHY_NOT)

TRANSPORTS = ["json-rpc", "xml-rpc"]
ENDPOINT = {"json-rpc": "/jsonrpc", "xml-rpc": "/xmlrpc"}


@pytest.fixture
def xo(xapi_daemon):
    clients = []

    def start(transport, **kw):
        c = XoClient(xapi_daemon, transport, **kw)
        clients.append(c)
        return c

    yield start
    for c in clients:
        c.close()


sdk = root_xenapi("xapi_daemon", scope="function", originator="xo-contract-tests")


def listed_types(d):
    """What xen-api derives its types from: `system.listMethods()` without a session."""
    methods = xmlrpc.client.ServerProxy(d.url).system.listMethods()
    return [m[:m.index(".")] for m in methods if m.endswith(".get_all_records")]


def sdk_counts(x, types):
    """Objects per type as the Python SDK sees them; the error code where get_all_records fails."""
    counts = {}
    for t in types:
        try:
            counts[t] = len(getattr(x, t).get_all_records())
        except XenAPI.Failure as e:
            counts[t] = e.details[0]
    return counts


def connected(c, d, transport):
    _, msg = c.expect("connected", 10)
    assert msg["types"] == listed_types(d)
    assert {"VM", "host", "pool", "task", "message"} <= set(msg["types"])
    used = set(msg["paths"])
    assert used == {ENDPOINT.get(transport, "/jsonrpc")}, f"{transport} posted to {used}"
    return msg


@pytest.mark.parametrize("transport", TRANSPORTS + ["auto"])
def test_connect_and_load_every_type(xapi_daemon, xo, sdk, transport):
    """Without the event watcher: login, pool.get_all_records, system.listMethods, then
    get_all_records of every listed type; `auto` settles on JSON-RPC."""
    c = xo(transport, mode="nowatch")
    msg = connected(c, xapi_daemon, transport)
    assert msg["status"] == "connected"
    assert msg["pool"] == sdk.pool.get_all()[0]
    _, loaded = c.expect("loaded", 5)
    assert set(loaded["paths"]) == {ENDPOINT.get(transport, "/jsonrpc")}
    want = sdk_counts(sdk, msg["types"])
    got = {t: n if isinstance(n, int) else n["code"] for t, n in loaded["counts"].items()}
    assert got == want
    assert got["VM"] >= 1 and got["host"] == 1 and got["pool"] == 1


def test_every_listed_type_loads(xapi_daemon, sdk):
    """xen-api takes every `X` with an `X.get_all_records` in system.listMethods for a type, and
    ignores a type whose get_all_records fails: its objects would be missing from XO. (xapi lists
    synchronous wire names only, `gen_server.ml`, so no `Async.*` entry makes an `Async` type.)"""
    failing = {t: n for t, n in sdk_counts(sdk, listed_types(xapi_daemon)).items() if not isinstance(n, int)}
    assert failing == {}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_watcher_loads_everything_and_sees_a_rename_within_a_second(xapi_daemon, xo, sdk, transport):
    """The connector's own watcher (event.inject, get_all_records of every type, event.from loop)
    holds what the SDK sees, and a VM renamed through the SDK reaches it within a second."""
    c = xo(transport)
    types = connected(c, xapi_daemon, transport)["types"]
    _, loaded = c.expect("loaded", 5)
    want = {t: n for t, n in sdk_counts(sdk, types).items() if isinstance(n, int)}
    assert {t: loaded["counts"][t] for t in want} == want

    vms = sdk.VM.get_all_records()
    dom0 = next(ref for ref, vm in vms.items() if vm["is_control_domain"])
    old = vms[dom0]["name_label"]
    new = f"renamed by the SDK over {transport} {time.monotonic_ns()}"
    try:
        start = time.monotonic()
        sdk.VM.set_name_label(dom0, new)
        at, msg = c.expect("update", 5, lambda m: m.get("ref") == dom0 and m.get("name_label") == new)
        assert msg["type"] == "VM" and msg["uuid"] == vms[dom0]["uuid"]
        assert at - start < 1.0, f"the rename took {at - start:.3f}s to reach xen-api"
        print(f"rename seen by xen-api over {transport} after {at - start:.3f}s")
    finally:
        sdk.VM.set_name_label(dom0, old)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_barrier_on_pool_other_config(xapi_daemon, xo, sdk, transport):
    """`xapi.barrier()` adds `xo:barrier:<rnd>` to pool.other_config, waits for the pool `mod`
    event, then removes the key."""
    c = xo(transport)
    connected(c, xapi_daemon, transport)
    c.expect("loaded", 5)
    c.send("barrier")
    _, msg = c.expect("barrier", 5)
    assert any(k.startswith("xo:barrier:") for k in msg["other_config"])
    pool = sdk.pool.get_all()[0]
    deadline = time.monotonic() + 2
    while any(k.startswith("xo:barrier:") for k in sdk.pool.get_other_config(pool)):
        assert time.monotonic() < deadline, "xen-api did not remove its barrier key"
        time.sleep(0.05)
    assert c.close() == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wrong_password(xapi_daemon, xo, transport):
    c = xo(transport, password="not-the-password")
    _, msg = c.expect("error", 10)
    assert msg["stage"] == "connect" and msg["name"] == "XapiError"
    assert msg["code"] == "SESSION_AUTHENTICATION_FAILED"
    assert msg["params"] == ["root", "Authentication failure"]
    assert c.proc.wait(5) == 1
