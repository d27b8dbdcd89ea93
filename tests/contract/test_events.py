"""event.from / inject / register+next and tasks against the real daemon, over XML-RPC and JSON-RPC."""
import json
import threading
import time
import urllib.request
import xmlrpc.client

import pytest
import XenAPI

from tests.fixtures import root_xenapi


x = root_xenapi("xapi_daemon", scope="function")


def dom0(x):
    return next(r for r, v in x.VM.get_all_records().items() if v["is_control_domain"])


def test_from_empty_token_returns_everything(x):
    batch = event_from(x, ["*"], "", 0.0)
    assert set(batch) == {"events", "valid_ref_counts", "token"}
    a, b = batch["token"].split(",")
    assert len(a) == 20 and len(b) == 20 and int(a) > 0
    classes = {e["class"] for e in batch["events"]}
    assert {"vm", "host", "pool", "host_metrics"} <= classes
    assert all(e["operation"] == "add" and "snapshot" in e for e in batch["events"])
    counts = batch["valid_ref_counts"]
    assert counts["vm"] == len(x.VM.get_all()) and counts["host"] == 1


def event_from(x, classes, token, timeout):
    return getattr(x.event, "from")(classes, token, timeout)


def test_from_blocks_until_a_change_and_reports_a_mod(xapi_daemon, x):
    vm = dom0(x)
    token = event_from(x, ["vm"], "", 0.0)["token"]
    got = {}
    watcher = XenAPI.Session(xapi_daemon.url)       # one connection per thread
    watcher.xenapi.login_with_password("root", xapi_daemon.password)

    def poll():
        t0 = time.monotonic()
        got["batch"] = event_from(watcher.xenapi, ["VM"], token, 10.0)
        got["took"] = time.monotonic() - t0

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.3)
    x.VM.set_name_label(vm, "renamed by the test")
    t.join(10)
    assert got["took"] < 2
    (ev,) = got["batch"]["events"]
    assert ev["class"] == "vm" and ev["operation"] == "mod" and ev["ref"] == vm
    assert ev["snapshot"]["name_label"] == "renamed by the test"
    assert got["batch"]["token"] > token


def test_from_times_out_empty(x):
    token = event_from(x, ["vm"], "", 0.0)["token"]
    t0 = time.monotonic()
    batch = event_from(x, ["vm"], token, 0.5)
    assert batch["events"] == [] and 0.4 < time.monotonic() - t0 < 2


def test_changes_elsewhere_do_not_wake_other_subscriptions(x):
    pool = x.pool.get_all()[0]
    token = event_from(x, ["vm"], "", 0.0)["token"]
    x.pool.add_to_other_config(pool, "unrelated", "1")
    x.pool.remove_from_other_config(pool, "unrelated")
    assert event_from(x, ["vm"], token, 0.3)["events"] == []


def test_object_subscription_and_inject(x):
    pool = x.pool.get_all()[0]
    host = x.host.get_all()[0]
    token = x.event.inject("pool", pool)
    batch = event_from(x, [f"pool/{pool}", f"host/{host}"], token, 1.0)
    assert [(e["class"], e["operation"], e["ref"]) for e in batch["events"]] == [("pool", "mod", pool)]
    with pytest.raises(XenAPI.Failure) as e:
        x.event.inject("pool", "OpaqueRef:nope")
    assert e.value.details == ["HANDLE_INVALID", "pool", "OpaqueRef:nope"]
    assert int(x.event.get_current_id()) >= int(token.split(",")[0])


def test_barrier_pattern(x):
    """Xen Orchestra's barrier: add a key to pool.other_config, then wait for the pool mod."""
    pool = x.pool.get_all()[0]
    token = event_from(x, ["pool"], "", 0.0)["token"]
    x.pool.add_to_other_config(pool, "xo:barrier:abc", "123")
    batch = event_from(x, ["pool"], token, 2.0)
    assert batch["events"][-1]["snapshot"]["other_config"]["xo:barrier:abc"] == "123"
    x.pool.remove_from_other_config(pool, "xo:barrier:abc")


def test_deleted_rows_report_del(xapi_daemon, x):
    token = event_from(x, ["session"], "", 0.0)["token"]
    other = xmlrpc.client.ServerProxy(xapi_daemon.url).session.login_with_password("root", xapi_daemon.password)["Value"]
    mid = event_from(x, ["session"], token, 1.0)
    assert [(e["operation"], e["ref"]) for e in mid["events"]] == [("add", other)]
    xmlrpc.client.ServerProxy(xapi_daemon.url).session.logout(other)
    after = event_from(x, ["session"], mid["token"], 1.0)
    assert [(e["operation"], e["ref"], "snapshot" in e) for e in after["events"]] == [("del", other, False)]
    # created and deleted inside the window: nothing
    tmp = xmlrpc.client.ServerProxy(xapi_daemon.url).session.login_with_password("root", xapi_daemon.password)["Value"]
    xmlrpc.client.ServerProxy(xapi_daemon.url).session.logout(tmp)
    assert all(e["ref"] != tmp for e in event_from(x, ["session"], after["token"], 0.2)["events"])


