"""The bash completion for xe (packaging/xe-completion) in a real bash against a live daemon: the
completion function runs with COMP_WORDS/COMP_CWORD as bash sets them (words split at '=') and asks the
real `xe` for the command table (`xe help --minimal --all`, `xe help <cmd>`) and for objects."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys

from tests.fixtures import own_daemon

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "packaging", "xe-completion")
BIN = os.path.dirname(sys.executable)          # where the .venv's `xe` is


d = own_daemon()


def complete(d, words: list[str], cword: int | None = None, socket: bool = True) -> list[str]:
    """COMPREPLY for the command line `words` with the cursor in the word at cword (default: last)."""
    cword = len(words) - 1 if cword is None else cword
    script = (f"source {shlex.quote(SCRIPT)}\n"
              f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\n"
              f"COMP_CWORD={cword}\n"
              "_xe\n"
              "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""),
               XAPI_SOCKET=d.socket_path if socket else os.path.join(d.data_dir, "no-such-socket"))
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [ln for ln in r.stdout.split("\n") if ln]


def xe(d, *args) -> str:
    env = dict(os.environ, XAPI_SOCKET=d.socket_path)
    r = subprocess.run([os.path.join(BIN, "xe"), *args], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_command_names(d):
    got = complete(d, ["xe", "vdi-ex"])
    assert got == ["vdi-export"]
    got = complete(d, ["xe", "vm-s"])
    assert {"vm-start", "vm-shutdown", "vm-suspend", "vm-snapshot"} <= set(got)
    assert all(c.startswith("vm-s") for c in got)
    assert len(complete(d, ["xe", ""])) >= 100


def test_parameter_names(d):
    got = complete(d, ["xe", "vdi-export", ""])
    assert {"uuid=", "filename=", "format=", "--progress "} <= set(got)
    assert complete(d, ["xe", "vdi-export", "fi"]) == ["filename="]
    got = complete(d, ["xe", "vm-start", ""])
    assert {"vm=", "on=", "--force ", "--multiple "} <= set(got)
    assert "device-config:" in complete(d, ["xe", "sr-create", "dev"])


def test_uuid_values(d):
    sr = xe(d, "sr-list", "type=ext", "--minimal")
    vdi = xe(d, "vdi-create", f"sr-uuid={sr}", "name-label=completion", "virtual-size=1MiB")
    # `xe vdi-param-list uuid=<TAB>`: bash hands over ... "uuid" "=" with the cursor on "="
    got = complete(d, ["xe", "vdi-param-list", "uuid", "="])
    assert vdi in got
    assert complete(d, ["xe", "vdi-param-list", "uuid", "=", vdi[:8]]) == [vdi]
    assert complete(d, ["xe", "vdi-param-list", "uuid", "=", vdi[:8], "param-name", "="], cword=4) == [vdi]
    # <class>-uuid= completes that class's uuids
    assert complete(d, ["xe", "vdi-create", "sr-uuid", "=", sr[:6]]) == [sr]


def test_names_and_files(d, tmp_path):
    host = xe(d, "host-list", "params=name-label", "--minimal")
    assert host in complete(d, ["xe", "vm-start", "on", "="])
    dom0 = xe(d, "vm-list", "params=name-label", "--minimal").split(",")[0]
    assert dom0 in complete(d, ["xe", "vm-shutdown", "vm", "="])        # names with spaces stay whole
    (tmp_path / "disk-image.raw").write_bytes(b"")
    got = complete(d, ["xe", "vdi-import", "filename", "=", str(tmp_path / "disk-")])
    assert got == [str(tmp_path / "disk-image.raw")]


def test_field_names(d):
    got = complete(d, ["xe", "vm-list", "params", "=", "power"])
    assert got == ["power-state"]
    got = complete(d, ["xe", "vm-list", "params", "=", "uuid,name-l"])
    assert got == ["uuid,name-label"]
    assert "name-label" in complete(d, ["xe", "sr-param-get", "uuid", "=", "x", "param-name", "="])


def test_connection_options_are_passed_on(d):
    words = ["xe", "-s", "127.0.0.1", "-p", str(d.http_port), "--nossl", "-u", "root", "-pw", d.password,
             "vdi-ex"]
    assert complete(d, words, socket=False) == ["vdi-export"]
    assert complete(d, ["xe", "vdi-ex"], socket=False) == []      # no server: nothing, and no error


def test_installed_by_the_rpm():
    spec = open(os.path.join(ROOT, "packaging", "xapi.spec")).read()
    assert "xe-completion" in spec and "bash_completion.d/xe" in spec
