"""xe's records (xapi.cli.records, after xapi-cli-server's records.ml) with the real `xe` against a live
daemon: the fields stock xe shows, under its names, in its order, with its kinds; derived fields
checked against the XenAPI SDK's view of the same objects; editing through xe's names and xe's
errors for fields that can't be edited."""
from __future__ import annotations

import re

import pytest
import XenAPI

from tests import daemon
from tests.contract.xe_client import ok, xe
from tests.helpers import MIB, management_network, new_vdi, new_vm, vbd_record, vif_record, wait_for
from xapi import xenctrl

pytestmark = pytest.mark.skipif(not hasattr(xenctrl.Interface, "domain_create"),
                                reason="the xenctrl shim has no domain operations yet")


@pytest.fixture(scope="module")
def d():
    dm = daemon.start("--request-timeout", "10", env={"XAPI_GUEST_AGENT_DELAY": "0.1",
                                                       "XAPI_METRICS_INTERVAL": "0.2"})
    yield dm
    daemon.cleanup(dm)


@pytest.fixture(scope="module")
def x(d):
    s = XenAPI.Session(d.url)
    s.xenapi.login_with_password("root", d.password)
    yield s.xenapi
    s.xenapi.session.logout()


@pytest.fixture(scope="module")
def running(d, x):
    """A running VM with a VIF and a disk, whose guest agent has reported."""
    vm = new_vm(x, "records", memory=128 * MIB, vcpus=2)
    x.VIF.create(vif_record(vm, management_network(x)))
    sr = x.SR.get_by_name_label("Local storage")[0]
    vdi = new_vdi(x, sr, name="records-disk")
    x.VBD.create(vbd_record(vm, vdi))
    x.VM.start(vm, False, False)
    assert wait_for(lambda: x.VM.get_guest_metrics(vm) != "OpaqueRef:NULL"
                    and x.VM_guest_metrics.get_os_version(x.VM.get_guest_metrics(vm)), 10)
    return vm


def get(d, prefix, uuid, name, *extra) -> str:
    return ok(xe(d, f"{prefix}-param-get", f"uuid={uuid}", f"param-name={name}", *extra))


def shown_map(m: dict) -> str:
    return "; ".join(f"{k}: {v}" for k, v in m.items())


def labels(out: str) -> list[str]:
    """The `name (kind)` of each line of a record."""
    return [m.group(1) for m in re.finditer(r"^ *(\S+ \((?: R[OW]|[SM]R[OW])\)(?: \[DEPRECATED\])?) *:", out, re.M)]


def test_vm_fields_derived_from_metrics_and_guest_agent(d, x, running):
    uuid = x.VM.get_uuid(running)
    metrics = x.VM_metrics.get_record(x.VM.get_metrics(running))
    assert get(d, "vm", uuid, "memory-actual") == metrics["memory_actual"]
    assert get(d, "vm", uuid, "VCPUs-number") == metrics["VCPUs_number"] == "2"
    assert get(d, "vm", uuid, "start-time") == metrics["start_time"].value
    gm = x.VM_guest_metrics.get_record(x.VM.get_guest_metrics(running))
    assert get(d, "vm", uuid, "os-version") == shown_map(gm["os_version"])
    key, value = next(iter(gm["os_version"].items()))
    assert get(d, "vm", uuid, "os-version", f"param-key={key}") == value
    assert get(d, "vm", uuid, "networks") == shown_map(gm["networks"])
    assert get(d, "vm", uuid, "PV-drivers-version") == shown_map(gm["PV_drivers_version"])
    assert get(d, "vm", uuid, "live") == str(gm["live"]).lower()
    assert get(d, "vm", uuid, "guest-metrics-last-updated") == gm["last_updated"].value
    # API calls
    assert get(d, "vm", uuid, "allowed-VBD-devices") == "; ".join(x.VM.get_allowed_VBD_devices(running))
    assert get(d, "vm", uuid, "allowed-VIF-devices") == "; ".join(x.VM.get_allowed_VIF_devices(running))
    assert get(d, "vm", uuid, "possible-hosts") == "; ".join(
        x.host.get_uuid(h) for h in x.VM.get_possible_hosts(running))
    # references as uuids, sets of them joined with "; "
    host = x.VM.get_resident_on(running)
    assert get(d, "vm", uuid, "resident-on") == x.host.get_uuid(host)
    assert get(d, "vm", uuid, "dom-id") == x.VM.get_domid(running)
    assert get(d, "vm", uuid, "VBDs") == "; ".join(x.VBD.get_uuid(v) for v in x.VM.get_VBDs(running))
    assert get(d, "vm", uuid, "power-state") == "running"
    assert get(d, "vm", uuid, "actions-after-reboot") == "Restart"
    # a hidden field: not listed, but param-get reads it
    assert get(d, "vm", uuid, "nomigrate") == str(metrics["nomigrate"]).lower()


