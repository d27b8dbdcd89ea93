"""message.* with the XenAPI SDK against a real daemon: create with xapi's checks, the reads, get and
get_since, destroy and destroy_many, the events they raise, messages kept across a restart, and the
messages the daemon raises itself after VM operations (names and priorities of api_messages.ml)."""
import json
import time
import urllib.request
import xmlrpc.client

from tests.fixtures import own_daemon, root_session, xenapi_of
from tests.helpers import failure, login, new_vm


host = own_daemon("--request-timeout", "10", env={"XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05"})
sdk = root_session("host")
x = xenapi_of("sdk")


def _ts(t):
    return xmlrpc.client.DateTime(time.strftime("%Y%m%dT%H:%M:%SZ", time.gmtime(t)))


def test_create_and_read(x):
    pool = x.pool.get_all()[0]
    pool_uuid = x.pool.get_uuid(pool)
    ref = x.message.create("TEST_ALERT", "3", "Pool", pool_uuid, "something happened")
    rec = x.message.get_record(ref)
    assert (rec["name"], rec["priority"], rec["cls"], rec["obj_uuid"], rec["body"]) == \
        ("TEST_ALERT", "3", "Pool", pool_uuid, "something happened")
    assert x.message.get_by_uuid(rec["uuid"]) == ref
    assert ref in x.message.get_all()
    assert x.message.get_all_records()[ref]["uuid"] == rec["uuid"]
    # xapi answers every message whatever the expression
    assert ref in x.message.get_all_records_where('field "name" = "nothing like it"')
    got = x.message.get("Pool", pool_uuid, _ts(time.time() - 60))
    assert list(got) == [ref] or ref in got
    assert x.message.get("Pool", pool_uuid, _ts(time.time() + 60)) == {}
    assert ref in x.message.get_since(_ts(time.time() - 60))
    assert ref not in x.message.get_since(_ts(time.time() + 60))


def test_create_checks_as_xapi(x):
    host_uuid = x.host.get_uuid(x.host.get_all()[0])
    assert failure(x.message.create, "A", "1", "VM", host_uuid, "b") == ["UUID_INVALID", "VM", host_uuid]
    assert failure(x.message.create, "A", "1", "Host", "nonsense", "b") == ["UUID_INVALID", "Host", "nonsense"]
    assert failure(x.message.create, "A", "1", "Nothing", host_uuid, "b")[0] == "FIELD_TYPE_ERROR"
    assert failure(x.message.get, "Host", "nonsense", _ts(0)) == ["UUID_INVALID"]
    assert failure(x.message.get_by_uuid, "nonsense") == ["UUID_INVALID", "message", "nonsense"]
    assert failure(x.message.get_record, "OpaqueRef:nope") == ["HANDLE_INVALID", "message", "OpaqueRef:nope"]
    assert failure(x.message.destroy, "OpaqueRef:nope") == ["HANDLE_INVALID", "message", "OpaqueRef:nope"]


def test_body_xml_cannot_carry_is_refused(host, sdk, x):
    # XML-RPC cannot even send such a body: JSON-RPC can, and xapi refuses it
    host_uuid = x.host.get_uuid(x.host.get_all()[0])
    req = {"jsonrpc": "2.0", "id": 1, "method": "message.create",
           "params": [sdk._session, "A", 1, "Host", host_uuid, "bad \x01 body"]}
    r = urllib.request.urlopen(urllib.request.Request(host.url.rstrip("/") + "/jsonrpc", json.dumps(req).encode(),
                                                      {"Content-Type": "application/json"}), timeout=10)
    answer = json.loads(r.read())
    assert answer["error"]["message"] == "INVALID_VALUE" and answer["error"]["data"] == ["UTF8 expected"]


def test_get_is_per_object_newest_first(x):
    host = x.host.get_all()[0]
    host_uuid = x.host.get_uuid(host)
    a = x.message.create("FIRST", "5", "Host", host_uuid, "1")
    b = x.message.create("SECOND", "5", "Host", host_uuid, "2")
    x.message.create("ELSEWHERE", "5", "Pool", x.pool.get_uuid(x.pool.get_all()[0]), "3")
    got = x.message.get("Host", host_uuid, _ts(0))
    assert {a, b} <= set(got)
    assert all(r["obj_uuid"] == host_uuid for r in got.values())
    order = list(got)
    assert order.index(b) < order.index(a)


def test_destroy_and_destroy_many_raise_events(x):
    host_uuid = x.host.get_uuid(x.host.get_all()[0])
    token = x.event_from(["message"], "", 0.0)["token"]
    refs = [x.message.create(f"M{i}", "4", "Host", host_uuid, "") for i in range(3)]
    batch = x.event_from(["message"], token, 5.0)
    added = {e["ref"] for e in batch["events"] if e["operation"] == "add"}
    assert set(refs) <= added
    snap = next(e["snapshot"] for e in batch["events"] if e["ref"] == refs[0])
    assert snap["name"] == "M0"
    x.message.destroy(refs[0])
    assert refs[0] not in x.message.get_all()
    # stops at the first unknown message: the ones before it are gone, the ones after it stay
    assert failure(x.message.destroy_many, [refs[1], "OpaqueRef:nope", refs[2]])[0] == "HANDLE_INVALID"
    assert refs[1] not in x.message.get_all() and refs[2] in x.message.get_all()
    x.message.destroy_many([refs[2]])
    batch = x.event_from(["message"], batch["token"], 5.0)
    assert set(refs) <= {e["ref"] for e in batch["events"] if e["operation"] == "del"}


def test_lifecycle_raises_xapis_messages(x):
    vm = new_vm(x, "alerted")
    uuid = x.VM.get_uuid(vm)
    x.VM.start(vm, False, False)
    x.VM.clean_reboot(vm)
    x.VM.hard_shutdown(vm)
    got = sorted(x.message.get("VM", uuid, _ts(0)).values(), key=lambda r: r["name"])
    host = x.host.get_all()[0]
    assert [(r["name"], r["priority"], r["body"]) for r in got] == [
        ("VM_REBOOTED", "5", "VM 'alerted' rebooted cleanly"),
        ("VM_SHUTDOWN", "5", "VM 'alerted' shutdown forcibly"),
        ("VM_STARTED", "5", f"VM 'alerted' started on host: {x.host.get_name_label(host)} "
                            f"(uuid: {x.host.get_uuid(host)})"),
    ]
    x.VM.destroy(vm)


def test_messages_survive_a_restart(fresh_daemon):
    d = fresh_daemon()
    s = login(d)
    host_uuid = s.xenapi.host.get_uuid(s.xenapi.host.get_all()[0])
    ref = s.xenapi.message.create("KEPT", "2", "Host", host_uuid, "<body> & more")
    rec = s.xenapi.message.get_record(ref)
    d.stop()
    d2 = fresh_daemon(data_dir=d.data_dir)
    s2 = login(d2)
    assert s2.xenapi.message.get_record(ref) == rec
    s2.xenapi.message.destroy(ref)
    assert s2.xenapi.message.get_all() == []
