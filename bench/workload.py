"""The shared codec workload: a xapi ``VM.get_all_records`` reply of 1,000 VM records.

Each record has the 90 fields of a current VM record (names from the datamodel,
hard-coded here), with values shaped like a real pool's: strings, enums, int64s,
bools, a float, a datetime, string maps (platform, other_config, bios_strings…)
and ref sets.  Encoded the way xapi sends it (bare strings, ints as strings) the
reply is about 10 MB.  Everything is generated from a fixed seed.
"""
import random
import uuid
from xmlrpc.client import DateTime

N_RECORDS = 1000

VM_OPERATIONS = [
    "snapshot", "clone", "copy", "create_template", "revert", "checkpoint", "snapshot_with_quiesce",
    "provision", "start", "start_on", "pause", "unpause", "clean_shutdown", "clean_reboot",
    "hard_shutdown", "power_state_reset", "hard_reboot", "suspend", "csvm", "resume", "resume_on",
    "pool_migrate", "migrate_send", "get_boot_record", "send_sysrq", "send_trigger",
    "query_services", "shutdown", "call_plugin", "changing_memory_live", "awaiting_memory_live",
    "changing_dynamic_range", "changing_static_range", "changing_memory_limits",
    "changing_shadow_memory", "changing_shadow_memory_live", "changing_VCPUs",
    "changing_VCPUs_live", "changing_NVRAM", "assert_operation_valid", "data_source_op",
    "update_allowed_operations", "make_into_template", "import", "export", "metadata_export",
    "reverting", "destroy", "create_vtpm",
]
OPS_BY_STATE = {
    "Running": ["changing_dynamic_range", "changing_VCPUs_live", "checkpoint", "clean_reboot",
                "clean_shutdown", "hard_reboot", "hard_shutdown", "migrate_send", "pause",
                "pool_migrate", "snapshot", "snapshot_with_quiesce", "suspend"],
    "Halted": ["changing_dynamic_range", "changing_memory_limits", "changing_NVRAM",
               "changing_shadow_memory", "changing_static_range", "changing_VCPUs", "clone",
               "copy", "create_template", "create_vtpm", "destroy", "export", "make_into_template",
               "metadata_export", "migrate_send", "provision", "snapshot", "start", "start_on"],
    "Suspended": ["checkpoint", "clone", "copy", "destroy", "export", "hard_shutdown",
                  "migrate_send", "pool_migrate", "resume", "resume_on", "snapshot"],
    "Paused": ["checkpoint", "hard_reboot", "hard_shutdown", "snapshot", "unpause"],
}
RECOMMENDATIONS = (
    '<restrictions><restriction field="memory-static-max" max="137438953472" />'
    '<restriction field="vcpus-max" max="32" /><restriction property="number-of-vbds" max="255" />'
    '<restriction property="number-of-vifs" max="7" /><restriction field="has-vendor-device" value="false" />'
    '</restrictions>')
TEMPLATES = ["Debian Bookworm 12", "Ubuntu Jammy Jellyfish 22.04", "Windows Server 2022 (64-bit)",
             "Rocky Linux 9", "CentOS Stream 9", "Other install media"]
ROLES = ["web", "db", "cache", "worker", "ci", "mail", "dns", "proxy"]