def test_vm_record_names_order_and_kinds(d, x, running):
    uuid = x.VM.get_uuid(running)
    got = labels(ok(xe(d, "vm-param-list", f"uuid={uuid}")))
    # records.ml's order, kinds and [DEPRECATED] marks
    expected = ["uuid ( RO)", "name-label ( RW)", "name-description ( RW)", "user-version ( RW)",
                "is-a-template ( RW)", "is-default-template ( RW)", "is-a-snapshot ( RO)", "snapshot-of ( RO)",
                "snapshots ( RO)", "snapshot-time ( RO)", "snapshot-info ( RO)", "parent ( RO)",
                "children ( RO)", "is-control-domain ( RO)", "power-state ( RO)", "memory-actual ( RO)",
                "memory-target ( RO)", "memory-overhead ( RO)", "memory-static-max ( RW)"]
    assert got[:len(expected)] == expected
    for label in ("other-config (MRW)", "tags (SRW)", "os-version (MRO)", "console-uuids (SRO)",
                  "allowed-VBD-devices (SRO)", "possible-hosts ( RO)", "VCPUs-utilisation (MRO)",
                  "PV-drivers-up-to-date ( RO) [DEPRECATED]", "cooperative ( RO) [DEPRECATED]",
                  "bios-strings (MRO)", "blocked-operations (MRW)", "dom-id ( RO)", "networks (MRO)"):
        assert label in got, label
    assert got.index("VBDs (SRO)") < got.index("networks (MRO)") < got.index("tags (SRW)")
    names = [g.split(" ")[0] for g in got]
    assert "NVRAM" not in names and "nomigrate" not in names and "transportable-snapshot-id" not in names
    # <class>-list shows expensive fields as such, the others with their value
    out = ok(xe(d, "vm-list", f"uuid={uuid}", "params=memory-actual,allowed-VBD-devices,uuid"))
    lines = out.strip().split("\n")
    assert [ln.split(":")[0].strip() for ln in lines] == ["uuid ( RO)", "memory-actual ( RO)",
                                                          "allowed-VBD-devices (SRO)"]
    assert lines[2].endswith(": <expensive field>")
    assert lines[1].endswith(": " + x.VM_metrics.get_memory_actual(x.VM.get_metrics(running)))
    # params=all: every field that is not hidden, in the same order as param-list
    assert labels(ok(xe(d, "vm-list", f"uuid={uuid}", "params=all"))) == got


