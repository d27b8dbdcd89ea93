"""VM setters and queries outside the lifecycle, with xapi's checks and errors (xapi_vm.ml,
xapi_vm_helpers.ml, xapi_vm_lifecycle.ml's power states, memory_check.ml, xenops memory.ml):

* VCPUs: set_VCPUs_max (Halted; INVALID_VALUE below 1 or below VCPUs_at_startup), set_VCPUs_at_startup
  (INVALID_VALUE outside 1..VCPUs_max; not on dom0); both refresh memory_overhead;
* domain type: set_domain_type (not `unspecified`) also sets HVM_boot_policy, set_HVM_boot_policy also
  sets domain_type, as xapi derives one from the other; set_HVM_shadow_multiplier (Halted, >= 1.0);
* ordering and HA: set_order, set_start_delay, set_shutdown_delay (non-negative), set_ha_restart_priority
  ("restart", "best-effort" or ""), set_ha_always_run (deprecated: maps to the priority), set_appliance;
* firmware: set_bios_strings and copy_bios_strings (once: VM_BIOS_STRINGS_ALREADY_SET), NVRAM,
  set_has_vendor_device (Halted; raises hardware_platform_version to 2);
* queries: get_allowed_VBD_devices, get_allowed_VIF_devices, get_boot_record, get_cooperative,
  compute_memory_overhead, maximise_memory, assert_agile, get_SRs_required_for_recovery;
* set_suspend_VDI: a suspended VM's image moved to an identical VDI (same MD5 of the content);
* what xapi itself does not implement answers as xapi does after its power check: send_sysrq,
  send_trigger, query_services (NOT_IMPLEMENTED [name]); set_memory_target_live is a no-op in xapi.

Live vCPU hotplug and the live shadow multiplier are in vm_live.
"""
from __future__ import annotations

import asyncio

from xapi.actions import vm as vm_mod
from xapi.datamodel.errors import XapiError
from xapi.db.schema import NULL_REF

MIB = 1 << 20
# xapi_vm_lifecycle.ml allowed_power_states, for the operations used here
_POWER = {
    "changing_VCPUs": ("Halted",), "changing_shadow_memory": ("Halted",),
    "changing_memory_live": ("Running",), "send_sysrq": ("Running",), "send_trigger": ("Running",),
    "get_boot_record": ("Paused", "Suspended", "Running"),
    "query_services": ("Halted", "Paused", "Suspended", "Running"),
}
HA_RESTART_PRIORITIES = ("restart", "best-effort", "")
# Xapi_globs: settable keys, the generic strings a VM gets, and the length limit
SETTABLE_BIOS_KEYS = ("bios-vendor", "bios-version", "system-manufacturer", "system-product-name",
                      "system-version", "system-serial-number", "baseboard-manufacturer",
                      "baseboard-product-name", "baseboard-version", "baseboard-serial-number",
                      "baseboard-asset-tag", "baseboard-location-in-chassis", "enclosure-asset-tag")
GENERIC_BIOS_STRINGS = {"bios-vendor": "Xen", "bios-version": "", "system-manufacturer": "Xen",
                        "system-product-name": "HVM domU", "system-version": "", "system-serial-number": "",
                        "baseboard-manufacturer": "", "baseboard-product-name": "", "baseboard-version": "",
                        "baseboard-serial-number": "", "baseboard-asset-tag": "",
                        "baseboard-location-in-chassis": "", "enclosure-asset-tag": "", "hp-rombios": "",
                        "oem-1": "Xen", "oem-2": "MS_VM_CERT/SHA1/bdbeb6e0a816d43fa6d3fe8aaef04c2bad9d3e3d"}
BIOS_STRING_LIMIT = 512
HAS_VENDOR_DEVICE_PLATFORM_VERSION = 2


def _table(ctx):
    return ctx.app.db.table("VM")


