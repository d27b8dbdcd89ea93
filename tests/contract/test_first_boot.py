"""A fresh daemon through the official SDK: the first-boot objects, filter expressions, and the generic
create/destroy with xapi's errors."""
import xmlrpc.client

from tests.fixtures import root_xenapi
from tests.helpers import failure


x = root_xenapi("xapi_daemon", scope="function", originator="pyxapi-tests")


def test_templates_through_a_filter_expression(x):
    templates = x.VM.get_all_records_where('field "is_a_template"="true"')
    names = {r["name_label"] for r in templates.values()}
    assert {"Other install media", "Debian Bookworm 12", "Ubuntu Jammy Jellyfish 22.04", "CentOS Stream 9",
            "Windows 10 (64-bit)", "Windows Server 2022 (64-bit)"} <= names
    assert all(r["is_a_template"] is True and r["is_default_template"] is True for r in templates.values())
    everything = x.VM.get_all_records()
    assert x.VM.get_all_records_where("true") == everything
    assert x.VM.get_all_records_where("false") == {}
    not_templates = x.VM.get_all_records_where('not field "is_a_template"="true"')
    assert set(not_templates) | set(templates) == set(everything)
    (dom0,) = x.VM.get_all_records_where('field "is_control_domain"="true" and field "domid"="0"')
    assert everything[dom0]["power_state"] == "Running"
    debian = x.VM.get_all_records_where('field "name__label"="Debian Bookworm 12"')
    assert list(debian.values())[0]["other_config"]["default_template"] == "true"
    assert x.VM.get_all_records_where('field "name_label"="Debian Bookworm 12"') == debian


def test_filter_expression_errors(xapi_daemon, x):
    assert failure(x.VM.get_all_records_where, 'field "is_a_template" <> "true"') == \
        ["INVALID_VALUE", 'field "is_a_template" <> "true"', 'Failure("lexing: empty token")']
    assert failure(x.VM.get_all_records_where, "true and") == \
        ["INVALID_VALUE", "true and", "Stdlib.Parsing.Parse_error"]
    assert failure(x.VM.get_all_records_where, 'field "nope"="1"') == \
        ["INTERNAL_ERROR", "missing field", "nope", ""]
    # and the daemon is still fine
    assert x.pool.get_all()


def test_network_pif_and_storage_drivers(x):
    (host,) = x.host.get_all()
    hrec = x.host.get_record(host)
    pifs = x.PIF.get_all_records_where('field "management"="true"')
    assert len(pifs) == 1
    (pif_ref, pif), = pifs.items()
    assert pif["device"] == "eth0" and pif["host"] == host and pif["VLAN"] == "-1"
    assert pif["IP"] == hrec["address"] and pif["currently_attached"] is True and pif["physical"] is True
    # the first boot scanned the host's other NICs too: unplugged PIFs on their bridges' networks
    others = {x.PIF.get_device(p): p for p in hrec["PIFs"] if p != pif_ref}
    assert sorted(others) == ["eth1", "eth2", "eth3"]
    for device, p in others.items():
        assert x.PIF.get_currently_attached(p) is False and x.PIF.get_management(p) is False
        assert x.network.get_bridge(x.PIF.get_network(p)) == "xenbr" + device[3:]
    net = x.network.get_record(pif["network"])
    assert net["bridge"] == "xenbr0" and net["name_label"] == "Pool-wide network associated with eth0"
    assert pif_ref in net["PIFs"]
    assert x.PIF_metrics.get_record(pif["metrics"])["carrier"] is True
    sms = {r["type"]: r for r in x.SM.get_all_records().values()}
    assert {"ext", "nfs", "iso", "udev"} <= set(sms)
    assert sms["nfs"]["features"]["VDI_RESET_ON_BOOT"] == "2"     # int64 over XML-RPC
    assert x.SM.get_all_records_where('field "type"="iso"').popitem()[1]["name_label"] == "ISO"
    dom0 = hrec["control_domain"]
    consoles = x.VM.get_consoles(dom0)
    assert sorted(x.console.get_protocol(c) for c in consoles) == ["rfb", "vt100"]


def test_network_create_and_destroy(x):
    ref = x.network.create({"name_label": "first-boot test", "name_description": "", "MTU": "1500",
                            "other_config": {"k": "v"}, "bridge": "fbtest0", "tags": []})
    try:
        rec = x.network.get_record(ref)
        assert rec["name_label"] == "first-boot test" and rec["MTU"] == "1500" and rec["other_config"] == {"k": "v"}
        assert x.network.get_by_uuid(rec["uuid"]) == ref
        assert ref in x.network.get_all_records_where('field "bridge"="fbtest0"')
        # a whole get_record is accepted: its runtime fields (uuid, PIFs, ...) are ignored (the bridge
        # must be new: xapi refuses a name in use, and names it xapi<N> when empty)
        copy = x.network.create({**rec, "bridge": ""})
        try:
            crec = x.network.get_record(copy)
            assert copy != ref and crec["uuid"] != rec["uuid"] and crec["name_label"] == rec["name_label"]
            assert crec["PIFs"] == [] and crec["VIFs"] == []
        finally:
            x.network.destroy(copy)
    finally:
        assert x.network.destroy(ref) == ""
    assert failure(x.network.get_record, ref) == ["HANDLE_INVALID", "network", ref]
    assert failure(x.network.destroy, ref) == ["HANDLE_INVALID", "network", ref]
    assert failure(x.network.destroy, "OpaqueRef:no-such") == ["HANDLE_INVALID", "network", "OpaqueRef:no-such"]


def test_create_with_a_missing_field(xapi_daemon, x):
    assert failure(x.network.create, {"name_label": "incomplete"}) == \
        ["INTERNAL_ERROR", 'Server_helpers.Dispatcher_FieldNotFound("other_config")']
    assert failure(x.network.create, {"other_config": {}, "MTU": "many"}) == ["FIELD_TYPE_ERROR", "MTU"]
    assert not x.network.get_all_records_where('field "name__label"="incomplete"')
    # the constructor takes one struct, and only a struct
    proxy = xmlrpc.client.ServerProxy(xapi_daemon.url)
    sid = proxy.session.login_with_password("root", xapi_daemon.password)["Value"]
    try:
        assert proxy.network.create(sid, "not a struct")["ErrorDescription"] == ["FIELD_TYPE_ERROR", "args"]
        assert proxy.network.create(sid)["ErrorDescription"] == \
            ["MESSAGE_PARAMETER_COUNT_MISMATCH", "network.create", "1", "0"]
    finally:
        proxy.session.logout(sid)


def test_jsonrpc_where_and_create(xapi_daemon, x):
    import json
    import urllib.request

    def call(method, *params):
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}).encode()
        req = urllib.request.Request(xapi_daemon.url + "jsonrpc", body, {"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req, timeout=10).read())

    sid = call("session.login_with_password", "root", xapi_daemon.password)["result"]
    try:
        r = call("SM.get_all_records_where", sid, 'field "type"="ext"')["result"]
        assert [v["type"] for v in r.values()] == ["ext"]
        ref = call("network.create", sid, {"other_config": {}, "name_label": "json"})["result"]
        assert call("network.get_MTU", sid, ref)["result"] == 1500
        assert call("network.destroy", sid, ref)["result"] == ""
        assert call("network.create", sid, {})["error"]["data"] == \
            ['Server_helpers.Dispatcher_FieldNotFound("other_config")']
    finally:
        call("session.logout", sid)
