"""The SMAPIv1 executor (xapi.sm.exec) against small drivers written here, the VDI automaton and the
access layer (xapi.sm.access) against a fake storage layer, and the driver side (xapi.sm.driverlib)."""
import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import xmlrpc.client

import pytest

from xapi.datamodel.errors import XapiError
from xapi.db.schema import insert, new_database
from xapi.sm import access as acc
from xapi.sm import driverlib
from xapi.sm.exec import DRIVERS_DIR, Call, Executor, NotImplementedInBackend

INFO = ('{"name": "t", "description": "test driver", "vendor": "tests", "copyright": "", '
        '"driver_version": "1.0", "required_api_version": "1.0", '
        '"capabilities": ["VDI_CREATE", "VDI_RESET_ON_BOOT/2"], '
        '"configuration": [{"key": "path", "description": "a folder"}]}')

# A driver whose behaviour the request chooses: device_config "mode".
PY_DRIVER = f'''#!/usr/bin/env python3
import json, os, sys, time, xmlrpc.client
params, method = xmlrpc.client.loads(sys.argv[1])
req = params[0]
def answer(v):
    sys.stdout.write(xmlrpc.client.dumps((v,), methodresponse=True, allow_none=True))
if method == "sr_get_driver_info":
    answer(json.loads({INFO!r})); sys.exit(0)
mode = req["device_config"].get("mode", "echo")
sys.stderr.write("mode " + mode + "\\n")
if mode == "echo":
    answer({{"method": method, "argc": len(sys.argv), "req": req, "originator": os.environ.get("ORIGINATOR", "")}})
elif mode == "garbage":
    print("<html>not XML-RPC</html>")
elif mode == "empty":
    pass
elif mode == "crash":
    print("half an answer"); sys.exit(3)
elif mode == "signal":
    os.kill(os.getpid(), 9)
elif mode == "hang":
    time.sleep(60)
elif mode == "sleep":
    time.sleep(0.3); answer(None)
elif mode == "fault":
    sys.stdout.write(xmlrpc.client.dumps(xmlrpc.client.Fault(int(req["args"][0]), "reason " + req["args"][0]),
                                         methodresponse=True))
'''

SH_DRIVER = """#!/bin/sh
case "$1" in
  *sr_get_driver_info*) printf '%s' "<?xml version='1.0'?><methodResponse><params><param><value><struct>\
<member><name>name</name><value>sh</value></member><member><name>description</name><value>d</value></member>\
<member><name>vendor</name><value>v</value></member><member><name>copyright</name><value>c</value></member>\
<member><name>driver_version</name><value>2.0</value></member>\
<member><name>required_api_version</name><value>1.0</value></member>\
<member><name>capabilities</name><value><array><data><value>SR_PROBE</value></data></array></value></member>\
<member><name>configuration</name><value><array><data></data></array></value></member>\
</struct></value></param></params></methodResponse>" ;;
  *) echo "shell says hello" ;;
esac
"""


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def drivers(tmp_path):
    d = tmp_path / "drivers"
    d.mkdir()
    _write(d / "testSR", PY_DRIVER)
    _write(d / "shSR", SH_DRIVER)
    _write(d / "notadriver", PY_DRIVER)                    # no SR suffix
    (d / "plainSR").write_text("not executable")           # not executable
    return d


def run(coro):
    return asyncio.run(coro)


def call(ex, mode, command="sr_probe", **kw):
    return run(ex.run("test", Call(command, device_config={"mode": mode}, **kw)))


@pytest.fixture
def ex(drivers):
    e = Executor(str(drivers), socket_path="/nonexistent", data_dir="/tmp", timeout=5)
    run(e.scan())
    return e


def test_scan_finds_executable_sr_files_only(ex):
    assert sorted(ex.drivers) == ["sh", "test"]
    t = ex.drivers["test"]
    assert t.name == "t" and t.version == "1.0" and t.configuration == {"path": "a folder"}
    assert t.features == {"VDI_CREATE": 1, "VDI_RESET_ON_BOOT": 2}
    row = t.sm_row()
    assert row["capabilities"] == ["VDI_CREATE", "VDI_RESET_ON_BOOT"] and row["type"] == "test"
    assert row["driver_filename"].endswith("/testSR")
    assert ex.drivers["sh"].version == "2.0"