def _op(ctx, vm, op: str) -> dict:
    """xapi's with_vm_operation check: power state first, then blocked/other operations/template rules."""
    rec = vm_mod._rec(ctx.app.db, vm)
    allowed = _POWER[op]
    if op == "changing_VCPUs" and rec.get("is_control_domain"):
        allowed = ("Halted", "Running")
    if rec["power_state"] not in allowed:
        raise XapiError("VM_BAD_POWER_STATE", vm, ", ".join(p.lower() for p in allowed), rec["power_state"].lower())
    err = vm_mod.check_operation(rec, vm, op)
    if err is not None:
        raise XapiError(*err)
    return rec


def _power_is(rec: dict, vm: str, expected: str) -> None:
    """Xapi_vm_lifecycle.assert_initial_power_state_is."""
    if rec["power_state"] != expected:
        raise XapiError("VM_BAD_POWER_STATE", vm, expected.lower(), rec["power_state"].lower())


def _ocaml_float(f: float) -> str:
    s = repr(float(f))
    return s[:-1] if s.endswith(".0") else s


# -- memory overhead (memory.ml's models, memory_check.ml) -------------------------------------------
def _mib_used(n: int, unit: int) -> int:
    return -(-int(n) // unit)


def _domain_type(rec: dict) -> str:
    t = rec.get("domain_type") or "unspecified"
    if t == "unspecified":
        return "hvm" if rec.get("HVM_boot_policy") else "pv"
    return t


def overhead_bytes(rec: dict, vcpus_max: int | None = None, static_max: int | None = None) -> int:
    static_max_mib = _mib_used(rec["memory_static_max"] if static_max is None else static_max, MIB)
    vcpus = int(rec["VCPUs_max"] if vcpus_max is None else vcpus_max)
    multiplier = float(rec.get("HVM_shadow_multiplier") or 1.0)
    kind = _domain_type(rec)
    internal, external = (0, 1) if kind == "pv" else (1, 1)
    shim = 20 + static_max_mib // 110 if kind == "pv_in_pvh" else 0
    pages = 256 * vcpus + static_max_mib + static_max_mib
    shadow = max(1, int(_mib_used(pages, 256) * multiplier))
    return (internal + external + shadow + shim) * MIB


def _update_overhead(ctx, vm: str) -> None:
    t = _table(ctx)
    t.set_field(vm, "memory_overhead", overhead_bytes(t.get(vm)))


def compute_memory_overhead(ctx, session, vm):
    return overhead_bytes(vm_mod._rec(ctx.app.db, vm))


def maximise_memory(ctx, session, self, total, approximate):
    """The largest static_max whose domain (static_max plus overhead) fits in `total`, to the MiB below."""
    rec = vm_mod._rec(ctx.app.db, self)
    total = int(total)
    vcpus = 64 if approximate else int(rec["VCPUs_max"])
    lo, hi = 0, max(0, total)
    if overhead_bytes(rec, vcpus, 0) > total:
        return 0
    while lo < hi:                              # Helpers.bisect: the greatest value that fits
        mid = (lo + hi + 1) // 2
        if mid + overhead_bytes(rec, vcpus, mid) <= total:
            lo = mid
        else:
            hi = mid - 1
    return lo // MIB * MIB


# -- VCPUs -----------------------------------------------------------------------------------------
def set_VCPUs_max(ctx, session, self, value):  # noqa: N802 - the API's name
    rec = _op(ctx, self, "changing_VCPUs")
    value = int(value)
    if value < 1 or value < int(rec["VCPUs_at_startup"]):
        raise XapiError("INVALID_VALUE", "VCPU values must satisfy: 0 < VCPUs_at_startup \u2264 VCPUs_max", str(value))
    _table(ctx).set_field(self, "VCPUs_max", value)
    _update_overhead(ctx, self)
    if rec.get("is_control_domain") and rec["power_state"] == "Running":
        _table(ctx).set_field(self, "requires_reboot", True)
    return ""


def set_VCPUs_at_startup(ctx, session, self, value):  # noqa: N802 - the API's name
    rec = vm_mod._rec(ctx.app.db, self)
    if rec.get("is_control_domain") and rec.get("domid") == 0:
        raise XapiError("OPERATION_NOT_ALLOWED", "set_VCPUs_at_startup is not allowed on dom0")
    rec = _op(ctx, self, "changing_VCPUs")
    value = int(value)
    if value < 1 or value > int(rec["VCPUs_max"]):
        raise XapiError("INVALID_VALUE", "VCPU values must satisfy: 0 < VCPUs_at_startup \u2264 VCPUs_max", str(value))
    _table(ctx).set_field(self, "VCPUs_at_startup", value)
    _update_overhead(ctx, self)
    return ""


# -- domain type and shadow memory ---------------------------------------------------------------
def set_domain_type(ctx, session, self, value):
    vm_mod._rec(ctx.app.db, self)
    if value == "unspecified":
        raise XapiError("INVALID_VALUE", "domain_type", value)
    _table(ctx).update(self, {"domain_type": value, "HVM_boot_policy": "BIOS order" if value == "hvm" else ""})
    return ""


def set_HVM_boot_policy(ctx, session, self, value):  # noqa: N802 - the API's name
    vm_mod._rec(ctx.app.db, self)
    _table(ctx).update(self, {"domain_type": "pv" if value == "" else "hvm", "HVM_boot_policy": value})
    return ""


def set_HVM_shadow_multiplier(ctx, session, self, value):  # noqa: N802 - the API's name
    _op(ctx, self, "changing_shadow_memory")
    if float(value) < 1.0:
        raise XapiError("INVALID_VALUE", "multiplier", _ocaml_float(value))
    _table(ctx).set_field(self, "HVM_shadow_multiplier", float(value))
    _update_overhead(ctx, self)
    return ""


def set_memory_target_live(ctx, session, self, target):
    """Kept for old clients: xapi checks the operation and does nothing (set_memory_dynamic_range does it)."""
    _op(ctx, self, "changing_memory_live")
    return ""


# -- ordering, HA, appliance ---------------------------------------------------------------------
def _non_negative(field: str):
    def setter(ctx, session, self, value):
        vm_mod._rec(ctx.app.db, self)
        if int(value) < 0:
            raise XapiError("INVALID_VALUE", f"{field} must be non-negative", str(int(value)))
        _table(ctx).set_field(self, field, int(value))
        return ""
    setter.__name__ = setter.__qualname__ = "set_" + field
    return setter


set_order = _non_negative("order")
set_start_delay = _non_negative("start_delay")
set_shutdown_delay = _non_negative("shutdown_delay")


def set_ha_restart_priority(ctx, session, self, value):
    rec = vm_mod._rec(ctx.app.db, self)
    if value not in HA_RESTART_PRIORITIES:
        raise XapiError("INVALID_VALUE", "ha_restart_priority", value)
    if rec["ha_restart_priority"] != value:
        values = {"ha_restart_priority": value}
        if rec["power_state"] == "Running":     # protection follows at once for a running VM
            values["ha_always_run"] = value == "restart"
        _table(ctx).update(self, values)
    return ""


def set_ha_always_run(ctx, session, self, value):
    return set_ha_restart_priority(ctx, session, self, "restart" if value else "")


def set_appliance(ctx, session, self, value):
    db = ctx.app.db
    rec = vm_mod._rec(db, self)
    if rec.get("is_control_domain") or rec["is_a_template"] or rec.get("is_a_snapshot"):
        raise XapiError("OPERATION_NOT_ALLOWED",
                        "Control domains, templates and snapshots cannot be assigned to appliances.")
    if value != NULL_REF and (type(value) is not str or value not in db.table("VM_appliance")):
        raise XapiError("HANDLE_INVALID", "VM_appliance", value)
    _table(ctx).set_field(self, "appliance", value)
    vm_mod.refresh_allowed_operations(db, self)
    return ""


# -- firmware --------------------------------------------------------------------------------------
def _assert_valid_bios_strings(value: dict) -> None:
    for k, v in value.items():
        if k not in SETTABLE_BIOS_KEYS:
            raise XapiError("INVALID_VALUE", k, "Unknown key")
        if v == "":
            raise XapiError("INVALID_VALUE", k, "Value provided is empty")
        if len(v) > BIOS_STRING_LIMIT:
            raise XapiError("INVALID_VALUE", k, f"{v} has length more than {BIOS_STRING_LIMIT} characters")
        if any(not 32 <= ord(c) < 127 for c in v):
            raise XapiError("INVALID_VALUE", k, f"{v} has non-printable ASCII characters")


def set_bios_strings(ctx, session, self, value):
    rec = vm_mod._rec(ctx.app.db, self)
    if rec["bios_strings"]:
        raise XapiError("VM_BIOS_STRINGS_ALREADY_SET")
    _assert_valid_bios_strings(value)
    _table(ctx).set_field(self, "bios_strings", {k: value.get(k, v) for k, v in GENERIC_BIOS_STRINGS.items()})
    return ""


def copy_bios_strings(ctx, session, vm, host):
    db = ctx.app.db
    rec = vm_mod._rec(db, vm)
    if type(host) is not str or host not in db.table("host"):
        raise XapiError("HANDLE_INVALID", "host", host)
    if rec["bios_strings"]:
        raise XapiError("VM_BIOS_STRINGS_ALREADY_SET")
    # the VM also gets the host as affinity, to start there
    _table(ctx).update(vm, {"bios_strings": dict(db.table("host").get_field(host, "bios_strings")),
                            "affinity": host})
    return ""


def set_NVRAM(ctx, session, self, value):  # noqa: N802 - the API's name
    vm_mod._rec(ctx.app.db, self)
    _table(ctx).set_field(self, "NVRAM", dict(value))
    return ""


def add_to_NVRAM(ctx, session, self, key, value):  # noqa: N802 - the API's name
    rec = vm_mod._rec(ctx.app.db, self)
    if key in rec["NVRAM"]:
        raise XapiError("MAP_DUPLICATE_KEY", "VM", "NVRAM", rec["uuid"], key)
    _table(ctx).set_field(self, "NVRAM", {**rec["NVRAM"], key: value})
    return ""


def remove_from_NVRAM(ctx, session, self, key):  # noqa: N802 - the API's name
    rec = vm_mod._rec(ctx.app.db, self)
    if key in rec["NVRAM"]:
        _table(ctx).set_field(self, "NVRAM", {k: v for k, v in rec["NVRAM"].items() if k != key})
    return ""


def set_has_vendor_device(ctx, session, self, value):
    rec = vm_mod._rec(ctx.app.db, self)
    _power_is(rec, self, "Halted")
    values = {"has_vendor_device": bool(value)}
    if value and int(rec["hardware_platform_version"]) < HAS_VENDOR_DEVICE_PLATFORM_VERSION:
        values["hardware_platform_version"] = HAS_VENDOR_DEVICE_PLATFORM_VERSION
    _table(ctx).update(self, values)
    return ""


# -- queries ---------------------------------------------------------------------------------------
_DISK_PREFIXES = ("xvd", "hd", "sd")


def _disk_number(userdevice: str) -> int | None:
    """The disk number a VBD's userdevice names ("3", "xvdd", "hdd"...), or None."""
    if userdevice.isdigit():
        return int(userdevice)
    for p in _DISK_PREFIXES:
        if userdevice.startswith(p) and userdevice[len(p):].isalpha():
            n = 0
            for c in userdevice[len(p):]:
                n = n * 26 + (ord(c) - ord("a") + 1)
            return n - 1
    return None


def get_allowed_VBD_devices(ctx, session, vm):  # noqa: N802 - the API's name
    db = ctx.app.db
    rec = vm_mod._rec(db, vm)
    top = 255 if rec.get("is_control_domain") else 254
    vbds = db.table("VBD")
    used = {_disk_number(vbds.get_field(v, "userdevice")) for v in rec["VBDs"] if v in vbds}
    return [str(n) for n in range(top + 1) if n not in used]


def get_allowed_VIF_devices(ctx, session, vm):  # noqa: N802 - the API's name
    db = ctx.app.db
    rec = vm_mod._rec(db, vm)
    vifs = db.table("VIF")
    used = {vifs.get_field(v, "device") for v in rec["VIFs"] if v in vifs}
    return [str(n) for n in range(7) if str(n) not in used]


def get_boot_record(ctx, session, self):
    return _op(ctx, self, "get_boot_record")


def get_cooperative(ctx, session, self):
    """Deprecated: xapi always answers true."""
    vm_mod._rec(ctx.app.db, self)
    return True


def _sr_properly_shared(db, sr: str) -> bool:
    srs, pbds, hosts = db.table("SR"), db.table("PBD"), db.table("host")
    if sr not in srs or not srs.get_field(sr, "shared"):
        return False
    plugged = {pbds.get_field(p, "host") for p in srs.get_field(sr, "PBDs")
               if p in pbds and pbds.get_field(p, "currently_attached")}
    return all(h in plugged for h in hosts.refs() if hosts.get_field(h, "enabled"))


def _network_properly_shared(db, net: str) -> bool:
    """Every enabled host has a PIF on it that is no bond slave."""
    nets, pifs, hosts = db.table("network"), db.table("PIF"), db.table("host")
    if net not in nets:
        return False
    with_pif = {pifs.get_field(p, "host") for p in nets.get_field(net, "PIFs")
                if p in pifs and pifs.get_field(p, "bond_slave_of") == NULL_REF}
    return all(h in with_pif for h in hosts.refs() if hosts.get_field(h, "enabled"))


def assert_agile(ctx, session, self):
    db = ctx.app.db
    rec = vm_mod._rec(db, self)
    vbds, vdis, vifs = db.table("VBD"), db.table("VDI"), db.table("VIF")
    for vbd in rec["VBDs"]:
        if vbd in vbds and not vbds.get_field(vbd, "empty"):
            vdi = vbds.get_field(vbd, "VDI")
            sr = vdis.get_field(vdi, "SR") if vdi in vdis else NULL_REF
            if not _sr_properly_shared(db, sr):
                raise XapiError("HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED", sr)
    for vif in rec["VIFs"]:
        if vif in vifs:
            net = vifs.get_field(vif, "network")
            if not _network_properly_shared(db, net):
                raise XapiError("HA_CONSTRAINT_VIOLATION_NETWORK_NOT_SHARED", net)
    return ""


def get_SRs_required_for_recovery(ctx, session, self, session_to):  # noqa: N802 - the API's name
    """The non-ISO SRs of the VM's disks (CDs aside) that have no attached PBD in the database of
    `session_to`; a plain session's database is this pool's own (xapi: Xapi_vm_helpers)."""
    db = ctx.app.db
    rec = vm_mod._rec(db, self)
    vbds, vdis, srs, pbds = db.table("VBD"), db.table("VDI"), db.table("SR"), db.table("PBD")
    out: list[str] = []
    for vbd in rec["VBDs"]:
        if vbd not in vbds or vbds.get_field(vbd, "type") == "CD":
            continue
        vdi = vbds.get_field(vbd, "VDI")
        if vdi not in vdis:
            continue
        sr = vdis.get_field(vdi, "SR")
        if sr in out or sr not in srs or srs.get_field(sr, "content_type") == "iso":
            continue
        if not any(p in pbds and pbds.get_field(p, "currently_attached") for p in srs.get_field(sr, "PBDs")):
            out.append(sr)
    return out


def _not_in_xapi(name: str, op: str):
    def call(ctx, session, vm, arg):
        _op(ctx, vm, op)
        raise XapiError("NOT_IMPLEMENTED", name)
    call.__name__ = call.__qualname__ = name
    return call


send_sysrq = _not_in_xapi("send_sysrq", "send_sysrq")
send_trigger = _not_in_xapi("send_trigger", "send_trigger")


def query_services(ctx, session, self):
    _op(ctx, self, "query_services")
    raise XapiError("NOT_IMPLEMENTED", "query_services")


# the messages (xapi.actions.vm imports these, where dispatch looks them up)
# -- suspend image ---------------------------------------------------------------------------------
async def set_suspend_VDI(ctx, session, self, value):  # noqa: N802 - the API's name
    """A suspended VM's image moved to another VDI (xapi_vm.ml): Suspended only, not a cbt_metadata
    VDI (VDI_INCOMPATIBLE_TYPE [vm, "cbt_metadata"], as xapi names the VM), some host must see the
    SRs of all the VM's disks and the new one (VM_REQUIRES_SR), and both VDIs must hold the same bytes
    (SUSPEND_VDI_REPLACEMENT_IS_NOT_IDENTICAL ["uuid : md5", "uuid : md5"])."""
    from xapi.actions import vdi_read
    from xapi.pool import placement
    app = ctx.app
    db = app.db
    rec = vm_mod._rec(db, self)
    _power_is(rec, self, "Suspended")
    vdis = db.table("VDI")
    if type(value) is not str or value not in vdis:
        raise XapiError("HANDLE_INVALID", "VDI", value)
    if vdis.get_field(value, "type") == "cbt_metadata":
        raise XapiError("VDI_INCOMPATIBLE_TYPE", self, "cbt_metadata")
    src = rec["suspend_VDI"]
    if src == value:
        return ""
    vbds = db.table("VBD")
    disks = [vbds.get_field(b, "VDI") for b in rec["VBDs"] or [] if b in vbds and not vbds.get_field(b, "empty")]
    required = [vdis.get_field(v, "SR") for v in [value, *disks] if v in vdis]
    hosts = db.table("host").refs()
    if not any(all(placement.sr_available(db, sr, h) for sr in required) for h in hosts):
        missing = next(sr for sr in required if not placement.sr_available(db, sr, app.host_ref))
        raise XapiError("VM_REQUIRES_SR", self, missing)
    if src not in vdis:
        raise XapiError("HANDLE_INVALID", "VDI", src)
    src_sum, dst_sum = await asyncio.gather(vdi_read.checksum(app, src), vdi_read.checksum(app, value))
    if src_sum != dst_sum:
        raise XapiError("SUSPEND_VDI_REPLACEMENT_IS_NOT_IDENTICAL", f"{vdis.get_field(src, 'uuid')} : {src_sum}",
                        f"{vdis.get_field(value, 'uuid')} : {dst_sum}")
    _table(ctx).set_field(self, "suspend_VDI", value)
    return ""


def set_is_default_template(ctx, session, vm, value):
    """A default template is a template (not the other way round); other_config's default_template
    keeps the flag too, for older clients (xapi_vm.ml)."""
    table = _table(ctx)
    rec = vm_mod._rec(ctx.app.db, vm)
    if value and not rec.get("is_a_template"):
        table.set_field(vm, "is_a_template", True)
    other = {k: v for k, v in (rec.get("other_config") or {}).items() if k != "default_template"}
    table.set_field(vm, "other_config", {**other, "default_template": "true" if value else "false"})
    table.set_field(vm, "is_default_template", bool(value))
    return ""


__all__ = ["compute_memory_overhead", "maximise_memory", "set_VCPUs_max", "set_VCPUs_at_startup", "set_domain_type",
           "set_HVM_boot_policy", "set_HVM_shadow_multiplier", "set_memory_target_live", "set_order",
           "set_start_delay", "set_shutdown_delay", "set_ha_restart_priority", "set_ha_always_run",
           "set_appliance", "set_bios_strings", "copy_bios_strings", "set_NVRAM", "add_to_NVRAM",
           "remove_from_NVRAM", "set_has_vendor_device", "get_allowed_VBD_devices", "get_allowed_VIF_devices",
           "get_boot_record", "get_cooperative", "assert_agile", "get_SRs_required_for_recovery", "send_sysrq",
           "send_trigger", "query_services", "set_suspend_VDI", "set_is_default_template"]