def test_host_fields(d, x):
    host = x.host.get_all()[0]
    uuid = x.host.get_uuid(host)
    metrics = x.host_metrics.get_record(x.host.get_metrics(host))
    assert get(d, "host", uuid, "memory-total") == metrics["memory_total"]
    free = int(get(d, "host", uuid, "memory-free"))
    assert free == int(x.host_metrics.get_memory_free(x.host.get_metrics(host))) or free == int(
        metrics["memory_free"])
    assert get(d, "host", uuid, "host-metrics-live") == str(metrics["live"]).lower()
    cpu_info = x.host.get_cpu_info(host)
    assert get(d, "host", uuid, "cpu_info") == shown_map(cpu_info)
    assert get(d, "host", uuid, "cpu_info", "param-key=cpu_count") == cpu_info["cpu_count"]
    assert get(d, "host", uuid, "hostname") == x.host.get_hostname(host)
    assert get(d, "host", uuid, "address") == x.host.get_address(host)
    assert get(d, "host", uuid, "software-version") == shown_map(x.host.get_software_version(host))
    assert get(d, "host", uuid, "capabilities") == "; ".join(x.host.get_capabilities(host))
    assert get(d, "host", uuid, "resident-vms") == "; ".join(x.VM.get_uuid(v) for v in x.host.get_resident_VMs(host))
    assert get(d, "host", uuid, "control-domain-uuid") == x.VM.get_uuid(x.host.get_control_domain(host))
    assert get(d, "host", uuid, "memory-free-computed") == x.host.compute_free_memory(host)
    got = labels(ok(xe(d, "host-param-list", f"uuid={uuid}")))
    assert got[:4] == ["uuid ( RO)", "name-label ( RW)", "name-description ( RW)", "allowed-operations (SRO)"]
    assert {"software-version (MRO)", "memory-free ( RO)", "supported-bootloaders (SRO)", "logging (MRW)",
            "patches (SRO) [DEPRECATED]"} <= set(got)
    # host-cpu: its own record and list columns
    cpu = x.host.get_host_CPUs(host)[0]
    cpu_uuid = x.host_cpu.get_uuid(cpu)
    assert get(d, "host-cpu", cpu_uuid, "host-uuid") == uuid
    assert get(d, "host-cpu", cpu_uuid, "number") == x.host_cpu.get_number(cpu)
    out = ok(xe(d, "host-cpu-list", f"uuid={cpu_uuid}"))
    assert labels(out) == ["uuid ( RO)", "number ( RO)", "vendor ( RO)", "speed ( RO)", "utilisation ( RO)"]


def test_storage_records(d, x, running):
    sr = x.SR.get_by_name_label("Local storage")[0]
    sr_uuid = x.SR.get_uuid(sr)
    assert get(d, "sr", sr_uuid, "PBDs") == "; ".join(x.PBD.get_uuid(p) for p in x.SR.get_PBDs(sr))
    assert sorted(get(d, "sr", sr_uuid, "VDIs").split("; ")) == sorted(x.VDI.get_uuid(v) for v in x.SR.get_VDIs(sr))
    assert get(d, "sr", sr_uuid, "physical-size") == x.SR.get_physical_size(sr)
    vbd = x.VM.get_VBDs(running)[0]
    vdi = x.VBD.get_VDI(vbd)
    vdi_uuid, vbd_uuid = x.VDI.get_uuid(vdi), x.VBD.get_uuid(vbd)
    assert get(d, "vdi", vdi_uuid, "sr-uuid") == sr_uuid
    assert get(d, "vdi", vdi_uuid, "sr-name-label") == "Local storage"
    assert get(d, "vdi", vdi_uuid, "vbd-uuids") == vbd_uuid
    assert get(d, "vdi", vdi_uuid, "type") == "User"
    assert get(d, "vbd", vbd_uuid, "vm-uuid") == x.VM.get_uuid(running)
    assert get(d, "vbd", vbd_uuid, "vm-name-label") == "records"
    assert get(d, "vbd", vbd_uuid, "vdi-name-label") == "records-disk"
    out = ok(xe(d, "vbd-list", f"uuid={vbd_uuid}"))
    assert labels(out) == ["uuid ( RO)", "vm-uuid ( RO)", "vm-name-label ( RO)", "vdi-uuid ( RO)",
                           "empty ( RO)", "device ( RO)"]
    pbd = x.SR.get_PBDs(sr)[0]
    pbd_uuid = x.PBD.get_uuid(pbd)
    assert get(d, "pbd", pbd_uuid, "host-name-label") == x.host.get_name_label(x.PBD.get_host(pbd))
    assert get(d, "pbd", pbd_uuid, "sr-name-label") == "Local storage"
    assert "host ( RO) [DEPRECATED]" in labels(ok(xe(d, "pbd-param-list", f"uuid={pbd_uuid}")))
    # an empty CD drive: its VDI's name is <EMPTY>
    vm = new_vm(x, "records-cd")
    cd = x.VBD.create(vbd_record(vm, "OpaqueRef:NULL", userdevice="3", mode="RO", type_="CD", empty=True))
    assert get(d, "vbd", x.VBD.get_uuid(cd), "vdi-name-label") == "<EMPTY>"
    assert get(d, "vbd", x.VBD.get_uuid(cd), "vdi-uuid") == "<not in database>"