def test_the_request_is_one_struct_argument(ex):
    v = call(ex, "echo", "vdi_attach", args=["true", 5], sr_ref="OpaqueRef:sr", sr_uuid="u", vdi_ref="OpaqueRef:v",
             vdi_location="loc", vdi_sm_config={"k": "v"}, driver_params={"type": "single"}, host_ref="OpaqueRef:h")
    assert v["method"] == "vdi_attach" and v["argc"] == 2 and v["originator"] == "SM"
    req = v["req"]
    assert req["command"] == "vdi_attach" and req["args"] == ["true", "5"]
    assert req["device_config"] == {"mode": "echo"} and req["host_ref"] == "OpaqueRef:h"
    assert req["vdi_location"] == "loc" and req["vdi_sm_config"] == {"k": "v"}
    assert req["driver_params"] == {"type": "single"} and "session_ref" not in req
    assert "new_uuid" not in req                            # absent fields are left out, as xapi does


def test_garbage_and_crashes_are_backend_failures(ex):
    with pytest.raises(XapiError) as e:
        call(ex, "garbage")
    code, status, out, err = e.value.args
    assert code == "SR_BACKEND_FAILURE" and "<html>not XML-RPC</html>" in out and "mode garbage" in err
    with pytest.raises(XapiError) as e:
        call(ex, "empty")
    assert e.value.args[0] == "SR_BACKEND_FAILURE" and e.value.args[2] == ""
    with pytest.raises(XapiError) as e:
        call(ex, "crash")
    assert list(e.value.args) == ["SR_BACKEND_FAILURE", "non-zero exit", "half an answer\n", "mode crash\n"]
    with pytest.raises(XapiError) as e:
        call(ex, "signal")
    assert e.value.args[:2] == ("SR_BACKEND_FAILURE", "received signal: sigkill")
    with pytest.raises(XapiError) as e:
        run(ex.run("sh", Call("sr_probe")))
    assert e.value.args[:3] == ("SR_BACKEND_FAILURE", e.value.args[1], "shell says hello\n")


def test_a_hanging_driver_times_out_and_is_killed(drivers):
    e = Executor(str(drivers), timeout=0.5)
    run(e.scan())
    t0 = time.monotonic()
    with pytest.raises(XapiError) as err:
        run(e.run("test", Call("sr_probe", device_config={"mode": "hang"})))
    assert time.monotonic() - t0 < 4
    assert err.value.args[:2] == ("SR_BACKEND_FAILURE", "timed out after 0.5s")
    out = subprocess.run(["pgrep", "-af", "testSR"], capture_output=True, text=True).stdout
    assert str(drivers) not in out


@pytest.mark.parametrize("code,expected", [
    (39, ("SR_NOT_EMPTY",)), (24, ("VDI_IN_USE",)), (16, ("SR_DEVICE_IN_USE",)),
    (144, ("VDI_MISSING", "OpaqueRef:sr", "OpaqueRef:vdi")),
    (44, ("SR_BACKEND_FAILURE_44", "", "reason 44", "mode fault\n")),
])
def test_faults_map_as_xapi_maps_them(ex, code, expected):
    with pytest.raises(XapiError) as e:
        call(ex, "fault", "vdi_delete", args=[code], sr_ref="OpaqueRef:sr", vdi_ref="OpaqueRef:vdi")
    assert e.value.args == expected


def test_fault_38_is_not_implemented(ex):
    with pytest.raises(NotImplementedInBackend):
        call(ex, "fault", args=[38])


def test_concurrency_is_bounded(drivers):
    e = Executor(str(drivers), concurrency=2, timeout=10)
    run(e.scan())

    async def many():
        t0 = time.monotonic()
        await asyncio.gather(*(e.run("test", Call("sr_probe", device_config={"mode": "sleep"})) for _ in range(4)))
        return time.monotonic() - t0
    assert run(many()) >= 0.55


