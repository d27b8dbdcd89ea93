"""The RBAC model (permissions from the datamodel, key and HTTP permissions, refs as xapi makes them),
the role table, the per-call check in the dispatcher, subjects from the name service and session
collection."""
import asyncio
import calendar
import time
import xmlrpc.client
from types import SimpleNamespace

import pytest

from xapi import datamodel as dm
from xapi.auth import rbac, roles, subjects
from xapi.auth.sessions import CLOCK, Sessions
from xapi.datamodel.errors import XapiError
from xapi.db.schema import insert, new_database
from xapi.dispatch import Dispatcher
from xapi.forwarding import resolve

ALL = set(rbac.ROLES)


# -- the permission model --------------------------------------------------------------------------
def test_every_message_permission_belongs_to_its_roles():
    for cls in dm.CLASSES.values():
        for m in cls.messages.values():
            held = {r for r in rbac.ROLES if rbac.permission_of(m) in rbac.ROLE_PERMISSIONS[r]}
            assert held == set(m.roles) & ALL, m.wire_name


def test_roles_nest_and_permissions_are_lowercase():
    for higher, lower in zip(rbac.ROLES, rbac.ROLES[1:]):
        assert rbac.ROLE_PERMISSIONS[lower] < rbac.ROLE_PERMISSIONS[higher]
    assert all(label == label.lower() for label in rbac.PERMISSIONS)
    assert "vm.start" in rbac.ROLE_PERMISSIONS["vm-operator"]
    assert "vm.start" not in rbac.ROLE_PERMISSIONS["read-only"]
    assert "vm.set_vcpus_number_live" in rbac.ROLE_PERMISSIONS["vm-admin"]
    assert "session.change_password" not in rbac.PERMISSIONS          # local root only: no role has it


def test_key_http_and_extra_permissions():
    assert rbac.roles_with("vm.add_to_other_config/key:folder") == list(rbac.ROLES[:5])
    assert rbac.roles_with("vm.remove_from_other_config/key:xencenter.customfields.*") == list(rbac.ROLES[:5])
    assert rbac.roles_with("vm.add_to_other_config/key:pci") == ["pool-admin"]
    assert rbac.roles_with("vm.add_to_other_config") == list(rbac.ROLES[:4])
    assert rbac.roles_with("task.add_to_other_config/key:applies_to") == list(rbac.ROLES[:5])
    assert rbac.roles_with("http/get_export") == list(rbac.ROLES[:4])
    assert rbac.roles_with("http/connect_console/host_console") == ["pool-admin"]
    assert rbac.roles_with("http/connect_console") == list(rbac.ROLES[:5])
    assert rbac.roles_with("http/rrd_updates") == list(rbac.ROLES)
    assert "http/get_repository" not in rbac.PERMISSIONS            # local root only
    assert rbac.roles_with("task.destroy/any") == list(rbac.ROLES[:2])


def test_refs_and_uuids_are_xapis():
    assert rbac.ROLE_REFS["pool-admin"] == "OpaqueRef:0165f154-ba3e-034e-6b27-5d271af109ba"
    # xapi's rbac_static: pool_patch.apply has this uuid (the MD5 of its name)
    assert rbac.ref_of("pool_patch.apply") == "OpaqueRef:d4385002-b920-5412-4c57-b010f451fa81"
    assert len(set(rbac.PERMISSION_BY_REF)) == len(rbac.PERMISSIONS)
    assert dm.CLASSES["subject"].fields["roles"].default == [rbac.ROLE_REFS["pool-admin"]]


def test_denial_wording():
    e = rbac.denied("vm.start")
    assert e.description == ["RBAC_PERMISSION_DENIED", "vm.start", "No permission in user session. "
                             "(Roles with this permission: pool-admin, pool-operator, vm-power-admin, "
                             "vm-admin, vm-operator)"]
    assert rbac.denied("session.change_password").description[2] == \
        "No permission in user session. (Roles with this permission: )"