def test_network_records(d, x, running):
    vif = x.VM.get_VIFs(running)[0]
    net = x.VIF.get_network(vif)
    vif_uuid, net_uuid = x.VIF.get_uuid(vif), x.network.get_uuid(net)
    assert get(d, "vif", vif_uuid, "vm-uuid") == x.VM.get_uuid(running)
    assert get(d, "vif", vif_uuid, "network-uuid") == net_uuid
    assert get(d, "vif", vif_uuid, "network-name-label") == x.network.get_name_label(net)
    assert get(d, "vif", vif_uuid, "MAC") == x.VIF.get_MAC(vif)
    assert vif_uuid in get(d, "network", net_uuid, "VIF-uuids").split("; ")
    pif = x.network.get_PIFs(net)[0]
    pif_uuid = x.PIF.get_uuid(pif)
    assert get(d, "network", net_uuid, "PIF-uuids") == pif_uuid
    assert get(d, "pif", pif_uuid, "host-uuid") == x.host.get_uuid(x.PIF.get_host(pif))
    assert get(d, "pif", pif_uuid, "network-uuid") == net_uuid
    for name, field in (("IP", "IP"), ("netmask", "netmask"), ("gateway", "gateway"), ("device", "device")):
        assert get(d, "pif", pif_uuid, name) == x.PIF.get_record(pif)[field]
    pm = x.PIF_metrics.get_record(x.PIF.get_metrics(pif))
    assert get(d, "pif", pif_uuid, "carrier") == str(pm["carrier"]).lower()
    assert get(d, "pif", pif_uuid, "speed") == f"{pm['speed']} Mbit/s"
    # MAC filters take any case, as records.ml's case_insensitive
    mac = x.VIF.get_MAC(vif)
    assert ok(xe(d, "vif-list", f"MAC={mac.upper()}", "--minimal")) == vif_uuid


def test_task_record(d, x):
    task = x.task.create("xe-records", "a task")
    uuid = x.task.get_uuid(task)
    assert get(d, "task", uuid, "progress") == "0.000"
    assert get(d, "task", uuid, "status") == "pending"
    assert get(d, "task", uuid, "allowed_operations") == "; ".join(
        {"cancel": "Cancel", "destroy": "Destroy"}[op] for op in x.task.get_allowed_operations(task))
    out = ok(xe(d, "task-list", f"uuid={uuid}"))
    assert labels(out) == ["uuid ( RO)", "name-label ( RO)", "name-description ( RO)", "status ( RO)",
                           "progress ( RO)"]
    x.task.destroy(task)


def test_pool_record(d, x):
    pool = x.pool.get_all()[0]
    uuid = x.pool.get_uuid(pool)
    assert get(d, "pool", uuid, "master") == x.host.get_uuid(x.pool.get_master(pool))
    got = labels(ok(xe(d, "pool-param-list", f"uuid={uuid}")))
    assert got[:5] == ["uuid ( RO)", "name-label ( RW)", "name-description ( RW)", "master ( RO)",
                       "default-SR ( RW)"]
    assert "vswitch-controller ( RO)" not in got and "gui-config (MRW)" in got
    assert get(d, "pool", uuid, "supported-sr-types") == "; ".join(x.SR.get_supported_types())


