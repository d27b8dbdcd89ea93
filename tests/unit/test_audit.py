"""The audit log: secrets masked, one readable line per call, size-based rotation off the event loop,
and the RPC layer's hook (writes and denials logged, reads not)."""
import asyncio
import calendar
import json
import os
import re
import time
from types import SimpleNamespace

import pytest

from xapi import audit
from xapi.audit import MASK, AuditLog, is_audited, is_secret_name, line, mask

LINE = re.compile(r'^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) user=("(?:[^"\\]|\\.)*") from=(\S+) call=(\S+) '
                  r'args=(\{.*\}) result=(OK|ERROR \S+|DENIED \S+)$')


def parse(text: str) -> dict:
    m = LINE.match(text)
    assert m, text
    t, user, peer, call, args, result = m.groups()
    return dict(time=t, user=json.loads(user), peer=peer, call=call, args=json.loads(args), result=result)


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


# -- masking ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["pwd", "password", "new_pwd", "old_pwd", "master_password", "pool_secret",
                                  "private_key", "cifs-password", "Password", "pass", "ldap_pass"])
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["uname", "name_label", "value", "key", "self", "passthrough", "host"])
def test_plain_names(name):
    assert not is_secret_name(name)


def test_login_password_masked():
    args = mask("session", ["uname", "pwd", "version", "originator"], ["root", "hunter2", "1.0", "xo"])
    assert args == {"uname": "root", "pwd": MASK, "version": "1.0", "originator": "xo"}


def test_change_password_masks_both():
    assert mask("session", ["old_pwd", "new_pwd"], ["a", "b"]) == {"old_pwd": MASK, "new_pwd": MASK}


def test_secret_value_masked_in_secret_class_only():
    assert mask("secret", ["self", "value"], ["OpaqueRef:s", "s3cret"]) == {"self": "OpaqueRef:s", "value": MASK}
    assert mask("secret", ["args"], [{"value": "s3cret", "other_config": {}}]) == \
        {"args": {"value": MASK, "other_config": {}}}
    assert mask("VM", ["self", "value"], ["OpaqueRef:v", "web"]) == {"self": "OpaqueRef:v", "value": "web"}


def test_map_values_with_password_keys_masked_recursively():
    record = {"name_label": "sr", "device_config": {"server": "nfs1", "password": "x", "cifs_password": "y",
                                                     "password_secret": "OpaqueRef:z"}}
    out = mask("SR", ["args"], [record])["args"]
    assert out == {"name_label": "sr", "device_config": {"server": "nfs1", "password": MASK,
                                                          "cifs_password": MASK, "password_secret": MASK}}
    assert record["device_config"]["password"] == "x"           # the call's own arguments untouched


def test_add_to_map_with_secret_key_masks_value():
    out = mask("SR", ["self", "key", "value"], ["OpaqueRef:s", "password", "pw"])
    assert out == {"self": "OpaqueRef:s", "key": "password", "value": MASK}
    out = mask("VM", ["self", "key", "value"], ["OpaqueRef:v", "owner", "bob"])
    assert out["value"] == "bob"


def test_long_values_shortened():
    out = mask("VM", ["self", "value"], ["r", "x" * 10000])
    assert len(out["value"]) < 300 and out["value"].startswith("x" * audit.MAX_STRING)
    out = mask("VM", ["value"], [list(range(1000))])
    assert len(out["value"]) == audit.MAX_ITEMS + 1


# -- the line -----------------------------------------------------------------------------------
def test_line_is_one_line_and_parses():
    text = line("root (local)", "local", "VM.set_name_label",
                {"self": "OpaqueRef:1", "value": "evil\nname\u2028x \"q\""}, "OK")
    assert "\n" not in text and len(text.splitlines()) == 1
    stamped = "2025-01-01T00:00:00.000Z " + text
    got = parse(stamped)
    assert got["user"] == "root (local)" and got["call"] == "VM.set_name_label"
    assert got["args"]["value"] == "evil\nname\u2028x \"q\"" and got["result"] == "OK"