def test_session_permissions_include_role_names():
    perms = rbac.session_permissions(frozenset({rbac.ROLE_REFS["read-only"], rbac.ref_of("vm.start")}))
    assert "read-only" in perms and "vm.start" in perms and "vm.clone" not in perms
    assert rbac.session_permissions(frozenset({"OpaqueRef:gone"})) == frozenset()


# -- the role table --------------------------------------------------------------------------------
def test_ensure_roles_is_idempotent_and_repairs():
    db = new_database()
    roles.ensure_roles(db)
    table = db.table("role")
    assert len(table) == len(rbac.PERMISSIONS) + 6
    generation = db.generation
    roles.ensure_roles(db)
    assert db.generation == generation                                # nothing to write the second time
    ro = rbac.ROLE_REFS["read-only"]
    table.set_field(ro, "name_description", "tampered")
    insert(db, "role", "OpaqueRef:stale", name_label="old.permission", is_internal=True)
    roles.ensure_roles(db)
    assert table.get_field(ro, "name_description") == rbac.ROLE_DESCRIPTIONS["read-only"]
    assert "OpaqueRef:stale" not in table
    labels = set(roles.labels(db, roles.permissions_of(db, ro)))
    assert labels == set(rbac.ROLE_PERMISSIONS["read-only"])
    start = rbac.ref_of("vm.start")
    assert roles.permissions_of(db, start) == [start]


# -- the per-call check ------------------------------------------------------------------------------
@pytest.fixture
def world():
    db = new_database()
    roles.ensure_roles(db)
    host = insert(db, "host", name_label="h")
    vm = insert(db, "VM", name_label="vm", other_config={"folder": "/a", "keep": "1"})
    sessions = Sessions(db, host)
    dispatcher = Dispatcher(resolve, db, sessions.by_ref)
    app = SimpleNamespace(db=db, is_coordinator=True, sessions=sessions, host_ref=host)
    ctx = SimpleNamespace(app=app, local=False, peer="127.0.0.1")

    def session_with(*names):
        refs = frozenset(rbac.ROLE_REFS[n] for n in names)
        return sessions.create("alice", superuser=False, roles=frozenset(names),
                               permissions=rbac.session_permissions(refs)).ref

    def call(name, *params):
        return dispatcher.entries[name](ctx, list(params))

    return SimpleNamespace(db=db, vm=vm, sessions=sessions, session_with=session_with, call=call)


def denied(fn, *args):
    with pytest.raises(XapiError) as e:
        fn(*args)
    assert e.value.code == "RBAC_PERMISSION_DENIED", e.value.description
    return e.value.description[1]


def test_roles_decide_calls(world):
    ro, root = world.session_with("read-only"), world.sessions.create("root", superuser=True).ref
    assert world.call("VM.get_name_label", ro, world.vm) == "vm"
    assert denied(world.call, "VM.set_name_label", ro, world.vm, "x") == "vm.set_name_label"
    assert denied(world.call, "Async.VM.clone", ro, world.vm, "x") == "vm.clone"
    assert denied(world.call, "session.change_password", ro, "a", "b") == "session.change_password"
    world.call("VM.set_name_label", root, world.vm, "by root")        # the superuser is never checked
    admin = world.session_with("vm-admin")
    world.call("VM.set_name_label", admin, world.vm, "by vm-admin")