def test_editing_through_xe_names(d, x):
    vm = new_vm(x, "records-edit")
    uuid = x.VM.get_uuid(vm)
    ok(xe(d, "vm-param-set", f"uuid={uuid}", "other-config:foo=bar", "memory-static-max=256MiB",
          "user-version=7", "actions-after-crash=restart"))
    assert x.VM.get_other_config(vm)["foo"] == "bar"
    assert x.VM.get_memory_static_max(vm) == str(256 * MIB)
    assert x.VM.get_user_version(vm) == "7" and x.VM.get_actions_after_crash(vm) == "restart"
    ok(xe(d, "vm-param-set", f"uuid={uuid}", "other-config:foo=baz"))       # an existing key is replaced
    assert x.VM.get_other_config(vm)["foo"] == "baz"
    # blocked-operations: xe's operation names as keys
    ok(xe(d, "vm-param-set", f"uuid={uuid}", "blocked-operations:clean_shutdown=nope"))
    assert x.VM.get_blocked_operations(vm) == {"clean_shutdown": "nope"}
    assert get(d, "vm", uuid, "blocked-operations") == "clean_shutdown: nope"
    # sets: tags joined with ", " as records.ml's concat_with_comma
    for tag in ("t1", "t2"):
        ok(xe(d, "vm-param-add", f"uuid={uuid}", "param-name=tags", f"param-key={tag}"))
    assert get(d, "vm", uuid, "tags") == ", ".join(x.VM.get_tags(vm))
    ok(xe(d, "vm-param-remove", f"uuid={uuid}", "param-name=tags", "param-key=t1"))
    assert x.VM.get_tags(vm) == ["t2"]
    assert vm in [x.VM.get_by_uuid(u) for u in ok(xe(d, "vm-list", "tags:contains=t2", "--minimal")).split(",")]
    assert uuid in ok(xe(d, "vm-list", "other-config:foo=baz", "--minimal")).split(",")
    ok(xe(d, "vm-param-clear", f"uuid={uuid}", "param-name=tags"))
    assert x.VM.get_tags(vm) == []
    ok(xe(d, "vm-param-add", f"uuid={uuid}", "param-name=platform", "acpi=1", "apic=true"))
    assert x.VM.get_platform(vm) == {"acpi": "1", "apic": "true"}
    ok(xe(d, "vm-param-clear", f"uuid={uuid}", "param-name=platform"))
    assert x.VM.get_platform(vm) == {}
    ok(xe(d, "vm-param-clear", f"uuid={uuid}", "param-name=name-description"))
    # a reference by uuid, cleared with an empty value
    host = x.host.get_all()[0]
    ok(xe(d, "vm-param-set", f"uuid={uuid}", f"affinity={x.host.get_uuid(host)}"))
    assert x.VM.get_affinity(vm) == host
    ok(xe(d, "vm-param-set", f"uuid={uuid}", "affinity="))
    assert x.VM.get_affinity(vm) == "OpaqueRef:NULL"