def test_a_session_is_made_for_each_call(drivers):
    made = []
    import contextlib

    @contextlib.asynccontextmanager
    async def session(sr_ref):
        made.append(sr_ref)
        yield f"OpaqueRef:session-{len(made)}"
    e = Executor(str(drivers), session=session)
    run(e.scan())                                           # driver info: no session
    assert made == []
    v = run(e.run("test", Call("sr_scan", device_config={"mode": "echo"}, sr_ref="OpaqueRef:sr")))
    assert made == ["OpaqueRef:sr"] and v["req"]["session_ref"] == "OpaqueRef:session-1"


def test_new_and_removed_drivers_follow_the_folder(ex, drivers):
    shutil.copy(drivers / "testSR", drivers / "newerSR")
    assert "newer" in run(ex.scan())
    os.unlink(drivers / "shSR")
    assert sorted(run(ex.scan())) == ["newer", "test"]
    with pytest.raises(XapiError) as e:
        ex.driver("sh")
    assert e.value.args == ("SR_UNKNOWN_DRIVER", "sh")


def test_closed_executor_kills_running_drivers(drivers):
    e = Executor(str(drivers), timeout=30)

    async def go():
        await e.scan()
        task = asyncio.ensure_future(e.run("test", Call("sr_probe", device_config={"mode": "hang"})))
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        e.close()
        with pytest.raises(XapiError) as err:
            await task
        return time.monotonic() - t0, err.value.args[1]
    took, status = run(go())
    assert took < 3 and status == "received signal: sigkill"


def test_builtin_drivers_answer_driver_info():
    e = Executor(DRIVERS_DIR)
    found = run(e.scan())
    assert {"ext", "nfs", "iso", "udev"} <= set(found)
    assert found["ext"].has("VDI_SNAPSHOT") and found["ext"].features["VDI_RESET_ON_BOOT"] == 2
    assert "path" in found["ext"].configuration and not found["iso"].has("VDI_SNAPSHOT")


# -- the driver side --------------------------------------------------------------------------------
def test_driverlib_answers_faults_with_sm_codes(capsys):
    class D(driverlib.Driver):
        def sr_scan(self):
            raise driverlib.SMError("SRUnavailable", "no such directory /x")

        def sr_update(self):
            raise RuntimeError("boom")
    req = xmlrpc.client.dumps(({"command": "sr_scan", "args": [], "device_config": {}},), "sr_scan")
    assert driverlib.run(D, ["x", req]) == 0
    with pytest.raises(xmlrpc.client.Fault) as f:
        xmlrpc.client.loads(capsys.readouterr().out)
    assert f.value.faultCode == 47 and f.value.faultString == "The SR is not available [opterr=no such directory /x]"
    driverlib.run(D, ["x", req.replace("sr_scan", "sr_update")])
    with pytest.raises(xmlrpc.client.Fault) as f:
        xmlrpc.client.loads(capsys.readouterr().out)
    assert f.value.faultCode == 202 and "boom" in f.value.faultString
    driverlib.run(D, ["x", req.replace("sr_scan", "vdi_frobnicate")])
    with pytest.raises(xmlrpc.client.Fault) as f:
        xmlrpc.client.loads(capsys.readouterr().out)
    assert f.value.faultCode == 38
    driverlib.run(D, ["x", "<not xml"])
    with pytest.raises(xmlrpc.client.Fault) as f:
        xmlrpc.client.loads(capsys.readouterr().out)
    assert f.value.faultCode == 143


# -- the VDI automaton ----------------------------------------------------------------------------------
def test_automaton_as_xapi():
    P = acc.plus
    assert P("detached", "attach", True) == "attached RW"
    assert P("attached RW", "attach", False) == "attached RW"          # RW + RO stays RW
    with pytest.raises(acc.IllegalTransition):
        P("attached RO", "attach", True)
    with pytest.raises(acc.IllegalTransition):
        P("detached", "activate")
    with pytest.raises(acc.IllegalTransition):
        P("activated RW", "detach")
    assert P("activated RO", "deactivate") == "attached RO" and P("detached", "detach") == "detached"
    assert acc.superstate([]) == "detached"
    assert acc.superstate(["attached RO", "activated RO"]) == "activated RO"
    assert acc.superstate(["attached RW", "activated RO"]) == "activated RW"
    T = acc.transitions
    assert T("activated RW", "detached") == ["deactivate", "detach"]
    assert T("detached", "activated RO") == ["attach", "activate"]
    assert T("attached RO", "attached RO") == []
    with pytest.raises(acc.IllegalTransition):
        T("attached RO", "attached RW")