def test_bad_token_and_logout_wakes_poll(xapi_daemon):
    proxy = xmlrpc.client.ServerProxy(xapi_daemon.url)
    sid = proxy.session.login_with_password("root", xapi_daemon.password)["Value"]
    assert getattr(proxy.event, "from")(sid, ["vm"], "garbage", 0.1)["ErrorDescription"] == \
        ["EVENT_FROM_TOKEN_PARSE_FAILURE", "garbage"]
    token = getattr(proxy.event, "from")(sid, ["vm"], "", 0.0)["Value"]["token"]
    got = {}

    def poll():
        got["r"] = getattr(xmlrpc.client.ServerProxy(xapi_daemon.url).event, "from")(sid, ["vm"], token, 30.0)

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.3)
    proxy.session.logout(sid)
    t.join(5)
    assert got["r"]["ErrorDescription"] == ["SESSION_INVALID", sid]


def test_xmlrpc_types_in_event_batches(xapi_daemon, x):
    sid = xmlrpc.client.ServerProxy(xapi_daemon.url).session.login_with_password("root", xapi_daemon.password)["Value"]
    body = xmlrpc.client.dumps((sid, ["vm"], "", 0.0), "event.from").encode()
    raw = urllib.request.urlopen(urllib.request.Request(xapi_daemon.url, body, {"Content-Type": "text/xml"})).read()
    value = xmlrpc.client.loads(raw)[0][0]["Value"]
    assert type(value["valid_ref_counts"]["vm"]) is int            # <int>, as xapi sends it
    assert type(value["events"][0]["snapshot"]["memory_static_max"]) is str   # int64 as a string
    # and JSON-RPC keeps JSON integers
    req = json.dumps({"jsonrpc": "2.0", "method": "event.from", "params": [sid, ["vm"], "", 0.0], "id": 1}).encode()
    reply = json.loads(urllib.request.urlopen(urllib.request.Request(xapi_daemon.url + "jsonrpc", req)).read())
    assert type(reply["result"]["events"][0]["snapshot"]["memory_static_max"]) is int


def test_legacy_register_next(x):
    vm = dom0(x)
    with pytest.raises(XenAPI.Failure) as e:
        x.event.next()
    assert e.value.details[0] == "SESSION_NOT_REGISTERED"
    x.event.register(["vm"])
    x.VM.set_name_description(vm, "via next")
    events = x.event.next()
    assert any(ev["ref"] == vm and ev["operation"] == "mod" for ev in events)
    x.event.unregister(["vm"])


def wait_task(x, task, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = x.task.get_record(task)
        if rec["status"] != "pending":
            return rec
        time.sleep(0.02)
    raise AssertionError("task still pending")


def test_async_calls_make_tasks(xapi_daemon, x):
    vm = dom0(x)
    task = x.Async.VM.clean_reboot(vm)
    assert task.startswith("OpaqueRef:")
    rec = wait_task(x, task)
    assert rec["status"] == "failure" and rec["error_info"][0] in ("NOT_IMPLEMENTED", "VM_IS_CONTROL_DOMAIN",
                                                                   "OPERATION_NOT_ALLOWED")
    assert rec["name_label"] == "Async.VM.clean_reboot"
    x.task.destroy(task)
    assert task not in x.task.get_all()
    r = xmlrpc.client.ServerProxy(xapi_daemon.url).Async.VM.get_record(x._session if hasattr(x, "_session") else "", vm)
    assert r["Status"] == "Failure"


def test_async_forms_follow_xapis_flags(xapi_daemon, x):
    """Accessors and the calls xapi declares without `Async (pool.ha_compute_*) answer its Fault;
    other explicit calls give a task; a trailing parameter with a default may be left out."""
    raw = xmlrpc.client.ServerProxy(xapi_daemon.url)
    sid = raw.session.login_with_password("root", xapi_daemon.password)["Value"]
    pool = x.pool.get_all()[0]
    for name, args in (("Async.VM.get_record", (dom0(x),)),
                       ("Async.pool.ha_compute_max_host_failures_to_tolerate", ()),
                       ("Async.pool.enable_tls_verification", ())):
        r = getattr(raw, name)(sid, *args)
        assert r["Status"] == "Failure"
        assert r["ErrorDescription"] == ["Fault", f"No async mode for this operation (rpc: {name})"]
    task = x.Async.pool.sync_database()
    assert wait_task(x, task)["status"] == "success"
    client_task = x.task.create("t", "")
    canceller = x.Async.task.cancel(client_task)           # xapi gives task.cancel an Async form
    assert wait_task(x, canceller)["status"] == "success" and x.task.get_status(client_task) == "cancelling"
    blob = raw.pool.create_new_blob(sid, pool, "b", "text/plain")["Value"]     # public defaults to false
    assert x.blob.get_public(blob) is False and x.pool.get_blobs(pool)["b"] == blob
    raw.session.logout(sid)


def test_task_create_cancel_destroy(x):
    task = x.task.create("client task", "made by a test")
    rec = x.task.get_record(task)
    assert rec["status"] == "pending" and rec["name_label"] == "client task"
    x.task.cancel(task)
    assert x.task.get_status(task) == "cancelling"
    x.task.destroy(task)
    with pytest.raises(XenAPI.Failure) as e:
        x.task.get_record(task)
    assert e.value.details == ["HANDLE_INVALID", "task", task]