@pytest.mark.parametrize("args, message", [
    (("vm-param-set", "power-state=halted"), "Error: Field 'power-state' is read-only.\n"),
    (("vm-param-set", "no-such-field=1"), "Error: Unknown field 'no-such-field'\n"),
    (("vm-param-set", "os-version:a=b"), "Error: Map field 'os-version' is read-only.\n"),
    (("vm-param-set", "other-config=x"), "Error: Field 'other-config' is a map or set. use the 'name:key=value' "
                                         "syntax.\n"),
    (("vm-param-set", "tags:x=y"), "Error: Cannot param-set on set fields\n"),
    (("vm-param-set", "name-label:x=y"), "Error: Field 'name-label' is not a set or map\n"),
    (("vm-param-set", "user-version=abc"), "Error: Failed to parse parameter 'user-version': expecting an "
                                           "integer\n"),
    (("vm-param-set", "memory-static-max=12XB"), "Error: Failed to parse field 'memory-static-max': Unknown "
                                                 "suffix: 'XB' (try KiB, MiB, GiB or TiB)\n"),
    (("vm-param-set", "actions-after-crash=bogus"), "Error: Expected 'destroy', 'coredump_and_destroy','restart', "
                                                    "'coredump_and_restart', 'preserve' or 'rename_restart', got "
                                                    "bogus\n"),
    (("vm-param-set", "domain-type=bogus"), "Error: Invalid domain type. Got bogus\n"),
    (("vm-param-set", "is-a-template=maybe"), "Error: Failed to parse parameter 'is-a-template': expecting a "
                                              "boolean (true or false)\n"),
    (("vm-param-set", "blocked-operations:no_such_op=x"), "The value given is invalid\nfield: blocked_operation\n"
                                                          "value: no_such_op\n"),
    (("vm-param-set", "VCPUs-params:foo=1"), "Error: Failed to add parameter 'foo': expecting 'weight','cap' "
                                             "or 'mask'\n"),
    (("vm-param-add", "param-name=name-label", "param-key=x"), "Error: Can only add to parameters of type Set "
                                                                "or Map\n"),
    (("vm-param-add", "param-name=os-version", "a=b"), "Error: Parameter is read-only\n"),
    (("vm-param-add", "param-name=tags"), "Error: When adding a key to a set, use the syntax: *-param-add "
                                          "param-name=<name> param-key=<key>\n"),
    (("vm-param-remove", "param-name=other-config", "param-key=nokey"), "Error: Key nokey is not in map\n"),
    (("vm-param-remove", "param-name=tags", "param-key=nokey"), "Error: Key nokey is not in the set\n"),
    (("vm-param-remove", "param-name=os-version", "param-key=a"), "Error: Cannot remove parameters from "
                                                                   "read-only map\n"),
    (("vm-param-clear", "param-name=power-state"), "Error: Can only clear RW parameters\n"),
    (("vm-param-get", "param-name=other-config", "param-key=nokey"), "Error: Key nokey not found in map\n"),
    (("vm-param-get", "param-name=no-such-field"), "Error code: Missing parameter\nError parameters: "
                                                   "no-such-field\n"),
    (("vm-list", "no-such-field=1"), "Error: Unknown field 'no-such-field'\n"),
    (("vm-list", "tags:has=x"), "Error: Invalid syntax for set filtering (should be set-param:contains=key)\n"),
])
def test_errors_as_xe_prints_them(d, x, args, message):
    vm = x.VM.get_by_name_label("records-errors") or [new_vm(x, "records-errors")]
    uuid = x.VM.get_uuid(vm[0])
    cmd, *rest = args
    r = xe(d, cmd, *([] if cmd == "vm-list" else [f"uuid={uuid}"]), *rest)
    assert (r.returncode, r.stderr) == (1, message)


def test_generated_help_and_families(d, x):
    out = ok(xe(d, "help", "vm-param-set"))
    optional = out.split("optional params :")[1].split("\n")[0]
    names = [p.strip() for p in optional.split(",")]
    assert {"name-label", "other-config:", "blocked-operations:", "memory-static-max", "affinity"} <= set(names)
    assert "power-state" not in names and "tags" not in names
    out = ok(xe(d, "help", "vm-list"))
    assert "os-version" in out and "tags:contains" in out and "NVRAM" not in out
    clear = ok(xe(d, "help", "vm-param-clear"))
    assert "tags" in clear and "other-config" in clear
    everything = ok(xe(d, "help", "--all", "--minimal")).split(",")
    assert {"template-param-list", "snapshot-param-get", "host-cpu-list", "pbd-param-add"} <= set(everything)
    assert "host-cpu-param-add" not in everything           # nothing in a host-cpu record can be added to
    # template-list and snapshot-list: the VM record with gen_cmds' default filters and columns
    templates = ok(xe(d, "template-list", "--minimal")).split(",")
    assert templates and all(get(d, "template", t, "is-a-template") == "true" for t in templates)
    vm = new_vm(x, "records-snap")
    snap = x.VM.snapshot(vm, "records-snapshot")
    out = ok(xe(d, "snapshot-list", "uuid=" + x.VM.get_uuid(snap)))
    assert labels(out) == ["uuid ( RO)", "name-label ( RW)", "name-description ( RW)", "is-vmss-snapshot ( RO)"]
    assert get(d, "snapshot", x.VM.get_uuid(snap), "snapshot-of") == x.VM.get_uuid(vm)
    assert x.VM.get_uuid(snap) not in ok(xe(d, "template-list", "--minimal")).split(",")