def test_protected_keys(world):
    op = world.session_with("vm-operator")
    world.call("VM.add_to_other_config", op, world.vm, "XenCenter.CustomFields.x", "1")
    world.call("VM.remove_from_other_config", op, world.vm, "folder")
    assert denied(world.call, "VM.add_to_other_config", op, world.vm, "keep2", "x") == "vm.add_to_other_config"
    assert denied(world.call, "VM.remove_from_other_config", op, world.vm, "keep") == "vm.remove_from_other_config"
    admin = world.session_with("vm-admin")
    assert denied(world.call, "VM.add_to_other_config", admin, world.vm, "pci", "x") == \
        "vm.add_to_other_config/key:pci"
    world.call("VM.add_to_other_config", admin, world.vm, "other", "x")
    # set_: the message's permission, and each changed protected key's own
    assert denied(world.call, "VM.set_other_config", op, world.vm, {}) == "vm.set_other_config"
    current = world.db.table("VM").get_field(world.vm, "other_config")
    world.call("VM.set_other_config", admin, world.vm, {**current, "folder": "/b"})
    assert denied(world.call, "VM.set_other_config", admin, world.vm, {**current, "pci": "0/0000:00:01.0"}) == \
        "vm.add_to_other_config/key:pci"
    pool_admin = world.session_with("pool-admin")
    world.call("VM.set_other_config", pool_admin, world.vm, {"pci": "0/0000:00:01.0"})
    assert denied(world.call, "VM.set_other_config", admin, world.vm, {}) == "vm.remove_from_other_config/key:pci"
    with pytest.raises(XapiError) as e:                                  # a bad ref is the action's error
        world.call("VM.set_other_config", admin, "OpaqueRef:nope", {})
    assert e.value.code == "HANDLE_INVALID"


def test_http_check():
    perms = rbac.session_permissions(frozenset({rbac.ROLE_REFS["vm-operator"]}))
    s = SimpleNamespace(superuser=False, permissions=perms)
    rbac.check_http(s, "connect_console")
    rbac.check_http(s, "post_root")                      # the API endpoints check each call instead
    with pytest.raises(XapiError):
        rbac.check_http(s, "connect_console", "host_console")
    with pytest.raises(XapiError):
        rbac.check_http(s, "get_export")


# -- subjects ------------------------------------------------------------------------------------------
def test_subjects_from_the_name_service():
    assert subjects.resolve("root") == "u0"
    assert subjects.resolve("user:root") == "u0"
    assert subjects.resolve("group:root") == "g0"
    assert subjects.resolve("u0") == "u0" and subjects.resolve("g0") == "g0"
    for bad in ("no-such-user-xapit", "group:no-such-group-xapit", "", None, "u999999999"):
        with pytest.raises(XapiError) as e:
            subjects.resolve(bad)
        assert e.value.description == ["SUBJECT_CANNOT_BE_RESOLVED"]
    info = subjects.information("u0")
    assert info["subject-name"] == "root" and info["subject-is-group"] == "false"
    assert subjects.information("g0")["subject-is-group"] == "true"
    sid, sids = subjects.membership("root")
    assert sid == "u0" and "g0" in sids
    assert subjects.membership("no-such-user-xapit") is None
    assert subjects.suspended({"subject-is-group": "false"})
    assert not subjects.suspended(info)


# -- session collection ----------------------------------------------------------------------------
@pytest.fixture
def clock():
    """The sessions' coarse clock, restored afterwards."""
    saved = CLOCK[0]
    yield CLOCK
    CLOCK[0] = max(saved, time.monotonic())


def test_idle_sessions_are_collected(world, clock):
    s = world.sessions
    s.timeout = 10.0
    a = s.create("root", superuser=True)
    b = s.create("root", superuser=True)
    gone = []
    s.on_destroy.append(gone.append)
    a.last_active = b.last_active = 100.0
    clock[0] = 105.0
    world.call("pool.get_all", a.ref)                       # a call stamps its session with the clock
    assert a.last_active == 105.0
    assert s.sweep(now=112.0) == [b.ref]
    assert gone == [b.ref] and b.ref not in world.db.table("session")
    with pytest.raises(XapiError) as e:
        world.call("pool.get_all", b.ref)
    assert e.value.description == ["SESSION_INVALID", b.ref]


