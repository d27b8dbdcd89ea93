"""auth.get_subject_identifier / get_subject_information_from_identifier / get_group_membership
(xapi.actions.auth) with the XenAPI SDK over external authentication "PAM" and throwaway system accounts
(tests/contract/pam_accounts.py), and `xe subject-add` resolving through them; AUTH_IS_DISABLED on a
daemon without external authentication.

The PAM part needs root (useradd, /etc/pam.d/xapi) and python-pam; it is skipped otherwise."""
from __future__ import annotations

import grp
import pwd

from tests.contract.pam_accounts import needs_pam
from tests.contract.xe_client import ok, xe
from tests.fixtures import own_daemon, root_xenapi
from tests.helpers import failure

plain = own_daemon()
x = root_xenapi("plain")


def test_auth_is_disabled_without_external_auth(x):
    assert failure(x.auth.get_subject_identifier, "root") == ["AUTH_IS_DISABLED"]
    assert failure(x.auth.get_subject_information_from_identifier, "u0") == ["AUTH_IS_DISABLED"]
    assert failure(x.auth.get_group_membership, "u0") == ["AUTH_IS_DISABLED"]


class TestPam:
    pytestmark = needs_pam

    def test_identifiers_of_names(self, pam):
        a = pam["root"].xenapi.auth
        user, group = pam["users"]["member"], pam["group"]
        assert a.get_subject_identifier(user) == f"u{pwd.getpwnam(user).pw_uid}"
        assert a.get_subject_identifier(group) == f"g{grp.getgrnam(group).gr_gid}"
        for unknown in ("no-such-account-xyz", "", "u0"):
            assert failure(a.get_subject_identifier, unknown) == ["SUBJECT_CANNOT_BE_RESOLVED"]

    def test_information_of_identifiers(self, pam):
        a = pam["root"].xenapi.auth
        user, group = pam["users"]["member"], pam["group"]
        p, g = pwd.getpwnam(user), grp.getgrnam(group)
        info = a.get_subject_information_from_identifier(f"u{p.pw_uid}")
        assert {k: info[k] for k in ("subject-name", "subject-uid", "subject-gid", "subject-is-group",
                                     "subject-account-disabled")} == {
            "subject-name": user, "subject-uid": f"u{p.pw_uid}", "subject-gid": f"g{p.pw_gid}",
            "subject-is-group": "false", "subject-account-disabled": "false"}
        assert {"subject-gecos", "subject-displayname", "subject-account-expired", "subject-account-locked",
                "subject-password-expired"} <= set(info)
        ginfo = a.get_subject_information_from_identifier(f"g{g.gr_gid}")
        assert (ginfo["subject-name"], ginfo["subject-is-group"]) == (group, "true")
        for bad in ("x1", "u999999999", ""):
            assert failure(a.get_subject_information_from_identifier, bad) == ["SUBJECT_CANNOT_BE_RESOLVED"]

    def test_group_membership(self, pam):
        a = pam["root"].xenapi.auth
        member, loner = pam["users"]["member"], pam["users"]["outsider"]
        gid = grp.getgrnam(pam["group"]).gr_gid
        groups = a.get_group_membership(f"u{pwd.getpwnam(member).pw_uid}")
        assert f"g{gid}" in groups and f"g{pwd.getpwnam(member).pw_gid}" in groups
        assert f"g{gid}" not in a.get_group_membership(f"u{pwd.getpwnam(loner).pw_uid}")
        assert failure(a.get_group_membership, f"g{gid}") == ["SUBJECT_CANNOT_BE_RESOLVED"]
        assert failure(a.get_group_membership, "u999999999") == ["SUBJECT_CANNOT_BE_RESOLVED"]

    def test_xe_subject_add_resolves_the_name(self, pam):
        x, d = pam["root"].xenapi, pam["d"]
        name = pam["users"]["outsider"]
        uuid = ok(xe(d, "subject-add", f"subject-name={name}"))
        ref = x.subject.get_by_uuid(uuid)
        try:
            rec = x.subject.get_record(ref)
            assert rec["subject_identifier"] == f"u{pwd.getpwnam(name).pw_uid}"
            assert rec["other_config"]["subject-name"] == name and rec["roles"] == []
        finally:
            x.subject.destroy(ref)
        r = xe(d, "subject-add", "subject-name=no-such-account-xyz")
        assert r.returncode == 1 and r.stdout == ""
        assert "SUBJECT_CANNOT_BE_RESOLVED" in r.stderr, r.stderr