def test_bash_completion_of_record_fields(d, x):
    """packaging/xe-completion: param-name= offers the class's xe fields (host-cpu's, not host's),
    uuid= the class's uuids, for classes whose prefix has a hyphen too."""
    import os
    import shlex
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def complete(words: list[str]) -> list[str]:
        script = (f"source {shlex.quote(os.path.join(root, 'packaging', 'xe-completion'))}\n"
                  f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\nCOMP_CWORD={len(words) - 1}\n"
                  "_xe\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
        env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
                   XAPI_SOCKET=d.socket_path)
        r = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return [ln for ln in r.stdout.split("\n") if ln]

    cpu = x.host_cpu.get_uuid(x.host_cpu.get_all()[0])
    assert complete(["xe", "host-cpu-param-get", "uuid", "=", cpu[:8]]) == [cpu]
    assert complete(["xe", "host-cpu-param-get", "uuid", "=", cpu, "param-name", "=", "mod"]) == [
        "model", "modelname"]
    assert complete(["xe", "vm-param-get", "uuid", "=", "x", "param-name", "=", "os-v"]) == ["os-version"]
    assert "memory-free" in complete(["xe", "host-list", "params", "=", "memory-f"])


@pytest.mark.parametrize("prefix", ["vm", "template", "snapshot", "host", "host-cpu", "sr", "vdi", "vbd", "vif",
                                    "network", "pif", "pbd", "task", "pool", "console", "sm", "message", "bond",
                                    "vlan", "tunnel", "host-crashdump"])
def test_param_list_of_every_record(d, x, running, prefix):
    """Every class with a records.ml table: param-list of an object shows the table's visible fields, with
    values that can all be computed (expensive ones included)."""
    from xapi.cli import commands, records
    uuids = ok(xe(d, f"{prefix}-list", "params=uuid", "--minimal"))
    if not uuids:
        if prefix == "task":
            x.task.create("xe-records-task", "")
        elif prefix == "snapshot":
            x.VM.snapshot(running, "xe-records-snap")
        elif prefix == "message":
            x.message.create("XE_RECORDS", "1", "VM", x.VM.get_uuid(running), "body")
        elif prefix in ("bond", "vlan", "tunnel"):
            _make_network_object(x, prefix)
        elif prefix == "host-crashdump":
            pytest.skip("a simulated host never crashes: no host-crashdump row can exist")
        uuids = ok(xe(d, f"{prefix}-list", "params=uuid", "--minimal"))
    uuid = uuids.split(",")[0]
    table = records.fields(prefix, commands.CLASSES[prefix])
    assert labels(ok(xe(d, f"{prefix}-param-list", f"uuid={uuid}"))) == [f.label for f in table if not f.hidden]
    assert ok(xe(d, f"{prefix}-param-get", f"uuid={uuid}", "param-name=uuid")) == uuid


def _make_network_object(x, kind: str) -> None:
    """A bond of two of the host's spare NICs, a VLAN or a tunnel on one (first boot scans eth1..eth3)."""
    host = x.host.get_all()[0]
    spare = sorted((p for p in x.host.get_PIFs(host) if not x.PIF.get_management(p)
                    and x.PIF.get_physical(p) and x.PIF.get_bond_slave_of(p) == "OpaqueRef:NULL"),
                   key=x.PIF.get_device)
    net = x.network.create({"name_label": f"xe-records-{kind}", "name_description": "", "other_config": {}})
    if kind == "bond":
        x.Bond.create(net, spare[:2], "", "balance-slb", {})
    elif kind == "vlan":
        x.VLAN.create(spare[-1], "42", net)
    else:                                      # a tunnel's transport needs an IP: the management PIF's
        mgmt = next(p for p in x.host.get_PIFs(host) if x.PIF.get_management(p))
        x.tunnel.create(mgmt, net, "gre")