def test_oldest_sessions_of_a_full_group_are_evicted(world):
    s = world.sessions
    s.max_per_originator, s.max_per_user_name, s.max_sessions = 3, 2, 2
    xo = [s.create("root", superuser=True, originator="xo") for _ in range(5)]
    other = [s.create("root", superuser=True, originator="other") for _ in range(2)]
    anon = [s.create("root", superuser=True) for _ in range(2)]
    alice = [s.create("alice", superuser=False, originator="xo") for _ in range(3)]
    now = CLOCK[0]
    for i, sess in enumerate(xo + other + anon + alice):
        sess.last_active = now - 100 + i
    evicted = s.sweep(now=now)
    assert sorted(evicted) == sorted([xo[0].ref, xo[1].ref, alice[0].ref])
    assert set(s.by_ref) == {x.ref for x in xo[2:] + other + anon + alice[1:]}


def test_stale_last_active_is_written_back(world):
    s = world.sessions
    a = s.create("root", superuser=True)
    table = world.db.table("session")
    table.set_field(a.ref, "last_active", xmlrpc.client.DateTime("19700101T00:00:00Z"))
    s.sweep(now=a.last_active + 10.0)                     # fresh enough: not written
    assert str(table.get_field(a.ref, "last_active")) == "19700101T00:00:00Z"
    a.last_active += 45.0                                   # a call 45 s later
    s.sweep(now=a.last_active)
    assert a.written_active == a.last_active
    written = calendar.timegm(time.strptime(str(table.get_field(a.ref, "last_active")), "%Y%m%dT%H:%M:%SZ"))
    assert abs(written - time.time()) < 5


def test_sweeper_runs_in_the_loop(world):
    s = world.sessions

    async def main():
        a = s.create("root", superuser=True)
        a.last_active -= 5
        s.start_sweeper(timeout=0.5)
        await asyncio.sleep(0.6)
        s._task.cancel()
        return a.ref

    ref = asyncio.run(main())
    assert ref not in s.by_ref


def test_role_messages(world):
    ro = world.session_with("read-only")
    op_ref, start = rbac.ROLE_REFS["vm-operator"], rbac.ref_of("vm.start")
    assert set(world.call("role.get_by_permission", ro, start)) == {rbac.ROLE_REFS[r] for r in rbac.ROLES[:5]}
    assert world.call("role.get_by_permission_name_label", ro, "vm.add_to_other_config/key:pci") == \
        [rbac.ROLE_REFS["pool-admin"]]
    assert world.call("role.get_by_permission_name_label", ro, "no.such") == []
    assert world.call("role.get_permissions", ro, start) == [start]
    assert set(world.call("role.get_permissions_name_label", ro, op_ref)) == rbac.ROLE_PERMISSIONS["vm-operator"]
    assert len(world.call("role.get_all_records_where", ro, "subroles<>[]")) == 6
    assert len(world.call("role.get_all_records_where", ro, "subroles=[]")) == len(rbac.PERMISSIONS)
    assert list(world.call("role.get_all_records_where", ro, 'field "name_label"="vm-operator"')) == [op_ref]
    with pytest.raises(XapiError) as e:
        world.call("role.get_permissions", ro, "OpaqueRef:nope")
    assert e.value.description == ["HANDLE_INVALID", "role", "OpaqueRef:nope"]


# -- logins (any backend; "nobody" stands for an external user) ------------------------------------
class _AcceptAll:
    def __init__(self):
        self.refused = []

    async def check(self, user, password, peer=""):
        return password == "good"

    async def failed(self, user, peer=""):
        self.refused.append(user)


