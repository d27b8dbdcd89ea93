"""`Async.` forms exist exactly where xapi's datamodel gives them (default [`Session; `Async], none
for calls declared ~flags:[`Session]): sampled over the wire across storage, network, subject, VMSS and
the other classes; a missing one answers xapi's 'No async mode' Fault."""
import time
import xmlrpc.client

import pytest

from tests.fixtures import root_xenapi


x = root_xenapi("xapi_daemon", scope="function")


@pytest.fixture
def raw(xapi_daemon):
    proxy = xmlrpc.client.ServerProxy(xapi_daemon.url)
    sid = proxy.session.login_with_password("root", xapi_daemon.password)["Value"]
    yield proxy, sid
    proxy.session.logout(sid)


def settle(x, task, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = x.task.get_record(task)
        if rec["status"] != "pending":
            x.task.destroy(task)
            return rec
        time.sleep(0.02)
    raise AssertionError(f"task {task} still pending")


def ref_of(result):
    """A task's result is the XML-RPC <value> of the call's result, as xapi stores it."""
    assert result.startswith("<value>"), result
    return xmlrpc.client.loads(f"<params><param>{result}</param></params>")[0][0]


def test_calls_declared_without_async_answer_xapis_fault(x, raw):
    proxy, sid = raw
    sr = x.SR.get_all()[0]
    vdi = x.VDI.create({"SR": sr, "virtual_size": 1 << 20, "type": "user", "sharable": False, "read_only": False,
                        "other_config": {}, "name_label": "async-forms", "name_description": ""})
    vmss = x.VMSS.create({"name_label": "s", "name_description": "", "enabled": True, "type": "snapshot",
                          "retained_snapshots": 7, "frequency": "daily", "schedule": {}, "last_run_time": 0})
    subject = x.subject.get_all()
    role = x.role.get_all()[0]
    try:
        calls = [
            ("SR.get_supported_types", ()), ("SR.set_physical_size", (sr, "1")),
            ("SR.get_data_sources", (sr,)), ("SR.query_data_source", (sr, "x")),
            ("SR.record_data_source", (sr, "x")), ("SR.forget_data_source_archives", (sr, "x")),
            ("VDI.set_sharable", (vdi, True)), ("VDI.set_read_only", (vdi, True)),
            ("VDI.get_nbd_info", (vdi,)),
            ("VMSS.snapshot_now", (vmss,)), ("VMSS.set_frequency", (vmss, "hourly")),
            ("VMSS.set_retained_snapshots", (vmss, "3")), ("VMSS.set_type", (vmss, "checkpoint")),
            ("VMSS.add_to_schedule", (vmss, "min", "5")), ("VMSS.remove_from_schedule", (vmss, "min")),
            ("role.get_permissions", (role,)), ("auth.get_subject_identifier", ("nobody",)),
            ("VDI.get_record", (vdi,)), ("SR.add_to_other_config", (sr, "k", "v")),
        ]
        if subject:
            calls.append(("subject.add_to_roles", (subject[0], role)))
        for name, args in calls:
            wire = "Async." + name
            r = getattr(proxy, wire)(sid, *args)
            assert r["Status"] == "Failure", wire
            assert r["ErrorDescription"] == ["Fault", f"No async mode for this operation (rpc: {wire})"], wire
        # the fault changed nothing: the synchronous forms still see the old values
        assert x.VDI.get_sharable(vdi) is False and x.VMSS.get_frequency(vmss) == "daily"
        assert "k" not in x.SR.get_other_config(sr)
    finally:
        x.VMSS.destroy(vmss)
        x.VDI.destroy(vdi)


def test_calls_xapi_gives_an_async_form_run_as_tasks(x):
    sr = x.SR.get_all()[0]
    label = x.SR.get_name_label(sr)
    network = x.network.get_all()[0]
    pif = x.PIF.get_all()[0]
    rec = settle(x, x.Async.VDI.create({"SR": sr, "virtual_size": 1 << 20, "type": "user", "sharable": False,
                                          "read_only": False, "other_config": {}, "name_label": "a",
                                          "name_description": ""}))
    assert rec["status"] == "success", rec
    vdi = ref_of(rec["result"])
    try:
        for task in (x.Async.SR.set_name_label(sr, label), x.Async.SR.scan(sr),
                     x.Async.VDI.set_name_label(vdi, "renamed"), x.Async.VDI.set_name_description(vdi, "d"),
                     x.Async.network.set_default_locking_mode(network, x.network.get_default_locking_mode(network)),
                     x.Async.SR.assert_can_host_ha_statefile(sr), x.Async.PIF.plug(pif)):
            rec = settle(x, task)
            assert rec["status"] in ("success", "failure"), rec
            assert not rec["error_info"] or rec["error_info"][0] != "Fault", rec
        assert x.VDI.get_name_label(vdi) == "renamed" and x.VDI.get_name_description(vdi) == "d"
        clone = settle(x, x.Async.VDI.clone(vdi, {}))
        assert clone["status"] == "success", clone
        assert settle(x, x.Async.VDI.destroy(ref_of(clone["result"])))["status"] == "success"
        # an async call on a reference that does not exist fails its task with xapi's HANDLE_INVALID
        rec = settle(x, x.Async.VDI.set_on_boot("OpaqueRef:nope", "reset"))
        assert rec["status"] == "failure" and rec["error_info"][0] == "HANDLE_INVALID", rec
    finally:
        x.VDI.destroy(vdi)
