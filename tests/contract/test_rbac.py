"""RBAC end to end with the XenAPI SDK: external authentication "PAM" with throwaway system users and a
group, subjects with roles, and what each role may call; session expiry.

The PAM part needs root (useradd, /etc/pam.d/xapi, /etc/shadow) and python-pam; it is skipped otherwise.
"""
import grp
import pwd
import time
import xmlrpc.client

import XenAPI

from tests import helpers
from tests.contract.pam_accounts import login, needs_pam
from tests.helpers import failure

VM_OP_ROLES = "pool-admin, pool-operator, vm-power-admin, vm-admin, vm-operator"


def test_roles_and_permissions_are_role_rows(xapi_daemon):
    s = helpers.login(xapi_daemon)
    x = s.xenapi
    try:
        records = x.role.get_all_records()
        names = {r["name_label"]: ref for ref, r in records.items() if not r["is_internal"]}
        assert sorted(names) == sorted(["pool-admin", "pool-operator", "vm-power-admin", "vm-admin",
                                        "vm-operator", "read-only"])
        assert names["pool-admin"] == "OpaqueRef:0165f154-ba3e-034e-6b27-5d271af109ba"   # fixed, as xapi
        start = x.role.get_by_name_label("vm.start")[0]
        assert records[start]["is_internal"] and records[start]["subroles"] == []
        ro = x.role.get_permissions_name_label(names["read-only"])
        assert "vm.get_record" in ro and "vm.start" not in ro
        assert "vm.add_to_other_config/key:folder" in x.role.get_permissions_name_label(names["vm-operator"])
        assert sorted(records[r]["name_label"] for r in x.role.get_by_permission_name_label("http/get_export")) \
            == ["pool-admin", "pool-operator", "vm-admin", "vm-power-admin"]
        assert set(x.role.get_by_permission(start)) == {names[n] for n in VM_OP_ROLES.split(", ")}
        internal = {r for r, rec in records.items() if rec["is_internal"]}
        assert set(x.role.get_permissions(names["pool-admin"])) == internal
    finally:
        x.session.logout()