def test_results():
    assert parse("2025-01-01T00:00:00.000Z " + line("u", "1.2.3.4", "VM.destroy", {}, "DENIED vm.destroy"))[
        "result"] == "DENIED vm.destroy"
    assert parse("2025-01-01T00:00:00.000Z " + line("u", "", "VM.start", {}, "ERROR HANDLE_INVALID"))[
        "peer"] == "-"


# -- the file: writes off the loop, time stamps, rotation ----------------------------------------
def test_written_with_utc_iso_time(tmp_path):
    log = AuditLog(str(tmp_path / "audit.log"))
    log.start()
    before = time.time()
    log.write("root", "127.0.0.1", "VM.start", {"vm": "OpaqueRef:1"}, "OK")
    log.stop()
    [text] = read_lines(tmp_path / "audit.log")
    got = parse(text)
    stamp = calendar.timegm(time.strptime(got["time"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert abs(stamp - before) < 5
    assert got["args"] == {"vm": "OpaqueRef:1"}


def test_lines_before_start_are_kept(tmp_path):
    log = AuditLog(str(tmp_path / "audit.log"))
    log.write("root", "-", "VM.start", {}, "OK")
    assert not os.path.exists(tmp_path / "audit.log")          # nothing touches the disk on the caller's thread
    log.start()
    log.stop()
    assert len(read_lines(tmp_path / "audit.log")) == 1


def test_rotation(tmp_path):
    path = str(tmp_path / "audit.log")
    log = AuditLog(path, max_bytes=2000, backups=3)
    log.start()
    for i in range(200):
        log.write("root", "127.0.0.1", "VM.set_name_label", {"self": f"OpaqueRef:{i}", "value": "n" * 20}, "OK")
    log.stop()
    names = sorted(os.listdir(tmp_path))
    assert names == ["audit.log", "audit.log.1", "audit.log.2", "audit.log.3"]
    for n in names:
        assert os.path.getsize(tmp_path / n) <= 2000
        for text in read_lines(tmp_path / n):
            parse(text)
    # the newest lines are in audit.log, the oldest kept in the highest-numbered file
    last = parse(read_lines(path)[-1])
    assert last["args"]["self"] == "OpaqueRef:199"


# -- the RPC hook -------------------------------------------------------------------------------
class _Hub:
    def poke(self):
        pass


# Calls the fake actions below refuse as RBAC does (the RBAC checks themselves are tested elsewhere).
_DENIED_TO_ALICE = {"VM.destroy", "secret.get_value"}


@pytest.fixture
def endpoints(tmp_path):
    """Real dispatcher entries and RPC endpoints over fake sessions and actions."""
    from xapi.dispatch import Dispatcher
    from xapi.db.schema import new_database
    from xapi.datamodel.errors import XapiError
    from xapi.server.rpc import Endpoints

    async def login(ctx, session, uname, pwd, version, originator):
        if pwd != "right":
            raise XapiError("SESSION_AUTHENTICATION_FAILED", uname, "Authentication failure")
        return "OpaqueRef:new"

    def resolve(message, db):
        if message.wire_name == "session.login_with_password":
            return login
        if message.wire_name == "session.logout":
            return lambda ctx, session: sessions.pop(session.ref) and ""

        def action(ctx, session, *args):
            if session is not None and session.user == "alice" and message.wire_name in _DENIED_TO_ALICE:
                raise XapiError("RBAC_PERMISSION_DENIED", message.permission, "No permission in user session.")
            return {} if message.name.startswith("get_") else ""
        return action

    # superuser sessions pass the dispatcher's own RBAC check whatever it looks at
    sessions = {"OpaqueRef:root": SimpleNamespace(ref="OpaqueRef:root", user="root", superuser=True),
                "OpaqueRef:ro": SimpleNamespace(ref="OpaqueRef:ro", user="alice", superuser=True)}
    log = AuditLog(str(tmp_path / "audit.log"))
    log.start()
    ep = Endpoints(Dispatcher(resolve, new_database(), sessions), _Hub(), log)
    ctx = SimpleNamespace(app=SimpleNamespace(sessions=SimpleNamespace(by_ref=sessions)), peer="10.1.2.3",
                          local=False)

    def lines():
        log.stop()
        return [parse(t) for t in read_lines(tmp_path / "audit.log")] if os.path.exists(tmp_path / "audit.log") \
            else []
    yield ep, ctx, lines
    log.stop()


def _xml(method, *params):
    import xmlrpc.client
    return xmlrpc.client.dumps(params, method).encode()


def test_hook_logs_writes_denials_and_logins_not_reads(endpoints):
    ep, ctx, lines = endpoints
    ep.xml(ctx, _xml("VM.get_name_label", "OpaqueRef:root", "OpaqueRef:vm"))
    ep.xml(ctx, _xml("VM.get_all_records_where", "OpaqueRef:root", "true"))
    ep.xml(ctx, _xml("event.inject", "OpaqueRef:root", "VM", "OpaqueRef:vm"))
    ep.xml(ctx, _xml("system.listMethods"))
    ep.xml(ctx, _xml("VM.set_name_label", "OpaqueRef:root", "OpaqueRef:vm", "web"))
    ep.json(ctx, json.dumps({"method": "VM.destroy", "params": ["OpaqueRef:ro", "OpaqueRef:vm"], "id": 1}).encode())
    ep.json(ctx, json.dumps({"method": "secret.set_value", "params": ["OpaqueRef:root", "OpaqueRef:s", "pw"],
                             "id": 2}).encode())
    ep.xml(ctx, _xml("VM.set_name_label", "OpaqueRef:gone", "OpaqueRef:vm", "x"))

    async def logins():
        await ep.xml(ctx, _xml("session.login_with_password", "root", "wrong", "1.0", "t"))
        await ep.json(ctx, json.dumps({"method": "session.login_with_password",
                                       "params": ["root", "right"], "id": 3}).encode())
    asyncio.run(logins())
    ep.xml(ctx, _xml("session.logout", "OpaqueRef:root"))
    got = lines()
    summary = [(g["user"], g["call"], g["result"]) for g in got]
    assert summary == [
        ("root", "VM.set_name_label", "OK"),
        ("alice", "VM.destroy", "DENIED vm.destroy"),
        ("root", "secret.set_value", "OK"),
        ("(no session)", "VM.set_name_label", "ERROR SESSION_INVALID"),
        ("root", "session.login_with_password", "ERROR SESSION_AUTHENTICATION_FAILED"),
        ("root", "session.login_with_password", "OK"),
        ("root", "session.logout", "OK"),              # the user is known though the session is gone
    ]
    assert got[0]["args"] == {"self": "OpaqueRef:vm", "value": "web"} and got[0]["peer"] == "10.1.2.3"
    assert got[2]["args"]["value"] == MASK
    assert got[4]["args"]["pwd"] == MASK and got[5]["args"]["pwd"] == MASK
    text = open(ep.audit.path).read()
    assert "wrong" not in text and "right" not in text and '"pw"' not in text
    assert "OpaqueRef:root" not in text and "OpaqueRef:new" not in text      # never a session ref


def test_read_denial_logged(endpoints):
    ep, ctx, lines = endpoints
    ep.xml(ctx, _xml("pool.get_all_records", "OpaqueRef:ro"))
    body = ep.xml(ctx, _xml("host.get_server_certificate", "OpaqueRef:ro", "OpaqueRef:h"))
    assert b"RBAC_PERMISSION_DENIED" not in body
    body = ep.json(ctx, json.dumps({"method": "secret.get_value", "params": ["OpaqueRef:ro", "OpaqueRef:s"],
                                    "id": 1}).encode())
    assert b"RBAC_PERMISSION_DENIED" in body
    [got] = lines()
    assert (got["user"], got["call"], got["result"]) == ("alice", "secret.get_value", "DENIED secret.get_value")


def test_which_entries_are_audited():
    from xapi.dispatch import Dispatcher
    from xapi.db.schema import new_database
    d = Dispatcher(lambda m, db: None, new_database(), {})
    e = d.entries
    for name in ("VM.get_name_label", "VM.get_record", "VM.get_all_records_where", "event.from", "event.next",
                 "system.listMethods", "session.get_this_host", "task.get_status", "host.get_server_certificate"):
        assert not is_audited(e[name]), name
    for name in ("VM.set_name_label", "VM.start", "Async.VM.start", "session.login_with_password",
                 "session.logout", "task.cancel", "host.reset_server_certificate", "VM.create"):
        assert is_audited(e[name]), name
