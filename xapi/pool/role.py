"""This host's pool role, kept in <data>/pool.conf as xapi keeps /etc/xensource/pool.conf: "master",
or "slave:<coordinator address>"; a member adds a line "fingerprint:<SHA-256>" with the coordinator's
certificate fingerprint, which its internal calls to the coordinator pin."""
from __future__ import annotations

import os
from dataclasses import dataclass

from xapi import atomic

FILE = "pool.conf"


@dataclass
class Role:
    coordinator: bool = True
    address: str = ""           # the coordinator's address (members)
    fingerprint: str = ""       # its certificate's fingerprint (members)


def read(data_dir: str) -> Role:
    try:
        with open(os.path.join(data_dir, FILE)) as f:
            lines = [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        return Role()
    if not lines or not lines[0].startswith("slave:"):
        return Role()
    fp = next((line[len("fingerprint:"):] for line in lines[1:] if line.startswith("fingerprint:")), "")
    return Role(False, lines[0][len("slave:"):], fp)


def write(data_dir: str, role: Role) -> None:
    text = "master\n" if role.coordinator else f"slave:{role.address}\nfingerprint:{role.fingerprint}\n"
    atomic.write_file(os.path.join(data_dir, FILE), text.encode(), 0o644)