# -- the access layer, against a fake storage layer ------------------------------------------------
class FakeApp:
    def __init__(self):
        self.db = new_database()
        self.host_ref = insert(self.db, "host", name_label="h")
        self.sr = insert(self.db, "SR", name_label="sr", type="ext")
        self.vdi = insert(self.db, "VDI", SR=self.sr, location="loc1", virtual_size=1, managed=True)
        self.vdi2 = insert(self.db, "VDI", SR=self.sr, location="loc2", virtual_size=1, read_only=True)


class FakeStorage:
    def __init__(self, app):
        self.app = app
        self.calls = []
        self.fail = set()

    async def vdi_command(self, vdi, command, args=()):
        if command in self.fail:
            raise XapiError("SR_BACKEND_FAILURE_46", "", "fail", "")
        self.calls.append((command, self.app.db.table("VDI").get_field(vdi, "location"), list(args)))
        return {"params": f"/dev/{vdi}", "format": "vhd"} if command == "vdi_attach" else None

    def has_capability(self, vdi, cap):
        return True

    def vdi_ref_by_uuid(self, uuid):
        refs = self.app.db.table("VDI").find("uuid", uuid)
        return refs[0] if refs else None

    async def orphan_release(self, entry):
        self.calls.append(("vdi_detach", entry["location"], []))


def test_access_calls_the_driver_only_on_superstate_changes(tmp_path):
    app = FakeApp()
    st = FakeStorage(app)
    path = str(tmp_path / "access.json")

    async def go():
        a = acc.Access(st, path)
        info = await a.attach("vbd/1/xvda", app.vdi, False)
        assert info["params"] == f"/dev/{app.vdi}"
        await a.attach("copy/x", app.vdi, False)
        await a.activate("vbd/1/xvda", app.vdi)
        await a.activate("copy/x", app.vdi)
        with pytest.raises(XapiError) as e:
            await a.attach("vbd/2/xvda", app.vdi, True)              # RO held: no RW
        assert e.value.args[0] == "INTERNAL_ERROR"
        assert app.db.table("VDI").get_field(app.vdi, "other_config") == {}
        await a.release("copy/x", app.vdi)
        assert a.in_use(app.db.table("VDI").get_field(app.vdi, "uuid"))
        await a.release("vbd/1/xvda", app.vdi)
        await a.detach("vbd/1/xvda", app.vdi)                        # again: nothing to do
        return a
    a = run(go())
    assert [c[0] for c in st.calls] == ["vdi_attach", "vdi_activate", "vdi_deactivate", "vdi_detach"]
    assert st.calls[0][2] == ["false"]
    assert "content_id" in app.db.table("VDI").get_field(app.vdi, "other_config")   # deactivate: a fresh one
    assert a.vdis == {} and json.load(open(path))["vdis"] == {}


