"""xe's login, licensing, BIOS and agent commands (user-password-change, pool-enable/disable-external-auth,
subject-add, host-license-add/-remove/-view, host/pool-apply-edition, vm-is-bios-customized,
host-management-disable, host-shutdown-agent) with the real `xe` on a live daemon, checked through the
XenAPI SDK; and every xapi.cli module importing on its own."""
from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest
import XenAPI

from tests import daemon as _daemon
from tests.contract.xe_client import ok, xe
from tests.fixtures import own_daemon, root_xenapi
from tests.helpers import new_vm, process_gone, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

host = own_daemon("--request-timeout", "10")
x = root_xenapi("host")


def test_every_cli_module_imports_first():
    names = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "xapi", "cli", "*.py")))
    procs = {n: subprocess.Popen([sys.executable, "-c", f"import xapi.cli.{n}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True) for n in names}
    failed = {n: p.communicate(timeout=120)[1].strip().splitlines()[-1:] for n, p in procs.items()}
    assert {n: e for n, e in failed.items() if procs[n].returncode != 0} == {}


def login_ok(d, password: str) -> bool:
    s = XenAPI.Session(f"http://127.0.0.1:{d.http_port}")
    try:
        s.xenapi.login_with_password("root", password, "2.3", "xe-test")
    except XenAPI.Failure:
        return False
    s.xenapi.session.logout()
    return True


def test_user_password_change(host):
    ok(xe(host, "user-password-change", "new=Changed-pw-1"))
    try:
        assert login_ok(host, "Changed-pw-1") and not login_ok(host, host.password)
        # the old password is optional and, as xapi, not checked for root's own session
        ok(xe(host, "user-password-change", "old=wrong", "new=Changed-pw-2"))
        assert login_ok(host, "Changed-pw-2")
        missing = xe(host, "user-password-change", "old=x")
        assert missing.returncode == 1 and "new" in missing.stderr
    finally:
        ok(xe(host, "user-password-change", f"new={host.password}"))
    assert login_ok(host, host.password)


def test_external_auth_and_subject_add(host, x):
    (pool,) = x.pool.get_all()
    unknown = xe(host, "pool-enable-external-auth", "auth-type=AD", "service-name=corp.example")
    assert unknown.returncode == 1 and "AUTH_UNKNOWN_TYPE" in unknown.stderr + unknown.stdout
    disabled = xe(host, "subject-add", "subject-name=nobody")
    assert disabled.returncode == 1 and "AUTH_IS_DISABLED" in disabled.stderr + disabled.stdout
    ok(xe(host, "pool-enable-external-auth", "auth-type=PAM", "service-name=xapi", "config:pass=secret",
          "config:domain=local", f"uuid={x.pool.get_uuid(pool)}"))
    try:
        rec = x.host.get_record(x.host.get_all()[0])
        assert (rec["external_auth_type"], rec["external_auth_service_name"]) == ("PAM", "xapi")
        assert rec["external_auth_configuration"] == {"domain": "local"}          # no one-time credentials
        again = xe(host, "pool-enable-external-auth", "auth-type=PAM", "service-name=xapi")
        assert again.returncode == 1 and "AUTH_ALREADY_ENABLED" in again.stderr + again.stdout
        uuid = ok(xe(host, "subject-add", "subject-name=nobody"))
        ref = x.subject.get_by_uuid(uuid)
        srec = x.subject.get_record(ref)
        assert srec["other_config"]["subject-name"] == "nobody" and srec["subject_identifier"].startswith("u")
        twice = xe(host, "subject-add", "subject-name=nobody")
        assert twice.returncode == 1 and "SUBJECT_ALREADY_EXISTS" in twice.stderr + twice.stdout
        nobody = xe(host, "subject-add", "subject-name=no-such-account-xe")
        assert nobody.returncode == 1 and "SUBJECT_CANNOT_BE_RESOLVED" in nobody.stderr + nobody.stdout
        x.subject.destroy(ref)
    finally:
        ok(xe(host, "pool-disable-external-auth"))
    rec = x.host.get_record(x.host.get_all()[0])
    assert (rec["external_auth_type"], rec["external_auth_configuration"]) == ("", {})
    bad = xe(host, "pool-disable-external-auth", "uuid=00000000-0000-0000-0000-000000000000")
    assert bad.returncode == 1 and "00000000-0000-0000-0000-000000000000" in bad.stderr + bad.stdout


def test_license_commands(host, x, tmp_path):
    h = x.host.get_all()[0]
    missing = xe(host, "host-license-add", f"license-file={tmp_path}/none.xml")
    assert (missing.returncode, missing.stderr) == (1, "Failed to read license file.\n")
    lic = tmp_path / "license.xml"
    lic.write_text("<license sku_type='bogus'/>")
    refused = xe(host, "host-license-add", f"license-file={lic}", f"host-uuid={x.host.get_uuid(h)}")
    assert (refused.returncode, refused.stderr) == (1, "Failed to apply license file.\n")
    ok(xe(host, "host-license-remove"))
    bad = xe(host, "host-license-remove", "host-uuid=00000000-0000-0000-0000-000000000000")
    assert bad.returncode == 1 and "00000000-0000-0000-0000-000000000000" in bad.stderr + bad.stdout
    view = ok(xe(host, "host-license-view"))
    shown = dict(line.strip().split(": ", 1) if ": " in line else (line.strip().rstrip(":"), "")
                 for line in view.splitlines() if line.strip())
    params = x.host.get_license_params(h)
    assert shown == {k: v for k, v in params.items() if k != "sku_type"}


def test_apply_edition(host, x):
    h = x.host.get_all()[0]
    editions = x.host.get_editions(h)
    assert ok(xe(host, "host-all-editions")) == "\n".join(editions)
    before = x.host.get_license_server(h)
    # an unknown edition: the valid ones, then the API's error; the new licence server stays (as xapi)
    wrong = xe(host, "host-apply-edition", "edition=platinum", "license-server-address=10.9.9.9")
    assert wrong.returncode == 1 and wrong.stderr.startswith("Valid editions are: " + ", ".join(editions) + "\n")
    assert "platinum" in wrong.stderr.split("\n", 1)[1]
    assert x.host.get_license_server(h) == {**before, "address": "10.9.9.9"}
    x.host.set_license_server(h, before)
    edition = x.host.get_edition(h)
    ok(xe(host, "host-apply-edition", f"edition={edition}", f"host-uuid={x.host.get_uuid(h)}",
          "license-server-address=10.9.9.9", "license-server-port=27001"))
    assert x.host.get_edition(h) == edition
    assert x.host.get_license_server(h) == {**before, "address": "10.9.9.9", "port": "27001"}
    x.host.set_license_server(h, before)
    ok(xe(host, "pool-apply-edition", f"edition={edition}", "license-server-port=27002"))
    assert x.host.get_edition(h) == edition and x.host.get_license_server(h)["port"] == "27002"
    bad_port = xe(host, "pool-apply-edition", f"edition={edition}", "license-server-port=70000")
    assert bad_port.returncode == 0
    assert bad_port.stderr == "NOTE: The given port number is invalid; reverting to the current value.\n"
    assert x.host.get_license_server(h)["port"] == "27002"
    x.host.set_license_server(h, before)


def test_vm_is_bios_customized(host, x):
    vms = [new_vm(x, "xe-bios-none"), new_vm(x, "xe-bios-generic"), new_vm(x, "xe-bios-custom")]
    try:
        x.VM.set_bios_strings(vms[1], {})
        x.VM.set_bios_strings(vms[2], {"bios-vendor": "Acme"})
        said = [ok(xe(host, "vm-is-bios-customized", f"uuid={x.VM.get_uuid(v)}")) for v in vms]
        assert said == ["The BIOS strings of this VM have not yet been set.", "This VM is BIOS-generic.",
                        "This VM is BIOS-customized."]
        several = xe(host, "vm-is-bios-customized", "name-label=xe-bios-none")
        assert ok(several) == said[0]
        nomatch = xe(host, "vm-is-bios-customized", "name-label=xe-bios-nothing")
        assert (nomatch.returncode, nomatch.stderr) == (1, "Error: No matching VMs found\n")
    finally:
        for v in vms:
            x.VM.destroy(v)


def test_host_management_disable(host, x):
    h = x.host.get_all()[0]
    pif = x.host.get_management_interface(h)
    assert pif != "OpaqueRef:NULL" and x.PIF.get_management(pif)
    ok(xe(host, "host-management-disable"))
    try:
        assert not any(x.PIF.get_management(p) for p in x.host.get_PIFs(h))
    finally:
        ok(xe(host, "host-management-reconfigure", f"pif-uuid={x.PIF.get_uuid(pif)}"))
    assert x.PIF.get_management(pif)


def test_host_shutdown_agent():
    d = _daemon.start("--request-timeout", "10")
    try:
        ok(xe(d, "host-shutdown-agent"))
        assert wait_for(lambda: d.proc.poll() is not None, timeout=15)
        assert process_gone(d.proc.pid)
    finally:
        _daemon.cleanup(d)


@pytest.mark.parametrize("cmd", ["user-password-change", "pool-enable-external-auth", "pool-disable-external-auth",
                                 "subject-add", "host-license-add", "host-license-remove", "host-license-view",
                                 "host-apply-edition", "pool-apply-edition", "host-all-editions", "vm-is-bios-customized",
                                 "host-management-disable", "host-shutdown-agent",
                                 "host-get-system-status-capabilities", "host-bugreport-upload", "host-cpu-info"])
def test_listed_in_help(host, cmd):
    assert cmd in ok(xe(host, "help", "--all", "--minimal")).split(",")
    assert f"command name            : {cmd}" in ok(xe(host, "help", cmd))


def test_status_capabilities_and_bugreport_upload(host, x, tmp_path):
    import http.server
    import threading
    h = x.host.get_all()[0]
    got = ok(xe(host, "host-get-system-status-capabilities", f"uuid={x.host.get_uuid(h)}"))
    assert got == x.host.get_system_status_capabilities(h).strip()
    received = []

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):  # noqa: N802 - http.server's name
            received.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ok(xe(host, "host-bugreport-upload", f"url=http://127.0.0.1:{server.server_port}/report.tar.gz"))
        assert [p for p, _ in received] == ["/report.tar.gz"] and received[0][1][:2] == b"\x1f\x8b"   # gzip
    finally:
        server.shutdown()
        server.server_close()
    refused = xe(host, "host-bugreport-upload", f"url=http://127.0.0.1:{server.server_port}/gone")
    assert refused.returncode == 1 and "Failed to connect to host" in refused.stderr + refused.stdout


def test_host_cpu_info(host, x):
    h = x.host.get_all()[0]
    info = x.host.get_cpu_info(h)
    shown = dict(line.strip().split(": ", 1) if ": " in line else (line.strip().rstrip(":").strip(), "")
                 for line in ok(xe(host, "host-cpu-info")).splitlines() if line.strip())
    assert {k.strip(): v for k, v in shown.items()} == info
    assert ok(xe(host, "host-cpu-info", f"uuid={x.host.get_uuid(h)}")) == ok(xe(host, "host-cpu-info"))
    bad = xe(host, "host-cpu-info", "uuid=00000000-0000-0000-0000-000000000000")
    assert bad.returncode == 1 and "00000000-0000-0000-0000-000000000000" in bad.stderr + bad.stdout


def test_vm_call_plugin_reads_file_args(host, x, tmp_path):
    vm = new_vm(x, "xe-plugin-file")
    uuid = x.VM.get_uuid(vm)
    try:
        gone = xe(host, "vm-call-plugin", f"vm-uuid={uuid}", "plugin=guest-agent-operation", "fn=nope",
                  f"args:script:file={tmp_path}/missing.sh")
        assert (gone.returncode, gone.stderr) == (1, f"Failed to read file {tmp_path}/missing.sh\n")
        script = tmp_path / "script.sh"
        script.write_text("echo hi\n")
        # read, then the call reaches the plugin, which has no such fn (the API's error, not the file's)
        read = xe(host, "vm-call-plugin", f"vm-uuid={uuid}", "plugin=guest-agent-operation", "fn=nope",
                  f"args:script:file={script}")
        assert read.returncode == 1 and "Failed to read file" not in read.stderr and "nope" in read.stderr
    finally:
        x.VM.destroy(vm)
