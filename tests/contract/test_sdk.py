"""The official SDK (PyPI XenAPI) against the running daemon: logins over http, https and the
local socket, the first classes, and the errors xapi gives."""
import xmlrpc.client

import pytest
import XenAPI

from tests.fixtures import root_session


def sdk(d, url=None, **kw):
    s = XenAPI.Session(url or d.url, **kw)
    s.xenapi.login_with_password("root", d.password, "2.3", "pyxapi-tests")
    return s


session = root_session("xapi_daemon", scope="function", originator="pyxapi-tests")


def test_login_over_http_https_and_local_socket(xapi_daemon):
    for s in (sdk(xapi_daemon), sdk(xapi_daemon, xapi_daemon.https_url, ignore_ssl=True)):
        assert s._session.startswith("OpaqueRef:")
        assert len(s.xenapi.host.get_all()) == 1
        s.xenapi.session.logout()
    # XenAPI.xapi_local() talks HTTP over a Unix socket; callers there are root whatever they send
    uri = "http://" + xapi_daemon.socket_path.replace("/", "_") + "/"
    local = XenAPI.Session(uri, transport=XenAPI.UDSTransport())
    local.xenapi.login_with_password("root", "", "2.3", "local-test")
    assert local.xenapi.pool.get_all()
    local.xenapi.session.logout()


def test_api_version_reads_pool_master(session):
    assert session.API_version == "2.21"
    major = session.xenapi.host.get_API_version_major(session.xenapi.pool.get_master(session.xenapi.pool.get_all()[0]))
    assert major == "2"   # int64 travels as a string over XML-RPC


def test_pool_host_and_control_domain(session):
    x = session.xenapi
    (pool,) = x.pool.get_all()
    (host,) = x.host.get_all()
    assert x.pool.get_record(pool)["master"] == host
    assert list(x.pool.get_all_records()) == [pool]
    hrec = x.host.get_record(host)
    assert hrec["enabled"] is True and hrec["API_version_major"] == "2"
    assert x.host.get_by_uuid(hrec["uuid"]) == host
    dom0 = hrec["control_domain"]
    vms = x.VM.get_all_records()
    assert dom0 in vms and vms[dom0]["is_control_domain"] is True
    assert vms[dom0]["power_state"] == "Running" and vms[dom0]["resident_on"] == host
    assert x.VM.get_by_uuid(vms[dom0]["uuid"]) == dom0
    assert x.VM.get_record(dom0) == vms[dom0]
    assert dom0 in hrec["resident_VMs"]
    assert int(vms[dom0]["memory_static_max"]) > 0
    assert isinstance(vms[dom0]["snapshot_time"], xmlrpc.client.DateTime)


def test_wrong_password(xapi_daemon):
    s = XenAPI.Session(xapi_daemon.url)
    with pytest.raises(XenAPI.Failure) as e:
        s.xenapi.login_with_password("root", "not-the-password")
    assert e.value.details == ["SESSION_AUTHENTICATION_FAILED", "root", "Authentication failure"]
    with pytest.raises(XenAPI.Failure) as e:
        s.xenapi.login_with_password("nobody", xapi_daemon.password)
    assert e.value.details[0] == "SESSION_AUTHENTICATION_FAILED"


def raw(d, method, *params):
    """One call without the SDK's re-login, returning the XenAPI envelope."""
    return xmlrpc.client.ServerProxy(d.url, allow_none=True).__getattr__(method)(*params)


def test_login_arity(xapi_daemon):
    for args in [("root", xapi_daemon.password), ("root", xapi_daemon.password, "1.1"),
                 ("root", xapi_daemon.password, "1.1", "orig")]:
        r = raw(xapi_daemon, "session.login_with_password", *args)
        assert r["Status"] == "Success", r
        raw(xapi_daemon, "session.logout", r["Value"])
    assert raw(xapi_daemon, "session.login_with_password", "root")["ErrorDescription"] == \
        ["MESSAGE_PARAMETER_COUNT_MISMATCH", "session.login_with_password", "2", "1"]
    r = raw(xapi_daemon, "session.login_with_password", "root", "a", "b", "c", "d")
    assert r["ErrorDescription"][0] == "MESSAGE_PARAMETER_COUNT_MISMATCH"


def test_errors_with_xapi_parameters(xapi_daemon, session):
    sid = session._session
    assert raw(xapi_daemon, "VM.no_such_call", sid)["ErrorDescription"] == ["MESSAGE_METHOD_UNKNOWN", "VM.no_such_call"]
    assert raw(xapi_daemon, "VM.get_record", sid)["ErrorDescription"] == \
        ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_record", "1", "0"]
    assert raw(xapi_daemon, "VM.get_record", sid, "OpaqueRef:nope")["ErrorDescription"] == \
        ["HANDLE_INVALID", "VM", "OpaqueRef:nope"]
    assert raw(xapi_daemon, "host.get_by_uuid", sid, "nope")["ErrorDescription"] == ["UUID_INVALID", "host", "nope"]
    assert raw(xapi_daemon, "VM.get_all", "OpaqueRef:bogus")["ErrorDescription"] == \
        ["SESSION_INVALID", "OpaqueRef:bogus"]
    # the session is checked before the method is found unknown
    assert raw(xapi_daemon, "VM.no_such_call", "OpaqueRef:bogus")["ErrorDescription"] == \
        ["SESSION_INVALID", "OpaqueRef:bogus"]
    # Class_method aliases work (the SDK sends event_from this way)
    assert raw(xapi_daemon, "VM_get_all", sid)["Status"] == "Success"


def test_logout_invalidates(xapi_daemon):
    sid = raw(xapi_daemon, "session.login_with_password", "root", xapi_daemon.password)["Value"]
    assert raw(xapi_daemon, "session.logout", sid) == {"Status": "Success", "Value": ""}
    assert raw(xapi_daemon, "pool.get_all", sid)["ErrorDescription"] == ["SESSION_INVALID", sid]


def test_list_methods_is_a_bare_array(xapi_daemon):
    methods = xmlrpc.client.ServerProxy(xapi_daemon.url).system.listMethods()
    assert isinstance(methods, list)
    for m in ("VM.get_all_records", "host.get_API_version_major", "session.login_with_password",
              "pool.get_record", "VM.get_by_uuid"):
        assert m in methods