def test_access_persists_each_side_effect_once_before_the_next(tmp_path):
    """One atomic save per driver call, made before the next driver call relies on it: at each call
    the file on disk already holds the state the previous call produced (with the datapath's own
    state); a change that calls no driver saves once, a change that changes nothing not at all."""
    app = FakeApp()
    path = str(tmp_path / "access.json")
    seen = {}

    class Recording(FakeStorage):
        async def vdi_command(self, vdi, command, args=()):
            with open(path) as f:
                seen[command] = json.load(f)["vdis"] if command != "vdi_attach" else None
            return await super().vdi_command(vdi, command, args)

    st = Recording(app)
    uuid = app.db.table("VDI").get_field(app.vdi, "uuid")

    async def go():
        a = acc.Access(st, path)
        writes = []
        write = a._write
        a._write = lambda text: (writes.append(json.loads(text)), write(text))[1]
        with open(path, "w") as f:
            f.write('{"version": 1, "vdis": {}}')
        await a.attach("export/1", app.vdi, True)
        await a.activate("export/1", app.vdi)
        assert len(writes) == 2 and writes[-1]["vdis"][uuid]["dps"] == {"export/1": "activated RW"}
        await a.attach("vbd/1/xvda", app.vdi, False)                 # no driver call: one save
        assert len(writes) == 3 and writes[-1]["vdis"][uuid]["dps"]["vbd/1/xvda"] == "attached RO"
        await a.attach("vbd/1/xvda", app.vdi, False)                 # nothing changes: no save
        await a.detach("vbd/9/xvda", app.vdi)
        assert len(writes) == 3
        await a.detach("vbd/1/xvda", app.vdi)
        await a.release("export/1", app.vdi)
        assert len(writes) == 6 and writes[-1]["vdis"] == {}
    run(go())
    assert [c[0] for c in st.calls] == ["vdi_attach", "vdi_activate", "vdi_deactivate", "vdi_detach"]
    assert seen["vdi_activate"][uuid]["state"] == "attached RW"
    assert seen["vdi_activate"][uuid]["dps"] == {"export/1": "attached RW"}
    assert seen["vdi_deactivate"][uuid]["state"] == "activated RW"
    assert seen["vdi_detach"][uuid]["state"] == "attached RW"


def test_access_read_only_and_other_hosts(tmp_path):
    app = FakeApp()
    st = FakeStorage(app)

    async def go():
        a = acc.Access(st, str(tmp_path / "a.json"))
        with pytest.raises(XapiError) as e:
            await a.attach("dp", app.vdi2, True)
        assert e.value.args == ("VDI_READONLY", app.vdi2)
        vdis = app.db.table("VDI")
        vdis.set_field(app.vdi, "sm_config", {"host_OpaqueRef:other": "RO"})
        await a.attach("dp", app.vdi, True)
        with pytest.raises(XapiError) as e:
            await a.activate("dp", app.vdi)                           # RW while another host reads
        assert e.value.args == ("VDI_IN_USE", app.vdi, "activate")
        await a.detach("dp", app.vdi)
        await a.attach("dp", app.vdi, False)
        await a.activate("dp", app.vdi)                               # RO beside RO: fine
        await a.release("dp", app.vdi)
    run(go())


def test_access_state_survives_a_restart(tmp_path):
    app = FakeApp()
    path = str(tmp_path / "access.json")
    st1 = FakeStorage(app)
    run(acc.Access(st1, path).attach("vbd/3/xvdb", app.vdi, True))
    run(_activate(acc.Access(st1, path), "vbd/3/xvdb", app.vdi))        # a restart in between: no new attach
    assert [c[0] for c in st1.calls] == ["vdi_attach", "vdi_activate"]
    st2 = FakeStorage(app)
    a = acc.Access(st2, path)
    assert a.state(app.db.table("VDI").get_field(app.vdi, "uuid")) == "activated RW"
    run(a.attach("vbd/3/xvdb", app.vdi, True))                          # idempotent
    run(a.release("vbd/3/xvdb", app.vdi))
    assert [c[0] for c in st2.calls] == ["vdi_deactivate", "vdi_detach"]


async def _activate(a, dp, vdi):
    return await a.activate(dp, vdi)


def test_reconcile_releases_transient_and_leaked_datapaths_once(tmp_path):
    app = FakeApp()
    path = str(tmp_path / "access.json")
    st = FakeStorage(app)

    async def before():
        a = acc.Access(st, path)
        await a.attach("copy/1", app.vdi, False)
        await a.activate("copy/1", app.vdi)
        await a.attach("vbd/4/xvda", app.vdi2, False)
        st.fail.add("vdi_detach")
        await a.destroy_dp("vbd/4/xvda", allow_leak=True)              # fails: remembered as leaked
    run(before())
    uuid2 = app.db.table("VDI").get_field(app.vdi2, "uuid")
    assert json.load(open(path))["vdis"][uuid2]["leaked"] == ["vbd/4/xvda"]
    st2 = FakeStorage(app)
    a = acc.Access(st2, path)
    run(a.reconcile())
    assert sorted(st2.calls) == [("vdi_deactivate", "loc1", []), ("vdi_detach", "loc1", []),
                                 ("vdi_detach", "loc2", [])]
    assert a.vdis == {}
    run(acc.Access(st2, path).reconcile())
    assert len(st2.calls) == 3


