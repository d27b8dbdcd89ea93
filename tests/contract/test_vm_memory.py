"""VM.create's checks and the memory setters against a real daemon with the XenAPI SDK: missing
mandatory fields, MEMORY_CONSTRAINT_VIOLATION where xapi raises it, the power states they need."""
from tests.fixtures import own_daemon, root_xenapi
from tests.helpers import failure, needs_domains, new_vm

pytestmark = needs_domains
MIB = 1 << 20
ORDER = "Memory limits must satisfy: static_min \u2264 dynamic_min \u2264 dynamic_max \u2264 static_max"


host = own_daemon("--request-timeout", "10", env={"XAPI_XENOPSD_SHUTDOWN_DELAY": "0.05"})
x = root_xenapi("host")


def memory(x, vm):
    r = x.VM.get_record(vm)
    return tuple(int(r[f"memory_{k}"]) for k in ("static_min", "dynamic_min", "dynamic_max", "static_max"))


def record(**memory):
    rec = {"name_label": "m", "name_description": "", "user_version": "1", "is_a_template": False,
           "affinity": "OpaqueRef:NULL", "memory_static_max": str(512 * MIB), "memory_dynamic_max": str(512 * MIB),
           "memory_dynamic_min": str(256 * MIB), "memory_static_min": str(128 * MIB), "VCPUs_params": {},
           "VCPUs_max": "1", "VCPUs_at_startup": "1", "actions_after_shutdown": "destroy",
           "actions_after_reboot": "restart", "actions_after_crash": "destroy", "PV_bootloader": "",
           "PV_kernel": "", "PV_ramdisk": "", "PV_args": "", "PV_bootloader_args": "", "PV_legacy_args": "",
           "HVM_boot_policy": "", "HVM_boot_params": {}, "platform": {}, "PCI_bus": "", "other_config": {},
           "recommendations": ""}
    rec.update({f"memory_{k}": str(v) for k, v in memory.items()})
    return rec


def test_create_checks_the_memory_limits_as_xapi(x):
    vm = x.VM.create(record())
    assert memory(x, vm) == (128 * MIB, 256 * MIB, 512 * MIB, 512 * MIB)
    assert failure(x.VM.create, record(static_min=1024 * MIB)) == ["MEMORY_CONSTRAINT_VIOLATION"]
    assert failure(x.VM.create, record(dynamic_min=600 * MIB, dynamic_max=500 * MIB)) == \
        ["MEMORY_CONSTRAINT_VIOLATION"]
    # dynamic limits outside the static ones are clamped when used, not refused (validate_memory)
    x.VM.create(record(dynamic_max=1024 * MIB))


def test_create_without_a_mandatory_field(x):
    rec = record()
    del rec["memory_static_max"]
    # xapi's generated server: a record field without a default must be given
    assert failure(x.VM.create, rec) == \
        ["INTERNAL_ERROR", 'Server_helpers.Dispatcher_FieldNotFound("memory_static_max")']
    rec = record(static_max="lots")
    assert failure(x.VM.create, rec)[0] == "FIELD_TYPE_ERROR"


def test_setters_keep_the_order(x):
    vm = new_vm(x, "mem", memory=256 * MIB)
    x.VM.set_memory_limits(vm, str(64 * MIB), str(1024 * MIB), str(128 * MIB), str(512 * MIB))
    assert memory(x, vm) == (64 * MIB, 128 * MIB, 512 * MIB, 1024 * MIB)
    assert failure(x.VM.set_memory_limits, vm, str(64 * MIB), str(256 * MIB), str(128 * MIB), str(512 * MIB)) \
        == ["MEMORY_CONSTRAINT_VIOLATION", ORDER]
    x.VM.set_memory_static_range(vm, str(32 * MIB), str(768 * MIB))
    assert memory(x, vm) == (32 * MIB, 128 * MIB, 512 * MIB, 768 * MIB)
    assert failure(x.VM.set_memory_static_range, vm, str(256 * MIB), str(768 * MIB)) == \
        ["MEMORY_CONSTRAINT_VIOLATION", ORDER]
    x.VM.set_memory_dynamic_range(vm, str(256 * MIB), str(256 * MIB))
    assert failure(x.VM.set_memory_dynamic_range, vm, str(300 * MIB), str(200 * MIB)) == \
        ["MEMORY_CONSTRAINT_VIOLATION", ORDER]
    x.VM.set_memory_static_max(vm, str(512 * MIB))
    x.VM.set_memory_dynamic_max(vm, str(512 * MIB))
    assert memory(x, vm) == (32 * MIB, 256 * MIB, 512 * MIB, 512 * MIB)
    assert failure(x.VM.set_memory_dynamic_min, vm, str(1024 * MIB)) == ["MEMORY_CONSTRAINT_VIOLATION", ORDER]
    x.VM.set_memory(vm, str(384 * MIB))
    assert memory(x, vm) == (32 * MIB, 384 * MIB, 384 * MIB, 384 * MIB)
    assert failure(x.VM.set_memory, "OpaqueRef:nope", str(MIB))[:2] == ["HANDLE_INVALID", "VM"]


def test_setters_need_the_right_power_state(x):
    vm = new_vm(x, "mem-run", memory=256 * MIB)
    x.VM.set_memory_dynamic_range(vm, str(256 * MIB), str(256 * MIB))
    x.VM.start(vm, False, False)
    assert failure(x.VM.set_memory_limits, vm, *[str(256 * MIB)] * 4) == \
        ["VM_BAD_POWER_STATE", vm, "halted", "running"]
    assert failure(x.VM.set_memory_static_range, vm, str(256 * MIB), str(256 * MIB))[0] == "VM_BAD_POWER_STATE"
    x.VM.set_memory_dynamic_range(vm, str(256 * MIB), str(256 * MIB))       # allowed live
    x.VM.hard_shutdown(vm)


def test_compute_free_memory_is_what_vm_start_checks(x):
    """host.compute_free_memory follows the domains' memory, and a VM that needs more than it gets
    HOST_NOT_ENOUGH_FREE_MEMORY [needed, that figure] from VM.start and assert_can_boot_here."""
    me = x.host.get_all()[0]
    free = int(x.host.compute_free_memory(me))
    assert free == int(x.host_metrics.get_memory_free(x.host.get_metrics(me))) > 0
    vm = new_vm(x, "accounted", memory=512 * MIB)
    x.VM.start(vm, False, False)
    assert int(x.host.compute_free_memory(me)) == free - 512 * MIB
    left = int(x.host.compute_free_memory(me))
    big = new_vm(x, "too-big", memory=left + 256 * MIB)
    expected = ["HOST_NOT_ENOUGH_FREE_MEMORY", str(left + 256 * MIB), str(left)]
    assert failure(x.VM.assert_can_boot_here, big, me) == expected
    assert failure(x.VM.start, big, False, False) == expected
    x.VM.hard_shutdown(vm)
    assert int(x.host.compute_free_memory(me)) == free
    x.VM.start(big, False, False)                   # now it fits
    x.VM.hard_shutdown(big)
    assert failure(x.host.compute_free_memory, "OpaqueRef:NULL") == ["HANDLE_INVALID", "host", "OpaqueRef:NULL"]
