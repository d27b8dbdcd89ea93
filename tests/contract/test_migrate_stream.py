"""Live migration mechanics between two independent daemons: the source xenopsd's VM.migrate_send
streams the memory image to the destination's PUT /migrate, whose xenopsd VM.receive builds the
domain; the source domain goes only once the destination acknowledged."""
import json
import time
import urllib.error
import urllib.request

import pytest

from tests import daemon as _daemon
from tests.helpers import login, new_vm, xenopsd
from xapi.xenops import image

MIB = 1 << 20


@pytest.fixture(scope="module")
def pair():
    a = _daemon.start("--request-timeout", "10")
    try:
        b = _daemon.start("--request-timeout", "10")
    except Exception:
        _daemon.cleanup(a)
        raise
    yield a, b
    _daemon.cleanup(a)
    _daemon.cleanup(b)


def run(d, method, *params, timeout=20.0):
    """Starts a xenopsd task and waits for its end; its final state."""
    tid = xenopsd(d, method, *params)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = xenopsd(d, "TASK.wait", tid, 1.0)
        if st["state"] != "pending":
            return st
    raise AssertionError(f"{method} still pending after {timeout}s")


def new_running_vm(x, name, memory=256 * MIB):
    vm = new_vm(x, name, memory, vcpus=2, HVM_boot_policy="", HVM_boot_params={})
    x.VM.start(vm, False, False)
    return vm, x.VM.get_uuid(vm)


def config(uuid, memory=256 * MIB):
    return {"id": uuid, "name": "migrated", "hvm": False, "memory_kib": memory // 1024, "vcpus": 2,
            "vcpus_max": 2, "on_shutdown": "destroy", "on_reboot": "restart", "on_crash": "destroy"}


def migrate_url(b, uuid, session):
    return f"http://127.0.0.1:{b.http_port}/migrate?vm={uuid}&session_id={session}"


def test_live_migration_moves_the_domain(pair):
    a, b = pair
    sa, sb = login(a), login(b)
    vm, uuid = new_running_vm(sa.xenapi, "mover")
    xenopsd(b, "VM.add", config(uuid))
    free_before = xenopsd(b, "HOST.stat")["free_memory"]

    st = run(a, "VM.migrate_send", uuid, migrate_url(b, uuid, sb._session), {})
    assert st["state"] == "completed", st["error"]
    assert st["progress"] == 1.0

    dst = xenopsd(b, "VM.stat", uuid)
    assert dst["power_state"] == "Running" and dst["domid"] > 0
    assert dst["memory"] == 256 * MIB and dst["vcpus"] == 2
    assert xenopsd(b, "HOST.stat")["free_memory"] == free_before - 256 * MIB
    assert xenopsd(a, "VM.stat", uuid)["power_state"] == "Halted"
    # the source daemon's database follows its xenopsd: the VM is no longer resident there
    deadline = time.monotonic() + 5
    while sa.xenapi.VM.get_power_state(vm) != "Halted" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sa.xenapi.VM.get_power_state(vm) == "Halted"
    assert run(b, "VM.hard_shutdown", uuid)["state"] == "completed"


def test_paused_vm_arrives_paused(pair):
    a, b = pair
    sa, sb = login(a), login(b)
    vm, uuid = new_running_vm(sa.xenapi, "paused-mover")
    sa.xenapi.VM.pause(vm)
    xenopsd(b, "VM.add", config(uuid))
    assert run(a, "VM.migrate_send", uuid, migrate_url(b, uuid, sb._session), {})["state"] == "completed"
    assert xenopsd(b, "VM.stat", uuid)["power_state"] == "Paused"
    assert run(b, "VM.hard_shutdown", uuid)["state"] == "completed"


def test_refused_transfers_leave_the_vm_running_on_the_source(pair):
    a, b = pair
    sa, sb = login(a), login(b)
    vm, uuid = new_running_vm(sa.xenapi, "stayer")
    domid = xenopsd(a, "VM.stat", uuid)["domid"]

    # the destination doesn't know the VM (no VM.add): its xenopsd's error comes back
    st = run(a, "VM.migrate_send", uuid, migrate_url(b, uuid, sb._session), {})
    assert st["state"] == "failed" and st["error"] == ["HANDLE_INVALID", "VM", uuid]
    # no valid session on the destination: 401
    xenopsd(b, "VM.add", config(uuid))
    st = run(a, "VM.migrate_send", uuid, migrate_url(b, uuid, "OpaqueRef:bogus"), {})
    assert st["state"] == "failed" and st["error"][0] == "VM_MIGRATE_FAILED" and "401" in st["error"][-1]
    # nobody listening
    st = run(a, "VM.migrate_send", uuid, f"http://127.0.0.1:{_daemon.free_port()}/migrate?vm={uuid}", {})
    assert st["state"] == "failed" and st["error"][0] == "VM_MIGRATE_FAILED"
    # not enough memory on the destination: a filler domain leaves it 512 MiB
    filler = "0b1c2d3e-0000-4000-8000-0000000000ff"
    fill = (xenopsd(b, "HOST.stat")["free_memory"] - 512 * MIB) // MIB * MIB
    xenopsd(b, "VM.add", config(filler, fill))
    assert run(b, "VM.start", filler, False)["state"] == "completed"
    big_vm, big_uuid = new_running_vm(sa.xenapi, "big", memory=1024 * MIB)
    xenopsd(b, "VM.add", config(big_uuid, 1024 * MIB))
    st = run(a, "VM.migrate_send", big_uuid, migrate_url(b, big_uuid, sb._session), {})
    assert run(b, "VM.hard_shutdown", filler)["state"] == "completed"
    assert st["state"] == "failed" and st["error"][0] == "HOST_NOT_ENOUGH_FREE_MEMORY", st["error"]
    assert xenopsd(a, "VM.stat", big_uuid)["power_state"] == "Running"

    after = xenopsd(a, "VM.stat", uuid)
    assert after["power_state"] == "Running" and after["domid"] == domid     # unpaused, same domain
    assert xenopsd(b, "VM.stat", uuid)["power_state"] == "Halted"
    assert sa.xenapi.VM.get_power_state(vm) == "Running"


def test_corrupt_or_foreign_images_are_rejected(pair):
    a, b = pair
    sb = login(b)
    uuid = "0b1c2d3e-0000-4000-8000-000000000001"
    xenopsd(b, "VM.add", config(uuid))
    good = image.dumps(image.ImageInfo(uuid, 256 * MIB, 2, {"paused": False}))
    other = image.dumps(image.ImageInfo("0b1c2d3e-0000-4000-8000-000000000002", 256 * MIB, 2, {}))
    flipped = bytearray(good)
    flipped[-10] ^= 0xFF
    for body, why in ((bytes(flipped), "checksum"), (good[:len(good) // 2], "truncated"),
                      (other, "received for"), (b"not an image at all" * 10, "not a memory image")):
        req = urllib.request.Request(migrate_url(b, uuid, sb._session), data=body, method="PUT")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 500
        err = json.loads(e.value.read())
        assert err[0] == "INTERNAL_ERROR" and why in err[1], err
    assert xenopsd(b, "VM.stat", uuid)["power_state"] == "Halted"
    # the same image intact builds the domain
    req = urllib.request.Request(migrate_url(b, uuid, sb._session), data=good, method="PUT")
    assert urllib.request.urlopen(req, timeout=10).status == 200
    assert xenopsd(b, "VM.stat", uuid)["power_state"] == "Running"
    assert run(b, "VM.hard_shutdown", uuid)["state"] == "completed"
