"""auth.*: what the pool's external authentication can say about a subject, as xapi's Xapi_auth asks its
auth plugin (here PAM over the name service, xapi.auth.subjects): a name's identifier, an identifier's
information map, and the groups a user is in. AUTH_IS_DISABLED while no external auth is enabled on
this host; SUBJECT_CANNOT_BE_RESOLVED for what the name service doesn't know.

Name-service lookups may block (NSS may be remote): they run in the default executor."""
from __future__ import annotations

import asyncio
import grp
import os
import pwd

from xapi.auth import subjects
from xapi.datamodel.errors import XapiError


def _enabled(ctx) -> None:
    app = ctx.app
    if subjects.external_auth_type(app.db, app.host_ref) == "":
        raise XapiError("AUTH_IS_DISABLED")


def _run(fn, *args):
    return asyncio.get_running_loop().run_in_executor(None, fn, *args)


def _identifier(name) -> str:
    # a name, users first as xapi's PAM plugin (an identifier such as u0 is not a name here)
    if type(name) is not str or not name or ":" in name:
        raise XapiError("SUBJECT_CANNOT_BE_RESOLVED")
    for kind in ("user", "group"):
        try:
            return subjects.resolve(f"{kind}:{name}")
        except XapiError:
            pass
    raise XapiError("SUBJECT_CANNOT_BE_RESOLVED")


def _membership(identifier) -> list[str]:
    info = subjects.information(identifier if type(identifier) is str else "")
    if info["subject-is-group"] == "true":
        # as xapi's PAM plugin: a group is no member of groups
        raise XapiError("SUBJECT_CANNOT_BE_RESOLVED")
    p = pwd.getpwuid(int(identifier[1:]))
    try:
        gids = os.getgrouplist(p.pw_name, p.pw_gid)
    except OSError:
        gids = [p.pw_gid]
    out = []
    for gid in dict.fromkeys(gids):
        try:
            grp.getgrgid(gid)
        except KeyError:
            continue            # a gid without a group entry names nothing a subject can be
        out.append(f"g{gid}")
    return out


async def get_subject_identifier(ctx, session, subject_name):
    _enabled(ctx)
    return await _run(_identifier, subject_name)


async def get_subject_information_from_identifier(ctx, session, subject_identifier):
    _enabled(ctx)
    if type(subject_identifier) is not str:
        raise XapiError("SUBJECT_CANNOT_BE_RESOLVED")
    return await _run(subjects.information, subject_identifier)


async def get_group_membership(ctx, session, subject_identifier):
    _enabled(ctx)
    return await _run(_membership, subject_identifier)
