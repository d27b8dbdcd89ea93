"""Throwaway system users and a group for the RBAC tests, and a daemon with external authentication
"PAM" whose subjects are those users: ro -> read-only, op -> vm-operator, the group -> vm-admin; the
outsider is no subject. Made by the `accounts` and `pam` fixtures of tests/contract/conftest.py.

It needs root (useradd, /etc/pam.d/xapi, /etc/shadow) and python-pam; `needs_pam` skips otherwise."""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess

import pytest
import XenAPI

from tests import daemon as _daemon

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAM_FILE = os.path.join(ROOT, "packaging", "pam.d", "xapi")
PAM_CONFIG = "/etc/pam.d/xapi"

needs_pam = [
    pytest.mark.skipif(os.geteuid() != 0, reason="PAM tests need root: they add system users and /etc/pam.d/xapi"),
    pytest.mark.skipif(not all(shutil.which(c) for c in ("useradd", "chpasswd", "userdel", "groupadd", "groupdel")),
                       reason="PAM tests need useradd, chpasswd, userdel, groupadd and groupdel"),
]


def _run(*cmd, stdin=None):
    subprocess.run(cmd, input=stdin, text=True, check=True, capture_output=True)


@contextlib.contextmanager
def throwaway_accounts():
    """Users (name -> password) and a group, removed afterwards."""
    pytest.importorskip("pam", reason="python-pam is not installed")
    if not os.path.exists(PAM_CONFIG):
        # left in place: other PAM tests may be using it, and it only serves the `xapi` service
        if os.path.exists(PAM_FILE):
            shutil.copyfile(PAM_FILE, PAM_CONFIG)
        else:
            with open(PAM_CONFIG, "w") as f:
                f.write("@include common-auth\n@include common-account\n")
        os.chmod(PAM_CONFIG, 0o644)
    tag = secrets.token_hex(4)
    group = f"xapitg-{tag}"
    users = {role: f"xapit-{tag}-{role}" for role in ("ro", "op", "member", "outsider")}
    passwords = {name: "Pw-" + secrets.token_urlsafe(12) for name in users.values()}
    made_group, made = False, []
    try:
        _run("groupadd", group)
        made_group = True
        for role, name in users.items():
            extra = ["-G", group] if role == "member" else []
            _run("useradd", "-M", "-s", "/usr/sbin/nologin", *extra, name)
            made.append(name)
        _run("chpasswd", stdin="".join(f"{n}:{p}\n" for n, p in passwords.items()))
        yield {"users": users, "passwords": passwords, "group": group}
    finally:
        for name in made:
            subprocess.run(["userdel", "-r", name], capture_output=True)
        if made_group:
            subprocess.run(["groupdel", group], capture_output=True)


def local_root(d):
    """root over the Unix socket: no password, never RBAC-checked."""
    s = XenAPI.Session("http://" + d.socket_path.replace("/", "_") + "/", transport=XenAPI.UDSTransport())
    s.xenapi.login_with_password("root", "", "2.3", "rbac-tests")
    return s


@contextlib.contextmanager
def pam_daemon(accounts):
    """The daemon with external auth on and the subjects: {"d", "root" (session), "vm" (a template),
    "subjects", "roles"} and the accounts."""
    d = _daemon.start("--auth", "pam", "--request-timeout", "5")
    try:
        root = local_root(d)
        x = root.xenapi
        (pool,) = x.pool.get_all()
        x.pool.enable_external_auth(pool, {}, "xapi", "PAM")
        role = {name: x.role.get_by_name_label(name)[0] for name in ("read-only", "vm-operator", "vm-admin")}
        users = accounts["users"]
        made = {}
        for identifier, r in ((users["ro"], "read-only"), ("user:" + users["op"], "vm-operator"),
                              ("group:" + accounts["group"], "vm-admin")):
            made[identifier] = ref = x.subject.create({"subject_identifier": identifier, "other_config": {}})
            x.subject.add_to_roles(ref, role[r])
        vm = next(ref for ref, rec in x.VM.get_all_records().items() if rec["is_a_template"])
        yield {"d": d, "root": root, "vm": vm, "subjects": made, "roles": role, **accounts}
        root.xenapi.session.logout()
    finally:
        _daemon.cleanup(d)


def login(env, who, password=None, originator="rbac-tests"):
    """A session of the account `who` ("ro", "op", "member", "outsider") on the PAM daemon."""
    name = env["users"][who]
    s = XenAPI.Session(env["d"].url)
    s.xenapi.login_with_password(name, env["passwords"][name] if password is None else password, "2.3", originator)
    return s
