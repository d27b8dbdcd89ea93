"""The pool secret: a shared token every host of a pool holds, kept in <data>/ptoken (xapi keeps it in
/etc/xensource/ptoken). It authenticates a member's session.slave_login and every internal call.
A standalone host makes its own at first start; a joining host takes the coordinator's."""
from __future__ import annotations

import hmac
import os
import secrets

from xapi import atomic

FILE = "ptoken"


def path(data_dir: str) -> str:
    return os.path.join(data_dir, FILE)


def load_or_create(data_dir: str) -> str:
    p = path(data_dir)
    try:
        with open(p) as f:
            value = f.read().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    value = new()
    store(data_dir, value)
    return value


def new() -> str:
    return secrets.token_urlsafe(32)


def store(data_dir: str, value: str) -> None:
    atomic.write_file(path(data_dir), (value + "\n").encode(), 0o600)


def matches(expected: str, given) -> bool:
    """Constant-time comparison (the secret must not leak through timing)."""
    return type(given) is str and hmac.compare_digest(expected.encode(), given.encode())