def test_external_logins(world):
    import pwd

    from xapi.actions import pool as pool_actions, session as session_actions, subject as subject_actions
    try:
        uid = pwd.getpwnam("nobody").pw_uid
    except KeyError:
        pytest.skip("no user 'nobody'")
    db = world.db
    pool = insert(db, "pool", name_label="p")
    app = SimpleNamespace(db=db, sessions=world.sessions, host_ref=world.sessions.host_ref, auth=_AcceptAll(),
                          is_coordinator=True)
    ctx = SimpleNamespace(app=app, local=False, peer="10.0.0.9")

    def login(user, password="good"):
        return asyncio.run(session_actions.login_with_password(ctx, None, user, password, "1.0", "orig"))

    def error(fn, *args):
        with pytest.raises(XapiError) as e:
            fn(*args)
        return e.value.description

    # no external authentication: only root
    assert error(login, "nobody") == ["SESSION_AUTHENTICATION_FAILED", "nobody", "Authentication failure"]
    assert world.sessions.by_ref[login("root")].superuser
    with pytest.raises(XapiError) as e:
        asyncio.run(subject_actions.create(ctx, None, {"subject_identifier": "nobody"}))
    assert e.value.code == "AUTH_IS_DISABLED"
    assert error(pool_actions.enable_external_auth, ctx, None, pool, {}, "x", "AD") == ["AUTH_UNKNOWN_TYPE", "AD"]
    pool_actions.enable_external_auth(ctx, None, pool, {}, "xapi", "PAM")
    assert error(login, "nobody") == [
        "SESSION_AUTHENTICATION_FAILED", "nobody",
        f"Subject nobody (identifier u{uid}, from 10.0.0.9) has no access rights in this pool"]
    assert error(login, "nobody", "bad") == ["SESSION_AUTHENTICATION_FAILED", "nobody", "Authentication failure"]
    subject = asyncio.run(subject_actions.create(ctx, None, {"subject_identifier": "nobody"}))
    assert error(login, "nobody") == ["RBAC_PERMISSION_DENIED", "session.login_with_password",
                                      f"Subject nobody (identifier u{uid}) has no roles in this pool"]
    subject_actions.add_to_roles(ctx, None, subject, rbac.ROLE_REFS["vm-operator"])
    subject_actions.add_to_roles(ctx, None, subject, rbac.ref_of("vm.clone"))      # xapi lets a permission in
    s = world.sessions.by_ref[login("nobody")]
    assert not s.superuser and s.roles == {"vm-operator"} and s.subject == subject and s.auth_user_sid == f"u{uid}"
    assert "vm.start" in s.permissions and "vm.clone" in s.permissions and "vm.destroy" not in s.permissions
    row = db.table("session").get(s.ref)
    assert row["auth_user_sid"] == f"u{uid}" and row["originator"] == "orig" and not row["is_local_superuser"]
    assert set(row["rbac_permissions"]) == set(s.permissions)
    assert session_actions.get_all_subject_identifiers(ctx, None) == [f"u{uid}"]
    assert error(subject_actions.remove_from_roles, ctx, None, subject, rbac.ROLE_REFS["read-only"]) == \
        ["ROLE_NOT_FOUND"]
    pool_actions.disable_external_auth(ctx, None, pool, {})
    assert s.ref not in world.sessions.by_ref
    assert error(login, "nobody") == ["SESSION_AUTHENTICATION_FAILED", "nobody", "Authentication failure"]
    root = world.sessions.by_ref[login("root")]
    change = session_actions.change_password
    assert error(lambda: asyncio.run(change(ctx, root, "a", "b"))) == ["NOT_IMPLEMENTED", "session.change_password"]
    assert error(lambda: asyncio.run(change(ctx, s, "a", "b")))[0] == "USER_IS_NOT_LOCAL_SUPERUSER"


def test_change_password_with_the_local_backend(world, tmp_path):
    from xapi.actions import session as session_actions
    from xapi.auth.passwords import LocalAuth

    auth = LocalAuth(str(tmp_path), failure_delay=0)
    auth.file.set("root", "old-password")
    ctx = SimpleNamespace(app=SimpleNamespace(auth=auth), local=False, peer="")
    root = world.sessions.create("root", superuser=True)
    asyncio.run(session_actions.change_password(ctx, root, "ignored", "new-password"))
    assert asyncio.run(auth.check("root", "new-password")) and not asyncio.run(auth.check("root", "old-password"))
    with pytest.raises(XapiError) as e:
        asyncio.run(session_actions.change_password(ctx, root, "", ""))
    assert e.value.code == "CHANGE_PASSWORD_REJECTED"
