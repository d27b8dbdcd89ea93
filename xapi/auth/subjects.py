"""Subjects for external authentication "PAM": local accounts and groups from the name service
(pwd/grp, so /etc/passwd and /etc/group or whatever NSS serves).

Identifiers are the ones xapi's own PAM/NSS auth plugin used: `u<uid>` for a user, `g<gid>` for a
group. subject.create also takes a name and resolves it the way that plugin's
get_subject_identifier did, users first: `alice` (a user, else a group), `user:alice`, `group:staff`.
The subject's other_config is filled with the plugin's subject information (subject-name,
subject-uid, subject-gid, subject-gecos, subject-displayname, subject-is-group, and for users the
four suspension flags).

Name-service lookups may block (NSS may be remote): callers run these in a thread.
"""
from __future__ import annotations

import grp
import os
import pwd
import re

from xapi.datamodel.errors import XapiError

AUTH_TYPE_PAM = "PAM"
_ID = re.compile(r"^([ug])(\d+)$")


def _cannot_resolve() -> XapiError:
    return XapiError("SUBJECT_CANNOT_BE_RESOLVED")


def resolve(identifier: str) -> str:
    """A subject identifier (`u<uid>`/`g<gid>`) for an identifier or a name; SUBJECT_CANNOT_BE_RESOLVED
    when the name service knows neither."""
    if type(identifier) is not str or not identifier:
        raise _cannot_resolve()
    m = _ID.match(identifier)
    if m:
        try:
            if m.group(1) == "u":
                pwd.getpwuid(int(m.group(2)))
            else:
                grp.getgrgid(int(m.group(2)))
            return identifier
        except (KeyError, OverflowError):
            pass
    kind, _, name = identifier.partition(":")
    if not name:
        kind, name = "", identifier
    if kind in ("", "user"):
        try:
            return f"u{pwd.getpwnam(name).pw_uid}"
        except KeyError:
            pass
    if kind in ("", "group"):
        try:
            return f"g{grp.getgrnam(name).gr_gid}"
        except KeyError:
            pass
    raise _cannot_resolve()


def information(identifier: str) -> dict[str, str]:
    """What the directory says about a subject: its other_config."""
    m = _ID.match(identifier or "")
    if not m:
        raise _cannot_resolve()
    try:
        if m.group(1) == "u":
            p = pwd.getpwuid(int(m.group(2)))
            disabled = not p.pw_passwd or p.pw_passwd[0] in "*!"
            gecos = p.pw_gecos.split(",")[0]
            return {"subject-name": p.pw_name, "subject-uid": f"u{p.pw_uid}", "subject-gid": f"g{p.pw_gid}",
                    "subject-gecos": p.pw_gecos, "subject-displayname": gecos or p.pw_name,
                    "subject-is-group": "false", "subject-account-disabled": str(disabled).lower(),
                    "subject-account-expired": "false", "subject-account-locked": "false",
                    "subject-password-expired": "false"}
        g = grp.getgrgid(int(m.group(2)))
        return {"subject-name": g.gr_name, "subject-uid": f"g{g.gr_gid}", "subject-gid": f"g{g.gr_gid}",
                "subject-is-group": "true"}
    except (KeyError, OverflowError):
        raise _cannot_resolve() from None


def membership(user: str) -> tuple[str, list[str]] | None:
    """(the user's identifier, the identifiers of the user and of every group it is in), or None when
    the name service doesn't know the user."""
    try:
        p = pwd.getpwnam(user)
    except KeyError:
        return None
    sid = f"u{p.pw_uid}"
    try:
        gids = os.getgrouplist(user, p.pw_gid)
    except OSError:
        gids = [p.pw_gid]
    return sid, [sid] + [f"g{gid}" for gid in dict.fromkeys(gids)]


def suspended(info: dict[str, str]) -> bool:
    """xapi's rule: a user is suspended unless each of the four flags says "false"."""
    if info.get("subject-is-group") == "true":
        return False
    return any(info.get(k, "true").lower() != "false" for k in (
        "subject-account-disabled", "subject-account-expired", "subject-account-locked",
        "subject-password-expired"))


def external_auth_type(db, host_ref: str) -> str:
    try:
        return db.table("host").get_field(host_ref, "external_auth_type")
    except KeyError:
        return ""
