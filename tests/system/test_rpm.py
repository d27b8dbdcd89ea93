"""`make rpm`: the binary RPM of packaging/xapi.spec, built once into a temporary _topdir, then
read with `rpm -qlp`, `rpm -qp --scripts`, `rpm -qp --provides` and `rpm -qpc`; its payload is
unpacked (rpm2archive | tar) to run the wrappers and the cookie script for real.

Builds the committed tree (git archive HEAD) with the venv's Cython/cffi: about 35 s."""
import os
import shutil
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIBDIR = "/opt/xensource/lib/pyxapi"
UNITDIR = "/usr/lib/systemd/system"

pytestmark = [
    pytest.mark.skipif(not shutil.which("rpmbuild"),
                       reason="rpmbuild is missing: install Debian's package `rpm` (tools/system-deps.sh does, as root)"),
    pytest.mark.skipif(not os.path.isdir(os.path.join(ROOT, ".git")) or not shutil.which("git"),
                       reason="`make rpm` packs the committed tree with git archive: needs git and the checkout"),
]


@pytest.fixture(scope="module")
def rpm_file(tmp_path_factory):
    top = tmp_path_factory.mktemp("rpmtop")
    r = subprocess.run(["make", "-s", "rpm", f"RPM_TOP={top}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"make rpm failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    rpms = [os.path.join(d, f) for d, _, fs in os.walk(top / "RPMS") for f in fs if f.endswith(".rpm")]
    assert len(rpms) == 1, rpms
    return rpms[0]


@pytest.fixture(scope="module")
def payload(rpm_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("payload")
    # rpm2archive (Debian's rpm) writes the payload as a tar.gz: no cpio needed
    subprocess.run(f"rpm2archive - < '{rpm_file}' | tar xzf -", shell=True, cwd=root, check=True)
    return root


def rpm_q(*args):
    return subprocess.run(["rpm", *args], capture_output=True, text=True, check=True).stdout


def test_file_list(rpm_file):
    files = set(rpm_q("-qlp", rpm_file).split())
    for path in ("/opt/xensource/bin/xapi", "/opt/xensource/bin/xe", "/usr/bin/xe",
                 "/opt/xensource/libexec/pyxapi-cookies",
                 f"{UNITDIR}/xapi.service", f"{UNITDIR}/xapi-xenopsd.service", f"{UNITDIR}/xapi-ha.service",
                 f"{UNITDIR}/toolstack.target",
                 "/etc/xapi.conf", "/etc/pam.d/xapi", "/etc/bash_completion.d/xe", "/etc/logrotate.d/xapi",
                 f"{LIBDIR}/xapi/cli/main.py", f"{LIBDIR}/xapi/cli/xe.py", f"{LIBDIR}/xapi/daemon.py",
                 # the packages of the pool, simulator, XVA, storage fork server, xenopsd, xenstored
                 f"{LIBDIR}/xapi/pool/__init__.py", f"{LIBDIR}/xapi/sim/__init__.py",
                 f"{LIBDIR}/xapi/xva/__init__.py", f"{LIBDIR}/xapi/xva/handlers.py",
                 f"{LIBDIR}/xapi/sm/forkserver.py", f"{LIBDIR}/xapi/xenops/__main__.py",
                 f"{LIBDIR}/xapi/xenstored/__init__.py"):
        assert path in files, path
    so = {os.path.basename(f).split(".")[0] for f in files if f.endswith(".so")}
    assert {"_fastdb", "_rpc", "_xenctrl", "_xenstore"} <= so, so
    assert not [f for f in files if f.endswith((".pyx", ".pxd"))]


def _nfs_fuse_buildable() -> bool:
    return shutil.which("pkg-config") is not None and \
        subprocess.run(["pkg-config", "--exists", "libnfs", "fuse3"]).returncode == 0


@pytest.mark.skipif(not _nfs_fuse_buildable(),
                    reason="no libnfs/fuse3 development files: `make rpm` builds without xapi-nfs-mount")
def test_ships_the_userspace_nfs_client(rpm_file, payload):
    """xapi-nfs-mount (csrc/nfs_fuse.c), on PATH where the storage drivers look for it, runs from the
    payload, and the package requires the libraries it links (rpm's automatic ELF requirements)."""
    assert "/usr/bin/xapi-nfs-mount" in set(rpm_q("-qlp", rpm_file).split())
    binary = payload / "usr/bin/xapi-nfs-mount"
    assert os.access(binary, os.X_OK)
    r = subprocess.run([str(binary)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "usage: xapi-nfs-mount SERVER:/PATH MOUNTPOINT" in r.stdout + r.stderr
    requires = rpm_q("-qp", "--requires", rpm_file)
    assert "libnfs.so" in requires and "libfuse3.so" in requires, requires


def test_scriptlets_are_systemd(rpm_file):
    scripts = rpm_q("-qp", "--scripts", rpm_file)
    for section in ("postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet"):
        assert section in scripts, scripts
    assert "systemctl" in scripts and "xapi.service" in scripts
    assert "preset" in scripts and "disable" in scripts and "try-restart" in scripts, scripts


def test_provides_and_conflicts(rpm_file, tmp_path):
    provides = rpm_q("-qp", "--provides", rpm_file).splitlines()
    assert "xapi-api-version = 2.21" in provides
    # it takes the place of XCP-ng's xapi-core and xapi-xe: their names stay provided for the
    # packages that require them, and their clashing files make it conflict with them
    assert "xapi-core" in provides and "xapi-xe" in provides
    conflicts = rpm_q("-qp", "--conflicts", rpm_file).split()
    assert "xapi-core" in conflicts and "xapi-xe" in conflicts
    assert "zstd" in rpm_q("-qp", "--requires", rpm_file).split()
    # rpm ignores a conflict with a name the package provides itself: a test install into an
    # empty database fails only on the Python requirements Debian's rpm cannot see
    r = subprocess.run(["rpm", "-i", "--test", "--dbpath", str(tmp_path / "db"), rpm_file],
                       capture_output=True, text=True)
    assert "conflicts" not in r.stderr, r.stderr
    assert "is needed by" in r.stderr, r.stderr


def test_config_files(rpm_file):
    config = set(rpm_q("-qpc", rpm_file).split())
    assert {"/etc/xapi.conf", "/etc/pam.d/xapi", "/etc/bash_completion.d/xe", "/etc/logrotate.d/xapi"} <= config
    # %config for xapi.conf (as xapi-core), %config(noreplace) for the PAM file
    fmt = rpm_q("-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", rpm_file)
    flags = dict(line.split(" ", 1) for line in fmt.splitlines() if line.startswith("/etc/") and " " in line)
    assert "n" not in flags["/etc/xapi.conf"] and "c" in flags["/etc/xapi.conf"]
    assert "n" in flags["/etc/pam.d/xapi"]


def test_pam_service_is_dom0s(payload):
    """dom0 is Red Hat-like: the service includes system-auth, as xen-api's scripts/pam.d-xapi."""
    text = (payload / "etc/pam.d/xapi").read_text()
    rules = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert rules == [["auth", "include", "system-auth"], ["account", "include", "system-auth"],
                     ["password", "include", "system-auth"]]


def test_units(payload):
    xapi = (payload / UNITDIR.lstrip("/") / "xapi.service").read_text()
    for line in ("Type=simple", "Restart=on-failure", "PartOf=toolstack.target",
                 "ExecStart=/opt/xensource/bin/xapi", "ExecStartPost=/opt/xensource/libexec/pyxapi-cookies wait"):
        assert line in xapi, line
    for unit in ("xapi-xenopsd.service", "xapi-ha.service"):
        text = (payload / UNITDIR.lstrip("/") / unit).read_text()
        assert "PartOf=toolstack.target" in text and "\n[Install]" not in text
        assert "@" not in text.replace("stunnel@", "")
    xenopsd = (payload / UNITDIR.lstrip("/") / "xapi-xenopsd.service").read_text()
    # the module it runs is in the package (xapi.service runs the same xenopsd in process)
    assert f"Environment=PYTHONPATH={LIBDIR}" in xenopsd and "-m xapi.xenops --socket " in xenopsd
    assert (payload / LIBDIR.lstrip("/") / "xapi/xenops/__main__.py").is_file()
    assert "Conflicts=xenopsd-xc.service" in xenopsd
    # HA: no module yet, so the unit is skipped by its condition
    ha = (payload / UNITDIR.lstrip("/") / "xapi-ha.service").read_text()
    assert f"ConditionPathExists={LIBDIR}/xapi/ha/__init__.py" in ha
    assert not (payload / LIBDIR.lstrip("/") / "xapi/ha/__init__.py").exists()
    target = (payload / UNITDIR.lstrip("/") / "toolstack.target").read_text()
    assert "Wants=xapi.service" in target


def test_installed_tree_imports_its_extensions(payload, tmp_path):
    # the venv's interpreter stands in for dom0's: it has the Python dependencies
    code = ("import xapi, xapi._fastdb, xapi._rpc, xapi._xenctrl, xapi._xenstore, xapi.cli.main;"
            "print(xapi.__file__)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(payload / LIBDIR.lstrip("/"))})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith(str(payload / LIBDIR.lstrip("/")))


def test_xapi_wrapper_arguments(payload, tmp_path):
    # Runs the packaged wrapper with its interpreter swapped for a script that prints its arguments.
    wrapper = (payload / "opt/xensource/bin/xapi").read_text()
    assert f"LIBDIR={LIBDIR}" in wrapper
    echo = tmp_path / "echo-args"
    echo.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    echo.chmod(0o755)
    test_wrapper = tmp_path / "xapi"
    test_wrapper.write_text(wrapper.replace("PYTHON=", f"PYTHON={echo} #", 1)
                            .replace("/etc/xapi.conf", str(tmp_path / "xapi.conf")))
    test_wrapper.chmod(0o755)
    (tmp_path / "xapi.conf").write_text("# comment\naddress = 0.0.0.0\nhttps_port=0\nunknown-ocaml-key = 1\n")
    (tmp_path / "xapi.conf.d").mkdir()
    (tmp_path / "xapi.conf.d" / "z.conf").write_text("log-level = DEBUG\n")
    out = subprocess.run([str(test_wrapper), "--http-port", "8080"], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["-m", "xapi.cli.main", "serve", "--data-dir", "/var/lib/xcp", "--http-port", "80",
                   "--https-port", "443", "--address=0.0.0.0", "--https-port=0", "--log-level=DEBUG",
                   "--http-port", "8080"]


def test_cookie_script(payload, tmp_path):
    script = str(payload / "opt/xensource/libexec/pyxapi-cookies")
    data, run = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    run.mkdir()
    env = {**os.environ, "XAPI_DATA_DIR": str(data), "XAPI_RUN_DIR": str(run), "MAINPID": str(os.getpid()),
           "XAPI_COOKIE_TIMEOUT": "5"}
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(data / "xapi"))
    try:
        (data / "xapi.pid").write_text(f"{os.getpid()}\n")
        subprocess.run([script, "wait"], env=env, check=True, timeout=10)
        assert (run / "xapi_startup.cookie").exists() and (run / "xapi_init_complete.cookie").exists()
        subprocess.run([script, "clear"], env=env, check=True, timeout=10)
        assert not os.listdir(run)
        # a stale pid file: startup cookie only, then a failure once the daemon is gone
        (data / "xapi.pid").write_text("1\n")
        dead = subprocess.Popen(["true"])
        dead.wait()
        r = subprocess.run([script, "wait"], env={**env, "MAINPID": str(dead.pid)}, timeout=10)
        assert r.returncode != 0 and not (run / "xapi_init_complete.cookie").exists()
    finally:
        sock.close()


def test_packaged_xe_against_a_daemon(payload, tmp_path):
    """/usr/bin/xe -> /opt/xensource/bin/xe runs the packaged client (its interpreter swapped for
    the venv's, which stands in for dom0's) against a live daemon's local socket."""
    sys.path.insert(0, ROOT)
    from tests import daemon
    assert os.readlink(payload / "usr/bin/xe") == "../../opt/xensource/bin/xe"
    text = (payload / "opt/xensource/bin/xe").read_text()
    assert "PYTHON=/usr/bin/python3\n" in text and f"LIBDIR={LIBDIR}\n" in text
    xe = tmp_path / "xe"
    xe.write_text(text.replace("PYTHON=/usr/bin/python3", f"PYTHON={sys.executable}")
                  .replace(f"LIBDIR={LIBDIR}", f"LIBDIR={payload / LIBDIR.lstrip('/')}"))
    xe.chmod(0o755)
    d = daemon.start()
    try:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["XAPI_SOCKET"] = d.socket_path
        r = subprocess.run([str(xe), "host-list", "params=uuid,enabled"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.split("\n")
        assert lines[0].startswith("uuid ( RO)       : ") and lines[1] == "    enabled ( RO): true"
        r = subprocess.run([str(xe), "-version"], env=env, capture_output=True, text=True, timeout=30)
        assert r.stdout == "ThinCLI protocol: 0.2\n"
    finally:
        daemon.cleanup(d)