def test_datamodel_records_for_other_classes(d, x):
    """A class without a records.ml table here: its datamodel fields under hyphenated names, and hidden
    `<reference>-uuid` fields to filter on."""
    cert = x.Certificate.get_all()[0]
    uuid, host = x.Certificate.get_uuid(cert), x.host.get_uuid(x.Certificate.get_host(cert))
    got = labels(ok(xe(d, "certificate-param-list", f"uuid={uuid}")))
    assert got[0] == "uuid ( RO)" and "not-after ( RO)" in got and "host ( RO)" in got
    assert "host-uuid ( RO)" not in got
    assert uuid in ok(xe(d, "certificate-list", f"host-uuid={host}", "--minimal")).split(",")
    assert ok(xe(d, "certificate-param-get", f"uuid={uuid}", "param-name=host-uuid")) == host


def test_generated_families_take_stock_prefixes(d, x):
    """gen_cmds' prefixes where they differ from the class name: appliance, drtask, patch, update."""
    names = ok(xe(d, "help", "--all", "--minimal")).split(",")
    for prefix in ("appliance", "drtask", "patch", "update"):
        assert f"{prefix}-list" in names and f"{prefix}-param-list" in names
    for old in ("vm-appliance-list", "dr-task-list", "pool-patch-list", "pool-update-list"):
        assert old not in names
    ref = x.VM_appliance.create({"name_label": "xe-appliance", "name_description": "d"})
    try:
        uuid = x.VM_appliance.get_uuid(ref)
        assert ok(xe(d, "appliance-list", "name-label=xe-appliance", "--minimal")) == uuid
        ok(xe(d, "appliance-param-set", f"uuid={uuid}", "name-description=changed"))
        assert x.VM_appliance.get_name_description(ref) == "changed"
        gone = xe(d, "vm-appliance-list")
        assert gone.returncode != 0 and "Unknown command" in gone.stdout + gone.stderr
    finally:
        x.VM_appliance.destroy(ref)


def test_selectors_take_record_fields(d, x, running):
    """The hand-written commands' selectors filter on the xe record too (select_vms over vm_record):
    dom-id= (the datamodel's domid), memory-actual= (from VM_metrics)."""
    vif = x.VIF.get_uuid(x.VM.get_VIFs(running)[0])
    domid = x.VM.get_domid(running)
    assert ok(xe(d, "vm-vif-list", f"dom-id={domid}", "params=uuid", "--minimal")) == vif
    assert ok(xe(d, "vm-vif-list", f"dom-id={domid}", "memory-actual=" + x.VM_metrics.get_memory_actual(
        x.VM.get_metrics(running)), "params=uuid", "--minimal")) == vif
    r = xe(d, "vm-vif-list", "dom-id=999999", "params=uuid")
    assert (r.returncode, r.stderr) == (1, "Error: No matching VMs found\n")
    # map:key= and set:contains= select too
    x.VM.add_to_other_config(running, "xe-select", "yes")
    x.VM.add_tags(running, "xe-select-tag")
    assert ok(xe(d, "vm-vif-list", "other-config:xe-select=yes", "params=uuid", "--minimal")) == vif
    assert ok(xe(d, "vm-vif-list", "tags:contains=xe-select-tag", "params=uuid", "--minimal")) == vif
    r = xe(d, "vm-vif-list", "other-config:xe-select=no", "params=uuid")
    assert (r.returncode, r.stderr) == (1, "Error: No matching VMs found\n")


def test_disk_and_vif_lists_show_records(d, x, running):
    """vm-disk-list and vm-vif-list print the VBD's, VDI's and VIF's xe records (select_fields: the
    named fields in the record's order, all of them for `all`)."""
    from xapi.cli import commands, records
    out = ok(xe(d, "vm-disk-list", "vm=records", "vbd-params=all", "vdi-params=sr-name-label,uuid"))
    vbd_part, vdi_part = out.split("Disk 0 VDI:")
    assert labels(vbd_part) == [f.label for f in records.fields("vbd", commands.CLASSES["vbd"])]
    assert labels(vdi_part) == ["uuid ( RO)", "sr-name-label ( RO)"] and "Local storage" in vdi_part
    out = ok(xe(d, "vm-vif-list", "vm=records", "params=network-name-label,MAC,vm-uuid"))
    assert labels(out) == ["vm-uuid ( RO)", "MAC ( RO)", "network-name-label ( RO)"]