# -- the drivers' own XML-RPC (xapi.sm.smrpc) against xmlrpc.client --------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as hst  # noqa: E402

from xapi.sm import smrpc  # noqa: E402

_texts = hst.text(hst.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
                  max_size=20)                   # what XML 1.0 text can hold
_values = hst.recursive(
    hst.none() | hst.booleans() | hst.integers(smrpc.MININT, smrpc.MAXINT) | _texts
    | hst.floats(allow_nan=False, allow_infinity=False),
    lambda inner: hst.lists(inner, max_size=4) | hst.dictionaries(_texts, inner, max_size=4),
    max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(value=_values, method=hst.from_regex(r"[A-Za-z_.]{1,20}", fullmatch=True))
def test_smrpc_agrees_with_xmlrpc_client(value, method):
    """What smrpc writes, xmlrpc.client reads as the same value, and the other way round
    (requests, responses, faults)."""
    sent = ("OpaqueRef:s", value)
    assert xmlrpc.client.loads(smrpc.dumps_call(method, sent, allow_none=True)) == (sent, method)
    assert xmlrpc.client.loads(smrpc.dumps_response(value)) == ((value,), None)
    assert smrpc.loads(xmlrpc.client.dumps(sent, method, allow_none=True)) == (sent, method)
    assert smrpc.loads(xmlrpc.client.dumps((value,), methodresponse=True, allow_none=True)) == ((value,), None)


def test_smrpc_faults_and_bad_input():
    with pytest.raises(xmlrpc.client.Fault) as e:
        xmlrpc.client.loads(smrpc.dumps_fault(44, "no <space> & more"))
    assert (e.value.faultCode, e.value.faultString) == (44, "no <space> & more")
    with pytest.raises(smrpc.Fault) as f:
        smrpc.loads(xmlrpc.client.dumps(xmlrpc.client.Fault(24, "in use"), methodresponse=True))
    assert (f.value.faultCode, f.value.faultString) == (24, "in use")
    assert smrpc.loads("<methodResponse><params><param><value>bare</value></param></params>"
                       "</methodResponse>") == (("bare",), None)
    for bad in ("", "<methodCall>", "not xml", "<params><param><value><struct><value>x</value>"
                "</struct></value></param></params>"):
        with pytest.raises(ValueError):
            smrpc.loads(bad)
    with pytest.raises(OverflowError):
        smrpc.dumps_response(2 ** 40)
    with pytest.raises(TypeError):
        smrpc.dumps_call("m", (None,))
    # a driver answering a malformed request: a BadRequest fault, exit 0
    out = subprocess.run([sys.executable, os.path.join(DRIVERS_DIR, "extSR"), "<methodCall>"],
                         capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(DRIVERS_DIR))))
    assert out.returncode == 0
    with pytest.raises(xmlrpc.client.Fault) as e:
        xmlrpc.client.loads(out.stdout)
    assert e.value.faultCode == 143


PID_DRIVER = '''#!/usr/bin/env python3
import os, sys, xmlrpc.client
params, method = xmlrpc.client.loads(sys.argv[1])
sys.stdout.write(xmlrpc.client.dumps(({"pid": os.getpid(), "sid": os.getsid(0), "argv": sys.argv[1:2] == [sys.argv[1]],
    "env": os.environ.get("XAPI_SOCKET", ""), "stdin": sys.stdin.read()},), methodresponse=True))
'''