class TestPam:
    pytestmark = needs_pam

    def test_subjects_resolved_from_the_name_service(self, pam):
        x = pam["root"].xenapi
        users = pam["users"]
        ro = x.subject.get_record(pam["subjects"][users["ro"]])
        assert ro["subject_identifier"] == f"u{pwd.getpwnam(users['ro']).pw_uid}"
        assert ro["other_config"]["subject-name"] == users["ro"]
        assert ro["other_config"]["subject-is-group"] == "false"
        assert ro["roles"] == [pam["roles"]["read-only"]]
        g = x.subject.get_record(pam["subjects"]["group:" + pam["group"]])
        assert g["subject_identifier"] == f"g{grp.getgrnam(pam['group']).gr_gid}"
        assert g["other_config"]["subject-is-group"] == "true"
        assert failure(x.subject.create, {"subject_identifier": users["ro"], "other_config": {}}) \
            == ["SUBJECT_ALREADY_EXISTS"]
        assert failure(x.subject.create, {"subject_identifier": "no-such-xapit-user", "other_config": {}}) \
            == ["SUBJECT_CANNOT_BE_RESOLVED"]
        perms = x.subject.get_permissions_name_label(pam["subjects"]["user:" + users["op"]])
        assert "vm.start" in perms and "vm.set_name_label" not in perms

    def test_read_only_user_reads_but_cannot_change(self, pam):
        s = login(pam, "ro")
        x = s.xenapi
        try:
            assert pam["vm"] in x.VM.get_all_records()
            assert failure(x.VM.start, pam["vm"], False, False) == [
                "RBAC_PERMISSION_DENIED", "vm.start",
                f"No permission in user session. (Roles with this permission: {VM_OP_ROLES})"]
            assert failure(x.VM.set_name_label, pam["vm"], "x")[:2] == ["RBAC_PERMISSION_DENIED", "vm.set_name_label"]
            rec = x.session.get_record(s._session)
            uid = pwd.getpwnam(pam["users"]["ro"]).pw_uid
            assert rec["is_local_superuser"] is False and rec["auth_user_sid"] == f"u{uid}"
            assert rec["auth_user_name"] == pam["users"]["ro"] and rec["originator"] == "rbac-tests"
            assert rec["subject"] == pam["subjects"][pam["users"]["ro"]]
            assert "vm.get_record" in rec["rbac_permissions"] and "vm.start" not in rec["rbac_permissions"]
        finally:
            x.session.logout()

    def test_vm_operator_may_change_protected_keys_only(self, pam):
        s = login(pam, "op")
        x, vm = s.xenapi, pam["vm"]
        try:
            x.VM.add_to_other_config(vm, "folder", "x")
            x.VM.add_to_other_config(vm, "XenCenter.CustomFields.colour", "red")
            x.VM.remove_from_other_config(vm, "folder")
            assert failure(x.VM.add_to_other_config, vm, "other", "x") == [
                "RBAC_PERMISSION_DENIED", "vm.add_to_other_config",
                "No permission in user session. (Roles with this permission: "
                "pool-admin, pool-operator, vm-power-admin, vm-admin)"]
            assert failure(x.VM.add_to_other_config, vm, "pci", "x")[:2] == \
                ["RBAC_PERMISSION_DENIED", "vm.add_to_other_config/key:pci"]
            assert failure(x.VM.set_other_config, vm, {})[:2] == ["RBAC_PERMISSION_DENIED", "vm.set_other_config"]
            assert failure(x.subject.create, {"subject_identifier": "root", "other_config": {}}) == [
                "RBAC_PERMISSION_DENIED", "subject.create",
                "No permission in user session. (Roles with this permission: pool-admin)"]
            assert x.VM.get_other_config(vm)["XenCenter.CustomFields.colour"] == "red"
        finally:
            x.session.logout()

    def test_group_member_gets_the_group_roles(self, pam):
        s = login(pam, "member")
        x = s.xenapi
        try:
            x.VM.set_name_label(pam["vm"], "renamed by a group member")            # vm-admin
            assert failure(x.VM.start_on, pam["vm"], x.host.get_all()[0], False, False)[:2] == \
                ["RBAC_PERMISSION_DENIED", "vm.start_on"]                            # vm-power-admin
            rec = x.session.get_record(s._session)
            assert rec["subject"] == pam["subjects"]["group:" + pam["group"]]
        finally:
            x.session.logout()

    def test_refused_logins(self, pam):
        users = pam["users"]
        s = XenAPI.Session(pam["d"].url)
        assert failure(s.xenapi.login_with_password, users["ro"], "wrong") == \
            ["SESSION_AUTHENTICATION_FAILED", users["ro"], "Authentication failure"]
        outsider = users["outsider"]
        uid = pwd.getpwnam(outsider).pw_uid
        assert failure(s.xenapi.login_with_password, outsider, pam["passwords"][outsider]) == [
            "SESSION_AUTHENTICATION_FAILED", outsider,
            f"Subject {outsider} (identifier u{uid}, from 127.0.0.1) has no access rights in this pool"]
        # a subject without roles may not log in either
        x = pam["root"].xenapi
        ref = x.subject.create({"subject_identifier": f"u{uid}", "other_config": {}})
        try:
            assert failure(s.xenapi.login_with_password, outsider, pam["passwords"][outsider]) == [
                "RBAC_PERMISSION_DENIED", "session.login_with_password",
                f"Subject {outsider} (identifier u{uid}) has no roles in this pool"]
        finally:
            x.subject.destroy(ref)

    def test_subject_sessions_listed_and_logged_out(self, pam):
        s = login(pam, "op")
        x = pam["root"].xenapi
        sid = f"u{pwd.getpwnam(pam['users']['op']).pw_uid}"
        assert sid in x.session.get_all_subject_identifiers()
        x.session.logout_subject_identifier(sid)
        assert sid not in x.session.get_all_subject_identifiers()
        proxy = xmlrpc.client.ServerProxy(pam["d"].url)
        assert proxy.VM.get_all(s._session)["ErrorDescription"] == ["SESSION_INVALID", s._session]

    def test_disabling_external_auth_ends_external_sessions(self, pam):
        s = login(pam, "ro")
        x = pam["root"].xenapi
        (pool,) = x.pool.get_all()
        x.pool.disable_external_auth(pool, {})
        try:
            proxy = xmlrpc.client.ServerProxy(pam["d"].url)
            assert proxy.VM.get_all(s._session)["ErrorDescription"] == ["SESSION_INVALID", s._session]
            assert failure(login, pam, "ro")[0] == "SESSION_AUTHENTICATION_FAILED"
            assert failure(x.subject.create, {"subject_identifier": "root", "other_config": {}}) == \
                ["AUTH_IS_DISABLED"]
            assert x.host.get_external_auth_type(x.host.get_all()[0]) == ""
        finally:
            x.pool.enable_external_auth(pool, {}, "xapi", "PAM")


def test_idle_sessions_expire(fresh_daemon):
    d = fresh_daemon("--session-timeout", "1")
    proxy = xmlrpc.client.ServerProxy(d.url)
    busy = proxy.session.login_with_password("root", d.password)["Value"]
    idle = proxy.session.login_with_password("root", d.password)["Value"]
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:              # one session keeps calling, the other doesn't
        assert proxy.pool.get_all(busy)["Status"] == "Success"
        time.sleep(0.2)
    assert proxy.pool.get_all(idle)["ErrorDescription"] == ["SESSION_INVALID", idle]
    assert proxy.pool.get_all(busy)["Status"] == "Success"