def _ref(rng: random.Random) -> str:
    return "OpaqueRef:" + str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def vm_record(rng: random.Random, i: int, hosts: list) -> dict:
    """One VM record with the 90 fields of the current datamodel."""
    state = rng.choices(["Running", "Halted", "Suspended", "Paused"], [70, 24, 4, 2])[0]
    running = state in ("Running", "Paused")
    mem = rng.choice([1, 2, 4, 8, 16, 32]) << 30
    vcpus = rng.choice([1, 2, 4, 8])
    role = rng.choice(ROLES)
    template = rng.choice(TEMPLATES)
    windows = template.startswith("Windows")
    host = rng.choice(hosts) if running else "OpaqueRef:NULL"
    other_config = {
        "base_template_name": template,
        "import_task": "OpaqueRef:NULL",
        "install-methods": "cdrom,nfs,http,ftp",
        "linux_template": "false" if windows else "true",
        "mac_seed": _uuid(rng),
        "vgpu_pci": "",
        "xo:resource_set": _uuid(rng)[:10],
    }
    if rng.random() < 0.3:
        other_config["auto_poweron"] = "true"
    return {
        "uuid": _uuid(rng),
        "allowed_operations": list(OPS_BY_STATE[state]),
        "current_operations": {_ref(rng): "clean_shutdown"} if rng.random() < 0.02 else {},
        "name_label": f"{role}-{i:04d}",
        "name_description": f"{role} server {i} ({template}), managed by the ops team",
        "power_state": state,
        "user_version": 1,
        "is_a_template": False,
        "is_default_template": False,
        "suspend_VDI": _ref(rng) if state == "Suspended" else "OpaqueRef:NULL",
        "resident_on": host,
        "scheduled_to_be_resident_on": "OpaqueRef:NULL",
        "affinity": rng.choice(hosts),
        "memory_overhead": (mem >> 8) + 11534336,
        "memory_target": mem if running else 0,
        "memory_static_max": mem,
        "memory_dynamic_max": mem,
        "memory_dynamic_min": mem // 2,
        "memory_static_min": 1 << 29,
        "VCPUs_params": {"weight": "256", "cap": "0"} if rng.random() < 0.3 else {},
        "VCPUs_max": vcpus,
        "VCPUs_at_startup": vcpus,
        "actions_after_softreboot": "soft_reboot",
        "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart",
        "actions_after_crash": "restart",
        "consoles": [_ref(rng)] if running else [],
        "VIFs": [_ref(rng) for _ in range(rng.randint(1, 3))],
        "VBDs": [_ref(rng) for _ in range(rng.randint(2, 4))],
        "VUSBs": [],
        "crash_dumps": [],
        "VTPMs": [_ref(rng)] if windows else [],
        "PV_bootloader": "",
        "PV_kernel": "",
        "PV_ramdisk": "",
        "PV_args": "",
        "PV_bootloader_args": "",
        "PV_legacy_args": "",
        "HVM_boot_policy": "BIOS order",
        "HVM_boot_params": {"order": "cdn", "firmware": "uefi" if windows else "bios"},
        "HVM_shadow_multiplier": 1.0,
        "platform": {
            "timeoffset": "0", "device-model": "qemu-upstream-compat", "videoram": "8",
            "hpet": "true", "secureboot": "false", "vga": "std", "apic": "true",
            "viridian": "true" if windows else "false", "nx": "true", "pae": "true", "acpi": "1",
            "cores-per-socket": str(min(vcpus, 2)),
        },
        "PCI_bus": "",
        "other_config": other_config,
        "domid": rng.randint(1, 4000) if running else -1,
        "domarch": "x64" if running else "",
        "last_boot_CPU_flags": {
            "vendor": "GenuineIntel",
            "features": "1fcbfbff-f7fa3223-2d93fbff-00000123-00000001-029c6fbf-00000000-"
                        "00000000-00001000-bc000400-00000000-00000000-00000000-00000000",
        } if running else {},
        "is_control_domain": False,
        "metrics": _ref(rng),
        "guest_metrics": _ref(rng) if running else "OpaqueRef:NULL",
        "last_booted_record": "",
        "recommendations": RECOMMENDATIONS,
        "xenstore_data": {"vm-data": "", "vm-data/mmio-hole-size": "268435456"},
        "ha_always_run": False,
        "ha_restart_priority": "restart" if rng.random() < 0.2 else "",
        "is_a_snapshot": False,
        "snapshot_of": "OpaqueRef:NULL",
        "snapshots": [_ref(rng) for _ in range(rng.choice([0, 0, 0, 1, 2]))],
        "snapshot_time": DateTime("19700101T00:00:00Z"),
        "transportable_snapshot_id": "",
        "blobs": {},
        "tags": rng.sample(["prod", "staging", "backup:daily", "team:ops", "pci", "eu-west"], 2),
        "blocked_operations": {"destroy": "protected"} if rng.random() < 0.1 else {},
        "snapshot_info": {},
        "snapshot_metadata": "",
        "parent": "OpaqueRef:NULL",
        "children": [],
        "bios_strings": {
            "bios-vendor": "Xen", "bios-version": "", "system-manufacturer": "Xen",
            "system-product-name": "HVM domU", "system-version": "", "system-serial-number": "",
            "baseboard-manufacturer": "", "baseboard-product-name": "", "hp-rombios": "",
            "oem-1": "Xen", "oem-2": "MS_VM_CERT/SHA1/bdbeb6e0a816d43fa6d3fe8aaef04c2bad9d3e3d",
        },
        "protection_policy": "OpaqueRef:NULL",
        "is_snapshot_from_vmpp": False,
        "snapshot_schedule": "OpaqueRef:NULL",
        "is_vmss_snapshot": False,
        "appliance": "OpaqueRef:NULL",
        "start_delay": 0,
        "shutdown_delay": 0,
        "order": 0,
        "VGPUs": [],
        "attached_PCIs": [],
        "suspend_SR": "OpaqueRef:NULL",
        "version": 0,
        "generation_id": "0:0",
        "hardware_platform_version": 0,
        "has_vendor_device": False,
        "requires_reboot": False,
        "reference_label": "",
        "domain_type": "hvm",
        "NVRAM": {"EFI-variables": "dGVzdA=="} if windows else {},
        "pending_guidances": [],
        "pending_guidances_recommended": [],
        "pending_guidances_full": [],
    }


def vm_records(n: int = N_RECORDS, seed: int = 20250319) -> dict:
    """The Value of ``VM.get_all_records``: {ref: record}, ints as Python ints."""
    rng = random.Random(seed)
    hosts = [_ref(rng) for _ in range(8)]
    return {_ref(rng): vm_record(rng, i, hosts) for i in range(n)}


def ints_to_strings(v):
    """The same value as a client sees it from xapi, whose int64s travel as strings."""
    if type(v) is bool:
        return v
    if type(v) is int:
        return str(v)
    if type(v) is dict:
        return {k: ints_to_strings(x) for k, x in v.items()}
    if type(v) is list:
        return [ints_to_strings(x) for x in v]
    return v


def xml_reply(n: int = N_RECORDS) -> bytes:
    """The reply as xapi encodes it: ``{Status: Success, Value: records}``, bare strings, ints as strings."""
    from xapi import rpc_ref
    return rpc_ref.dumps_success(vm_records(n))


def json_request(n: int = N_RECORDS) -> bytes:
    """A JSON-RPC v2 request carrying the records, for bulk decoding."""
    import orjson
    from xapi import rpc_ref
    doc = {"jsonrpc": "2.0", "method": "VM.import_records", "params": ["OpaqueRef:session", vm_records(n)], "id": 1}
    return orjson.dumps(doc, default=rpc_ref._json_default, option=rpc_ref._JSON_OPTS)


if __name__ == "__main__":
    recs = vm_records()
    print(len(recs), "records,", len(next(iter(recs.values()))), "fields each,",
          f"{len(xml_reply()) / 1e6:.1f} MB as xapi XML-RPC, {len(json_request()) / 1e6:.1f} MB as JSON")