@pytest.mark.parametrize("fork", ["1", "0"])
def test_each_call_is_its_own_process(tmp_path, monkeypatch, fork):
    """Forked from the warm server (default) or started afresh (XAPI_SM_FORK=0): every call is a new
    process leading its own session (the group killed on timeout), with the request as its argument,
    the executor's environment and an empty stdin."""
    monkeypatch.setenv("XAPI_SM_FORK", fork)
    _write(tmp_path / "pidSR", PID_DRIVER)
    e = Executor(str(tmp_path), socket_path="/run/x.sock", timeout=10)

    async def go():
        return await asyncio.gather(*(e.call(str(tmp_path / "pidSR"), Call("sr_probe"), needs_session=False)
                                      for _ in range(3)))
    try:
        seen = run(go())
    finally:
        e.close()
    assert len({v["pid"] for v in seen}) == 3 and os.getpid() not in {v["pid"] for v in seen}
    assert all(v["sid"] == v["pid"] and v["argv"] and v["env"] == "/run/x.sock" and v["stdin"] == ""
               for v in seen)
    assert (e._forks is not None and e._forks.proc is not None) == (fork == "1")


def test_a_dead_fork_server(ex):
    """The fork server killed while a driver runs: that driver is killed and its call fails as a
    backend failure; the next calls start drivers afresh."""
    async def go():
        task = asyncio.ensure_future(ex.run("test", Call("sr_probe", device_config={"mode": "hang"})))
        await asyncio.sleep(0.5)
        os.kill(ex._forks.proc.pid, 9)
        with pytest.raises(XapiError) as err:
            await task
        after = await ex.run("test", Call("sr_probe", device_config={"mode": "echo"}))
        return err.value.args, after
    (code, status, _, _), after = run(go())
    assert code == "SR_BACKEND_FAILURE" and status == "received signal: sigkill"
    assert after["method"] == "sr_probe" and ex._forks.broken


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def test_calls_one_after_another_run_in_warm_spares(tmp_path):
    """The fork server keeps one child forked and warmed ahead of the next request (a spare): calls
    one after another are each still a new process leading its own session, with their own request,
    environment and empty stdin; spares that never ran anything are not reported as drivers' ends,
    and the server's end takes its spare with it."""
    _write(tmp_path / "pidSR", PID_DRIVER)
    e = Executor(str(tmp_path), socket_path="/run/spare.sock", timeout=10)

    async def go():
        seen = []
        for i in range(4):
            seen.append(await e.call(str(tmp_path / "pidSR"), Call("sr_probe", args=[str(i)]), needs_session=False))
            await asyncio.sleep(0.2)        # time for the next spare to be forked and warmed
        return seen, dict(e._forks._early), dict(e._forks._exits), e._forks.proc.pid
    try:
        seen, early, exits, server = run(go())
        spares = _children(server)
        assert len(spares) == 1             # the next one, waiting
    finally:
        e.close()
    assert len({v["pid"] for v in seen}) == 4 and server not in {v["pid"] for v in seen}
    assert all(v["sid"] == v["pid"] and v["argv"] and v["env"] == "/run/spare.sock" and v["stdin"] == ""
               for v in seen)
    assert early == {} and exits == {}
    assert _gone(spares[0]), f"the spare {spares[0]} outlived its server"


def _gone(pid, timeout=10.0):
    """Whether the process ends (or is a zombie) within the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[-1].split()[0] == "Z":
                    return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("mode, code", [("echo", 0), ("crash", 3), ("signal", -9)])
def test_a_drivers_exit_code_on_its_status_pipe_agrees_with_the_server(drivers, mode, code):
    """A forked driver writes its exit code on its status pipe as it exits (the executor needn't wait
    for the exit's teardown and the server's report); the server's report, which a driver killed by
    a signal leaves as the only one, says the same."""
    e = Executor(str(drivers), socket_path="/nonexistent", timeout=10)
    path = str(drivers / "testSR")
    request = Call("sr_probe", device_config={"mode": mode}).request()

    async def go():
        proc = await e._forks.spawn(path, [sys.executable, path, request], e._env())
        await asyncio.gather(proc.stdout.read(), proc.stderr.read())
        first = await asyncio.wait_for(proc.wait(), 10)
        server = await asyncio.wait_for(asyncio.shield(proc._done), 10)
        return first, server
    try:
        first, server = run(go())
    finally:
        e.close()
    assert first == server == code
