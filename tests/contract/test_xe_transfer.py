"""xe's file transfers against a live daemon: vdi-import / vdi-export stream a local file through the
thin CLI protocol's HttpPut/HttpGet to /import_raw_vdi and /export_raw_vdi, over the local socket,
plain HTTP, TLS and TLS with a password file; failures come back with xe's text and exit codes."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests import daemon
from tests.contract.xe_client import MODES, ok, xe

MIB = 1 << 20


@pytest.fixture(scope="module")
def d():
    dm = daemon.start()
    yield dm
    daemon.cleanup(dm)


@pytest.fixture(scope="module")
def sr(d):
    return ok(xe(d, "sr-list", "type=ext", "--minimal")).split(",")[0]


def new_vdi(d, sr, size="4MiB", name="xe-transfer"):
    return ok(xe(d, "vdi-create", f"sr-uuid={sr}", f"name-label={name}", f"virtual-size={size}"))


def payload(tmp_path, name="in.raw", size=4 * MIB) -> tuple[str, bytes]:
    data = os.urandom(MIB) + b"\0" * MIB + os.urandom(size - 2 * MIB)
    path = tmp_path / name
    path.write_bytes(data)
    return str(path), data


def transfer_tasks(d, wait: float = 5.0) -> list[str]:
    """The transfer tasks still in the database. A client that failed on its side exits at once, while
    the server may still be winding the transfer down: give it a moment."""
    deadline = time.monotonic() + wait
    while True:
        out = ok(xe(d, "task-list", "params=name-label", "--minimal"))
        left = [t for t in out.split(",") if t in ("VDI import", "VDI export")]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.mark.parametrize("mode", MODES)
def test_import_export_round_trip(d, sr, tmp_path, mode):
    vdi = new_vdi(d, sr)
    src, data = payload(tmp_path)
    r = xe(d, "vdi-import", f"uuid={vdi}", f"filename={src}", mode=mode)
    assert ok(r) == "" and r.stderr == ""
    out = tmp_path / "out.raw"
    ok(xe(d, "vdi-export", f"uuid={vdi}", f"filename={out}", mode=mode))
    assert out.read_bytes() == data
    assert oct(out.stat().st_mode & 0o777) == "0o600"        # xe creates the file for the user only
    assert transfer_tasks(d) == []                             # the command's task is gone


def test_vhd_export_is_a_vhd_and_imports_back(d, sr, tmp_path):
    vdi = new_vdi(d, sr)
    src, data = payload(tmp_path)
    ok(xe(d, "vdi-import", f"uuid={vdi}", f"filename={src}"))
    vhd = tmp_path / "disk.vhd"
    ok(xe(d, "vdi-export", f"uuid={vdi}", f"filename={vhd}", "format=vhd"))
    info = subprocess.run(["qemu-img", "info", "--output=json", str(vhd)], capture_output=True, text=True)
    assert info.returncode == 0 and '"format": "vpc"' in info.stdout
    other = new_vdi(d, sr, name="from-vhd")
    ok(xe(d, "vdi-import", f"uuid={other}", f"filename={vhd}", "format=vhd", mode="tls"))
    back = tmp_path / "back.raw"
    ok(xe(d, "vdi-export", f"uuid={other}", f"filename={back}"))
    assert back.read_bytes() == data


def test_export_to_stdout_and_import_from_a_pipe(d, sr, tmp_path):
    vdi = new_vdi(d, sr)
    data = os.urandom(MIB) + b"\0" * (3 * MIB)
    # /dev/stdin is no regular file: xe sends it without a length (chunked)
    r = xe(d, "vdi-import", f"uuid={vdi}", "filename=/dev/stdin", mode="http", input=data, text=False)
    assert r.returncode == 0, r.stderr
    r = xe(d, "vdi-export", f"uuid={vdi}", "filename=", text=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data                 # nothing else on stdout: no "succeeded" line


def test_progress_bar(d, sr, tmp_path):
    vdi = new_vdi(d, sr)
    src, _ = payload(tmp_path)
    r = xe(d, "vdi-import", f"uuid={vdi}", f"filename={src}", "--progress")
    assert r.returncode == 0, r.stderr
    assert "100%" in r.stderr and "Total time:" in r.stderr and r.stdout == ""


def test_export_never_overwrites(d, sr, tmp_path):
    vdi = new_vdi(d, sr)
    out = tmp_path / "exists.raw"
    out.write_bytes(b"keep me")
    r = xe(d, "vdi-export", f"uuid={vdi}", f"filename={out}", mode="tls")
    assert r.returncode == 1
    assert r.stderr.startswith("Operation failed. Error:") and "File exists" in r.stderr
    assert out.read_bytes() == b"keep me"
    assert transfer_tasks(d) == []


def test_import_of_a_missing_file(d, sr, tmp_path):
    vdi = new_vdi(d, sr)
    r = xe(d, "vdi-import", f"uuid={vdi}", f"filename={tmp_path / 'nope.raw'}")
    assert r.returncode == 1
    assert "Operation failed. Error: file" in r.stderr and "does not exist" in r.stderr
    assert transfer_tasks(d) == []


def test_unknown_format_is_the_servers_error(d, sr, tmp_path):
    vdi = new_vdi(d, sr)
    r = xe(d, "vdi-export", f"uuid={vdi}", f"filename={tmp_path / 'x.qcow2'}", "format=qcow2")
    assert r.returncode == 1
    assert "The server failed to handle your request, due to an internal error." in r.stderr
    assert "message: Unknown format qcow2" in r.stderr
    assert not (tmp_path / "x.qcow2").exists()


def test_import_larger_than_the_disk(d, sr, tmp_path):
    vdi = new_vdi(d, sr, size="2MiB")
    src, _ = payload(tmp_path, size=4 * MIB)
    r = xe(d, "vdi-import", f"uuid={vdi}", f"filename={src}", mode="http")
    assert r.returncode == 1
    assert "Error code: VDI_IO_ERROR" in r.stderr
    assert transfer_tasks(d) == []


def test_unknown_vdi(d, tmp_path):
    r = xe(d, "vdi-export", "uuid=00000000-0000-0000-0000-000000000000", f"filename={tmp_path / 'x'}")
    assert r.returncode == 1
    assert "The uuid you supplied was invalid." in r.stderr
    assert "uuid: 00000000-0000-0000-0000-000000000000" in r.stderr
    r = xe(d, "vdi-import", f"filename={tmp_path / 'x'}")
    assert r.returncode == 1 and "Required parameter not found: uuid" in r.stderr
