"""The per-class tables of xe's records, as xapi-cli-server/records.ml lists them: each field's xe name,
in records.ml's order, what it is read from, its kind (RO/RW, SRO/SRW, MRO/MRW), hidden, expensive and
deprecated marks; and cli_operations.gen_cmds' default filters and list fields of each class prefix.
The machinery (fields, values, conversions) is xapi.cli.records.
"""
from __future__ import annotations

from typing import Callable

from xapi.cli.records import NID, UNKNOWN_TIME, Builder, Field, Getter, RecordFailure, View
from xapi.datamodel.errors import XapiError


# -- derivations through API calls -----------------------------------------------------------------------
def _call_uuids(method: str, cls: str, *, sep: str = "; ", swallow: bool = False):
    """Getters for the uuids of the refs an API call on the object returns."""
    async def refs(v: View) -> list:
        try:
            return await v.call(method, v.ref)
        except XapiError:
            if swallow:
                return []
            raise

    async def get_set(v: View) -> list[str]:
        return [await v.run.uuid_of(cls, r) for r in await refs(v)]

    async def get(v: View) -> str:
        return sep.join(await get_set(v))
    return get, get_set


def _call_strings(method: str):
    """Getters for a string list an API call returns, empty on failure (allowed-VBD-devices)."""
    async def get_set(v: View) -> list[str]:
        try:
            return list(await v.call(method, v.ref))
        except XapiError:
            return []

    async def get(v: View) -> str:
        return "; ".join(await get_set(v))
    return get, get_set


def _data_source(owner: str, name: Callable[[View], str], scale: float = 1.0, *, host_field: str | None = None):
    """A data source's current value, `%.3f`, `<unknown>` when there is none (io_read_kbs...)."""
    async def get(v: View) -> str:
        try:
            target = v.rec[host_field] if host_field else v.rec.get("VM") if owner == "VM" else v.ref
            value = await v.call(f"{owner}.query_data_source", target, name(v))
            return "%.3f" % (float(value) / scale)
        except (XapiError, TypeError, ValueError, KeyError):
            return "<unknown>"
    return get


def _server_error_text(e: XapiError) -> str:
    """OCaml's Printexc.to_string of an Api_errors.Server_error."""
    return f"Server_error({e.code}, [ {'; '.join(str(p) for p in e.params)} ])"


# -- the tables, in records.ml's order -----------------------------------------------------------------------
def _vm() -> list[Field]:
    b = Builder("VM")
    b.own("uuid", "uuid")
    b.own("name-label", "name_label", "RW")
    b.own("name-description", "name_description", "RW")
    b.own("user-version", "user_version", "RW")
    b.own("is-a-template", "is_a_template", "RW")
    b.own("is-default-template", "is_default_template", "RW")
    b.own("is-a-snapshot", "is_a_snapshot")
    b.own("snapshot-of", "snapshot_of")
    b.own("snapshots", "snapshots")
    b.own("snapshot-time", "snapshot_time")
    b.own("transportable-snapshot-id", "transportable_snapshot_id", hidden=True)
    b.own("snapshot-info", "snapshot_info")
    b.own("parent", "parent")
    b.own("children", "children")
    b.own("is-control-domain", "is_control_domain")
    b.own("power-state", "power_state")
    b.rel("memory-actual", "metrics", "VM_metrics", "memory_actual")

    async def memory_target(v: View) -> str:
        try:
            return str(int(float(await v.call("VM.query_data_source", v.ref, "memory_target"))))
        except XapiError as e:
            return "0" if e.code == "VM_BAD_POWER_STATE" else "<unknown>"
        except (TypeError, ValueError):
            return "<unknown>"
    b.derived("memory-target", memory_target, expensive=True)
    b.own("memory-overhead", "memory_overhead")
    for n in ("static-max", "dynamic-max", "dynamic-min", "static-min"):
        b.own(f"memory-{n}", "memory_" + n.replace("-", "_"), "RW", how="bytes")
    b.own("suspend-VDI-uuid", "suspend_VDI", "RW")
    b.own("suspend-SR-uuid", "suspend_SR", "RW")
    params = b.own("VCPUs-params", "VCPUs_params", "MRW")
    plain_add = params.add_to_map

    async def vcpus_params_add(v: View, k: str, s: str) -> None:
        if k not in ("weight", "cap", "mask"):
            raise RecordFailure(f"Failed to add parameter '{k}': expecting 'weight','cap' or 'mask'")
        await plain_add(v, k, s)
    params.add_to_map = vcpus_params_add
    b.own("VCPUs-max", "VCPUs_max", "RW")
    b.own("VCPUs-at-startup", "VCPUs_at_startup", "RW")
    b.own("actions-after-shutdown", "actions_after_shutdown", "RW")
    b.own("actions-after-reboot", "actions_after_reboot", "RW")
    b.own("actions-after-crash", "actions_after_crash", "RW")
    b.own("console-uuids", "consoles", "SRO")
    b.rel("hvm", "metrics", "VM_metrics", "hvm", none="false")
    b.rel("nomigrate", "metrics", "VM_metrics", "nomigrate", none="false", hidden=True)
    b.rel("nested-virt", "metrics", "VM_metrics", "nested_virt", none="false", hidden=True)
    b.own("platform", "platform", "MRW")
    b.own("allowed-operations", "allowed_operations", "SRO")
    b.own("current-operations", "current_operations", "SRO", values=True)
    b.own("blocked-operations", "blocked_operations", "MRW")
    get, get_set = _call_strings("VM.get_allowed_VBD_devices")
    b.derived("allowed-VBD-devices", get, get_set=get_set, expensive=True)
    get, get_set = _call_strings("VM.get_allowed_VIF_devices")
    b.derived("allowed-VIF-devices", get, get_set=get_set, expensive=True)
    get, _ = _call_uuids("VM.get_possible_hosts", "host")
    b.derived("possible-hosts", get, expensive=True)
    b.own("domain-type", "domain_type", "RW")
    b.rel("current-domain-type", "metrics", "VM_metrics", "current_domain_type")
    b.own("HVM-boot-policy", "HVM_boot_policy", "RW")
    b.own("HVM-boot-params", "HVM_boot_params", "MRW")
    b.own("HVM-shadow-multiplier", "HVM_shadow_multiplier", "RW")
    b.own("NVRAM", "NVRAM", "MRW", hidden=True)
    for n in ("kernel", "ramdisk", "args", "legacy-args", "bootloader", "bootloader-args"):
        b.own(f"PV-{n}", "PV_" + n.replace("-", "_"), "RW")
    b.own("last-boot-CPU-flags", "last_boot_CPU_flags")

    async def last_boot_record(v: View) -> str:
        return "'" + (v.rec.get("last_booted_record") or "") + "'"
    b.derived("last-boot-record", last_boot_record, expensive=True)
    b.own("resident-on", "resident_on")
    b.own("affinity", "affinity", "RW")
    b.own("other-config", "other_config", "MRW")
    b.own("dom-id", "domid")
    b.own("recommendations", "recommendations")
    xs = b.own("xenstore-data", "xenstore_data", "MRW")

    async def clear_xenstore_data(v: View) -> None:
        await v.call("VM.set_xenstore_data", v.ref, {})
    xs.clear_map = clear_xenstore_data
    b.own("ha-always-run", "ha_always_run", "RW", deprecated=True)
    b.own("ha-restart-priority", "ha_restart_priority", "RW")
    b.own("blobs", "blobs")
    b.rel("start-time", "metrics", "VM_metrics", "start_time", none=UNKNOWN_TIME)
    b.rel("install-time", "metrics", "VM_metrics", "install_time", none=UNKNOWN_TIME)
    b.rel("VCPUs-number", "metrics", "VM_metrics", "VCPUs_number")

    async def utilisation(v: View) -> dict[str, str]:
        m = await v.related("metrics", "VM_metrics")
        n = int(m.get("VCPUs_number") or 0) if m else 0
        out = {}
        try:
            for i in range(n):
                out[str(i)] = "%.3f" % float(await v.call("VM.query_data_source", v.ref, f"cpu{i}"))
        except (XapiError, TypeError, ValueError):
            return {}
        return out

    async def utilisation_text(v: View) -> str:
        return "; ".join(f"{k}: {x}" for k, x in (await utilisation(v)).items())
    b.derived("VCPUs-utilisation", utilisation_text, get_map=utilisation, expensive=True)
    gm = ("guest_metrics", "VM_guest_metrics")
    b.rel("os-version", *gm, "os_version", "MRO")
    b.rel("PV-drivers-version", *gm, "PV_drivers_version", "MRO")
    b.rel("PV-drivers-up-to-date", *gm, "PV_drivers_up_to_date", deprecated=True)
    b.rel("memory", *gm, "memory", "MRO")
    b.rel("disks", *gm, "disks", "MRO")
    b.own("VBDs", "VBDs", "SRO")
    b.rel("networks", *gm, "networks", "MRO")
    b.rel("PV-drivers-detected", *gm, "PV_drivers_detected")
    b.rel("other", *gm, "other", "MRO")
    b.rel("live", *gm, "live")
    b.rel("guest-metrics-last-updated", *gm, "last_updated")
    b.rel("can-use-hotplug-vbd", *gm, "can_use_hotplug_vbd")
    b.rel("can-use-hotplug-vif", *gm, "can_use_hotplug_vif")

    async def cooperative(v: View) -> str:
        try:
            return "true" if await v.call("VM.get_cooperative", v.ref) else "false"
        except XapiError:
            return "true"
    b.derived("cooperative", cooperative, expensive=True, deprecated=True)
    b.own("tags", "tags", "SRW", sep=", ")
    b.own("appliance", "appliance", "RW")
    b.own("snapshot-schedule", "snapshot_schedule", "RW")
    b.own("is-vmss-snapshot", "is_vmss_snapshot")
    b.own("start-delay", "start_delay", "RW")
    b.own("shutdown-delay", "shutdown_delay", "RW")
    b.own("order", "order", "RW")
    b.own("version", "version")
    b.own("generation-id", "generation_id")
    b.own("hardware-platform-version", "hardware_platform_version")
    b.own("has-vendor-device", "has_vendor_device", "RW")
    b.own("requires-reboot", "requires_reboot")
    b.own("reference-label", "reference_label")
    bios = b.own("bios-strings", "bios_strings", "MRO")

    async def set_bios_strings(v: View, kv: dict) -> None:
        settable = ("bios-vendor", "bios-version", "system-manufacturer", "system-product-name",
                    "system-version", "system-serial-number", "baseboard-manufacturer",
                    "baseboard-product-name", "baseboard-version", "baseboard-serial-number",
                    "baseboard-asset-tag", "baseboard-location-in-chassis", "enclosure-asset-tag", "hp-rombios")
        for k in kv:
            if k not in settable:
                raise RecordFailure(f"Unknown key '{k}': expecting {', '.join(settable)}")
        await v.call("VM.set_bios_strings", v.ref, kv)
    bios.set_map = set_bios_strings
    b.own("pending-guidances", "pending_guidances")
    b.own("vtpms", "VTPMs")
    return b.fields


def _host() -> list[Field]:
    b = Builder("host")
    b.own("uuid", "uuid")
    b.own("name-label", "name_label", "RW")
    b.own("name-description", "name_description", "RW")
    b.own("allowed-operations", "allowed_operations", "SRO")
    b.own("current-operations", "current_operations", "SRO", values=True)
    b.own("enabled", "enabled")
    b.own("display", "display")
    b.own("API-version-major", "API_version_major")
    b.own("API-version-minor", "API_version_minor")
    b.own("API-version-vendor", "API_version_vendor")
    b.own("API-version-vendor-implementation", "API_version_vendor_implementation", "MRO")
    b.own("logging", "logging", "MRW")
    b.own("suspend-image-sr-uuid", "suspend_image_sr", "RW")
    b.own("crash-dump-sr-uuid", "crash_dump_sr", "RW")
    b.own("software-version", "software_version", "MRO")
    b.own("capabilities", "capabilities", "SRO")
    b.own("other-config", "other_config", "MRW")
    b.own("cpu_info", "cpu_info", "MRO")
    b.own("chipset-info", "chipset_info", "MRO")
    b.own("hostname", "hostname")
    b.own("address", "address")
    b.own("https_only", "https_only")
    b.own("supported-bootloaders", "supported_bootloaders", "SRO")
    b.own("blobs", "blobs")
    b.own("memory-overhead", "memory_overhead")
    b.rel("memory-total", "metrics", "host_metrics", "memory_total")
    b.rel("memory-free", "metrics", "host_metrics", "memory_free")

    async def free_computed(v: View) -> str:
        return str(await v.call("host.compute_free_memory", v.ref))
    b.derived("memory-free-computed", free_computed, expensive=True)
    b.rel("host-metrics-live", "metrics", "host_metrics", "live")

    async def patches(v: View) -> list[str]:
        out = []
        for hp in v.rec.get("patches") or []:
            out.append(await v.call("pool_patch.get_uuid", await v.call("host_patch.get_pool_patch", hp)))
        return out

    async def patches_text(v: View) -> str:
        return ", ".join(await patches(v))
    b.derived("patches", patches_text, get_set=patches, deprecated=True)
    updates = b.own("updates", "updates", "SRO", sep=", ")
    updates.get = _joined(updates.get_set, ", ")
    b.derived("ha-statefiles", _statefiles)
    b.own("ha-network-peers", "ha_network_peers")
    b.own("external-auth-type", "external_auth_type")
    b.own("external-auth-service-name", "external_auth_service_name")
    b.own("external-auth-configuration", "external_auth_configuration", "MRO")
    b.own("edition", "edition")
    b.own("license-server", "license_server", "MRO")
    b.own("power-on-mode", "power_on_mode")
    b.own("power-on-config", "power_on_config", "MRO")
    b.own("local-cache-sr", "local_cache_sr")
    b.own("tags", "tags", "SRW", sep=", ")
    b.own("ssl-legacy", "ssl_legacy", "RW")
    b.own("guest_VCPUs_params", "guest_VCPUs_params", "MRW")
    b.own("virtual-hardware-platform-versions", "virtual_hardware_platform_versions", "SRO")
    b.own("control-domain-uuid", "control_domain")
    b.own("resident-vms", "resident_VMs", "SRO")
    b.own("updates-requiring-reboot", "updates_requiring_reboot", "SRO")
    b.own("features", "features", "SRO")
    b.own("iscsi_iqn", "iscsi_iqn", "RW")
    b.own("multipathing", "multipathing", "RW")
    b.own("uefi-certificates", "uefi_certificates", "RW", hidden=True)
    b.own("pending-guidances", "pending_guidances")
    b.own("tls-verification-enabled", "tls_verification_enabled")
    b.own("last-software-update", "last_software_update")
    return b.fields


def _joined(get_set, sep: str) -> Getter:
    async def get(v: View) -> str:
        return sep.join(await get_set(v))
    return get


async def _statefiles(v: View) -> str:
    """ha_statefiles holds VDI references as strings: shown as their uuids."""
    return "; ".join([await v.run.uuid_of("VDI", r) for r in v.rec.get("ha_statefiles") or []])


def _sr() -> list[Field]:
    b = Builder("SR")
    b.own("uuid", "uuid")
    b.own("name-label", "name_label", "RW")
    b.own("name-description", "name_description", "RW")

    async def host(v: View) -> str:
        pbds = v.rec.get("PBDs") or []
        if len(pbds) > 1:
            return "<shared>"
        if not pbds:
            return NID
        try:
            return await v.run.name_of("host", await v.call("PBD.get_host", pbds[0]))
        except XapiError:
            return NID
    b.derived("host", host)
    b.own("allowed-operations", "allowed_operations", "SRO")
    b.own("current-operations", "current_operations", "SRO", values=True)
    b.own("VDIs", "VDIs", "SRO")
    b.own("PBDs", "PBDs", "SRO")
    b.own("virtual-allocation", "virtual_allocation")
    b.own("physical-utilisation", "physical_utilisation")
    b.own("physical-size", "physical_size")
    b.own("type", "type")
    b.own("content-type", "content_type")
    b.own("shared", "shared", "RW")
    b.own("introduced-by", "introduced_by")
    b.own("is-tools-sr", "is_tools_sr")
    b.own("other-config", "other_config", "MRW")
    b.own("sm-config", "sm_config", "MRO")
    b.own("blobs", "blobs")
    b.own("local-cache-enabled", "local_cache_enabled")
    b.own("tags", "tags", "SRW", sep=", ")
    b.own("clustered", "clustered")
    return b.fields


def _vdi() -> list[Field]:
    b = Builder("VDI")
    b.own("uuid", "uuid")
    b.own("name-label", "name_label", "RW")
    b.own("name-description", "name_description", "RW")
    b.own("is-a-snapshot", "is_a_snapshot")
    b.own("snapshot-of", "snapshot_of")
    b.own("snapshots", "snapshots")
    b.own("snapshot-time", "snapshot_time")
    b.own("allowed-operations", "allowed_operations", "SRO")
    b.own("current-operations", "current_operations", "SRO", values=True)
    b.own("sr-uuid", "SR")
    b.ref_name("sr-name-label", "SR")
    b.own("vbd-uuids", "VBDs", "SRO")
    b.own("crashdump-uuids", "crash_dumps", "SRO")
    b.own("virtual-size", "virtual_size")
    b.own("physical-utilisation", "physical_utilisation")
    b.own("location", "location")
    b.own("type", "type")
    b.own("sharable", "sharable")
    b.own("read-only", "read_only")
    b.own("storage-lock", "storage_lock")
    b.own("managed", "managed")
    b.own("parent", "parent", deprecated=True)
    b.own("missing", "missing")
    b.own("is-tools-iso", "is_tools_iso")
    b.own("other-config", "other_config", "MRW")
    xs = b.own("xenstore-data", "xenstore_data", "MRO")

    async def clear_xenstore_data(v: View) -> None:
        await v.call("VDI.set_xenstore_data", v.ref, {})
    xs.clear_map = clear_xenstore_data
    b.own("sm-config", "sm_config", "MRO")
    b.own("on-boot", "on_boot", "RW")
    b.own("allow-caching", "allow_caching", "RW")
    b.own("metadata-latest", "metadata_latest")

    async def metadata_of_pool(v: View) -> str:
        pools = await v.call("pool.get_all")
        mine = v.rec.get("metadata_of_pool")
        if pools and mine == pools[0]:
            return await v.run.uuid_of("pool", mine)
        try:
            uuid = await v.call("VDI.read_database_pool_uuid", v.ref)
        except XapiError:
            uuid = ""
        return uuid or NID
    b.derived("metadata-of-pool", metadata_of_pool)
    b.own("tags", "tags", "SRW", sep=", ")
    b.own("cbt-enabled", "cbt_enabled")
    return b.fields


def _vbd() -> list[Field]:
    b = Builder("VBD")
    b.own("uuid", "uuid")
    b.own("vm-uuid", "VM")
    b.ref_name("vm-name-label", "VM")
    b.own("vdi-uuid", "VDI")
    name = b.ref_name("vdi-name-label", "VDI")
    plain = name.get

    async def vdi_name(v: View) -> str:
        return "<EMPTY>" if v.rec.get("empty") else await plain(v)
    name.get = vdi_name
    b.own("allowed-operations", "allowed_operations", "SRO")
    b.own("current-operations", "current_operations", "SRO", values=True)
    b.own("empty", "empty")
    b.own("device", "device")
    b.own("userdevice", "userdevice", "RW")
    b.own("bootable", "bootable", "RW")
    b.own("mode", "mode", "RW")
    b.own("type", "type", "RW")
    b.own("unpluggable", "unpluggable", "RW")
    b.own("currently-attached", "currently_attached")

    async def attachable(v: View) -> str:
        try:
            await v.call("VBD.assert_attachable", v.ref)
            return "true"
        except XapiError as e:
            return f"false (error: {_server_error_text(e)})"
    b.derived("attachable", attachable, expensive=True)
    b.own("storage-lock", "storage_lock")
    b.own("status-code", "status_code")
    b.own("status-detail", "status_detail")
    b.own("qos_algorithm_type", "qos_algorithm_type", "RW")
    b.own("qos_algorithm_params", "qos_algorithm_params", "MRW")
    b.own("qos_supported_algorithms", "qos_supported_algorithms", "SRO")
    b.own("other-config", "other_config", "MRW")
    b.derived("io_read_kbs", _data_source("VM", lambda v: f"vbd_{v.rec.get('device')}_read", 1024.0),
              expensive=True)
    b.derived("io_write_kbs", _data_source("VM", lambda v: f"vbd_{v.rec.get('device')}_write", 1024.0),
              expensive=True)
    return b.fields


def _vif() -> list[Field]:
    b = Builder("VIF")
    b.own("uuid", "uuid")
    b.own("vm-uuid", "VM")
    b.ref_name("vm-name-label", "VM")
    b.own("allowed-operations", "allowed_operations", "SRO")
    b.own("current-operations", "current_operations", "SRO", values=True)
    b.own("device", "device")
    b.own("MAC", "MAC", case_insensitive=True)
    b.own("MAC-autogenerated", "MAC_autogenerated")
    b.own("MTU", "MTU")
    b.own("currently-attached", "currently_attached")
    b.own("qos_algorithm_type", "qos_algorithm_type", "RW")
    b.own("qos_algorithm_params", "qos_algorithm_params", "MRW")
    b.own("qos_supported_algorithms", "qos_supported_algorithms", "SRO")
    b.own("other-config", "other_config", "MRW")
    b.own("network-uuid", "network")
    b.ref_name("network-name-label", "network")
    b.derived("io_read_kbs", _data_source("VM", lambda v: f"vif_{v.rec.get('device')}_rx", 1024.0),
              expensive=True)
    b.derived("io_write_kbs", _data_source("VM", lambda v: f"vif_{v.rec.get('device')}_tx", 1024.0),
              expensive=True)
    b.own("locking-mode", "locking_mode", "RW")
    b.own("ipv4-allowed", "ipv4_allowed", "SRW", setter="set_ipv4_allowed")
    b.own("ipv6-allowed", "ipv6_allowed", "SRW", setter="set_ipv6_allowed")
    b.own("ipv4-configuration-mode", "ipv4_configuration_mode")
    b.own("ipv4-addresses", "ipv4_addresses")
    b.own("ipv4-gateway", "ipv4_gateway")
    b.own("ipv6-configuration-mode", "ipv6_configuration_mode")
    b.own("ipv6-addresses", "ipv6_addresses")
    b.own("ipv6-gateway", "ipv6_gateway")
    return b.fields


def _network() -> list[Field]:
    b = Builder("network")
    b.own("uuid", "uuid")
    b.own("name-label", "name_label", "RW")
    b.own("name-description", "name_description", "RW")
    b.own("VIF-uuids", "VIFs", "SRO")
    b.own("PIF-uuids", "PIFs", "SRO")
    b.own("MTU", "MTU", "RW")
    b.own("bridge", "bridge")
    b.own("managed", "managed")
    b.own("other-config", "other_config", "MRW")
    b.own("blobs", "blobs")
    b.own("tags", "tags", "SRW", sep=", ")
    b.own("default-locking-mode", "default_locking_mode", "RW")
    b.own("purpose", "purpose", "SRW", sep=", ")
    return b.fields


def _pif() -> list[Field]:
    b = Builder("PIF")
    b.own("uuid", "uuid")
    b.own("device", "device")
    b.own("MAC", "MAC", case_insensitive=True)
    b.own("physical", "physical")
    b.own("managed", "managed")
    b.own("currently-attached", "currently_attached")
    b.own("MTU", "MTU")
    b.own("VLAN", "VLAN")
    b.own("vlan-master-of", "VLAN_master_of")
    b.own("vlan-slave-of", "VLAN_slave_of")
    b.own("bond-master-of", "bond_master_of")
    b.own("bond-slave-of", "bond_slave_of")
    b.own("sriov-physical-PIF-of", "sriov_physical_PIF_of")
    b.own("sriov-logical-PIF-of", "sriov_logical_PIF_of")
    b.own("tunnel-access-PIF-of", "tunnel_access_PIF_of")
    b.own("tunnel-transport-PIF-of", "tunnel_transport_PIF_of")
    b.own("management", "management")
    b.own("network-uuid", "network")
    b.ref_name("network-name-label", "network")
    b.own("host-uuid", "host")
    b.ref_name("host-name-label", "host")
    b.own("IP-configuration-mode", "ip_configuration_mode")
    b.own("IP", "IP")
    b.own("netmask", "netmask")
    b.own("gateway", "gateway")
    b.own("IPv6-configuration-mode", "ipv6_configuration_mode")
    b.own("IPv6", "IPv6")
    b.own("IPv6-gateway", "ipv6_gateway")
    b.own("primary-address-type", "primary_address_type")
    b.own("DNS", "DNS")
    props = b.own("properties", "properties", "MRO")

    async def set_property(v: View, k: str, s: str) -> None:
        await v.call("PIF.set_property", v.ref, k, s)
    props.set_in_map = set_property
    b.own("capabilities", "capabilities", "SRO")
    b.derived("io_read_kbs", _data_source("host", lambda v: f"pif_{v.rec.get('device')}_rx", 1024.0,
                                          host_field="host"), expensive=True)
    b.derived("io_write_kbs", _data_source("host", lambda v: f"pif_{v.rec.get('device')}_tx", 1024.0,
                                           host_field="host"), expensive=True)
    pm = ("metrics", "PIF_metrics")
    b.rel("carrier", *pm, "carrier")
    b.rel("vendor-id", *pm, "vendor_id")
    b.rel("vendor-name", *pm, "vendor_name")
    b.rel("device-id", *pm, "device_id")
    b.rel("device-name", *pm, "device_name")

    async def speed(v: View) -> str:
        m = await v.related(*pm)
        return NID if m is None else f"{m.get('speed')} Mbit/s"
    b.derived("speed", speed)

    async def duplex(v: View) -> str:
        m = await v.related(*pm)
        if m is None:
            return NID
        return "full" if m.get("duplex") else "half" if m.get("carrier") else "unknown"
    b.derived("duplex", duplex)
    b.own("disallow-unplug", "disallow_unplug", "RW")
    b.rel("pci-bus-path", *pm, "pci_bus_path")
    b.own("other-config", "other_config", "MRW")
    b.own("igmp-snooping-status", "igmp_snooping_status")
    return b.fields


def _pbd() -> list[Field]:
    b = Builder("PBD")
    b.own("uuid", "uuid")
    b.own("host", "host", deprecated=True)
    b.own("host-uuid", "host")
    b.ref_name("host-name-label", "host")
    b.own("sr-uuid", "SR")
    b.ref_name("sr-name-label", "SR")
    b.own("device-config", "device_config", "MRO")
    b.own("currently-attached", "currently_attached")
    b.own("other-config", "other_config", "MRW")
    return b.fields


def _task() -> list[Field]:
    b = Builder("task")
    b.own("uuid", "uuid")
    b.own("name-label", "name_label")
    b.own("name-description", "name_description")
    b.own("subtask_of", "subtask_of")
    b.own("subtasks", "subtasks")
    b.own("resident-on", "resident_on")
    b.own("status", "status")
    b.own("progress", "progress")
    b.own("type", "type")
    b.own("result", "result")
    b.own("created", "created")
    b.own("finished", "finished")
    b.own("error_info", "error_info")
    b.own("allowed_operations", "allowed_operations")
    b.own("current_operations", "current_operations", values=True)
    b.own("other-config", "other_config", "MRW")
    return b.fields


def _pool() -> list[Field]:
    b = Builder("pool")
    b.own("uuid", "uuid")
    b.own("name-label", "name_label", "RW")
    b.own("name-description", "name_description", "RW")
    b.own("master", "master")
    b.own("default-SR", "default_SR", "RW")
    b.own("crash-dump-SR", "crash_dump_SR", "RW")
    b.own("suspend-image-SR", "suspend_image_SR", "RW")

    async def sr_types(v: View) -> str:
        return "; ".join(await v.call("SR.get_supported_types"))
    b.derived("supported-sr-types", sr_types, expensive=True)
    b.own("other-config", "other_config", "MRW")
    b.own("allowed-operations", "allowed_operations", "SRO")
    b.own("current-operations", "current_operations", "SRO", values=True)
    b.own("ha-enabled", "ha_enabled")
    b.own("ha-configuration", "ha_configuration")
    b.derived("ha-statefiles", _statefiles)
    b.own("ha-host-failures-to-tolerate", "ha_host_failures_to_tolerate", "RW")
    b.own("ha-plan-exists-for", "ha_plan_exists_for")
    b.own("ha-allow-overcommit", "ha_allow_overcommit", "RW")
    b.own("ha-overcommitted", "ha_overcommitted")
    b.own("blobs", "blobs")
    b.own("wlb-url", "wlb_url")
    b.own("wlb-username", "wlb_username")
    b.own("wlb-enabled", "wlb_enabled", "RW")
    b.own("wlb-verify-cert", "wlb_verify_cert", "RW")
    b.own("igmp-snooping-enabled", "igmp_snooping_enabled", "RW")
    b.own("gui-config", "gui_config", "MRW")
    b.own("health-check-config", "health_check_config", "MRW")

    async def vswitch(v: View) -> str:
        return v.rec.get("vswitch_controller") or "<not set>"
    b.derived("vswitch-controller", vswitch, hidden=True)
    b.own("restrictions", "restrictions")
    b.own("tags", "tags", "SRW", sep=", ")

    async def license_state(v: View) -> str:
        try:
            state = await v.call("pool.get_license_state", v.ref)
        except XapiError as e:
            if e.code != "NOT_IMPLEMENTED":
                raise
            state = {}          # not in this server: the record still shows
        return "; ".join(f"{k}: {x}" for k, x in state.items())
    b.derived("license-state", license_state)
    b.own("ha-cluster-stack", "ha_cluster_stack")
    b.own("guest-agent-config", "guest_agent_config", "MRW")
    b.own("cpu_info", "cpu_info", "MRO")
    b.own("policy-no-vendor-device", "policy_no_vendor_device", "RW")
    b.own("live-patching-disabled", "live_patching_disabled", "RW")
    b.own("uefi-certificates", "uefi_certificates", "RW", hidden=True)
    b.own("tls-verification-enabled", "tls_verification_enabled")
    b.own("client-certificate-auth-enabled", "client_certificate_auth_enabled")
    b.own("client-certificate-auth-name", "client_certificate_auth_name")
    repos = b.own("repositories", "repositories", "SRW", setter="set_repositories")

    async def add_repository(v: View, s: str) -> None:
        await v.call("pool.add_repository", v.ref, await v.call("Repository.get_by_uuid", s))

    async def remove_repository(v: View, s: str) -> None:
        await v.call("pool.remove_repository", v.ref, await v.call("Repository.get_by_uuid", s))
    repos.add_to_set, repos.remove_from_set = add_repository, remove_repository
    b.own("repository-proxy-url", "repository_proxy_url")
    b.own("repository-proxy-username", "repository_proxy_username")
    return b.fields


def _host_cpu() -> list[Field]:
    b = Builder("host_cpu")
    b.own("uuid", "uuid")
    b.own("host-uuid", "host")
    b.own("number", "number")
    b.own("vendor", "vendor")
    b.own("speed", "speed")
    b.own("model", "model")
    b.own("family", "family")
    b.own("modelname", "modelname")
    b.own("stepping", "stepping")
    b.own("flags", "flags")
    b.derived("utilisation", _data_source("host", lambda v: f"cpu{v.rec.get('number')}", host_field="host"),
              expensive=True)
    return b.fields


def _console() -> list[Field]:
    b = Builder("console")
    b.own("uuid", "uuid")
    b.own("vm-uuid", "VM")
    b.ref_name("vm-name-label", "VM")
    b.own("protocol", "protocol")
    b.own("location", "location")
    b.own("other-config", "other_config", "MRW")
    return b.fields


def _bond() -> list[Field]:
    b = Builder("Bond")
    b.own("uuid", "uuid")
    b.own("master", "master")
    b.own("slaves", "slaves")
    b.own("mode", "mode")
    props = b.own("properties", "properties", "MRO")

    async def set_property(v: View, k: str, s: str) -> None:
        await v.call("Bond.set_property", v.ref, k, s)
    props.set_in_map = set_property
    b.own("primary-slave", "primary_slave")
    b.own("links-up", "links_up")
    b.own("auto-update-mac", "auto_update_mac")
    return b.fields


def _vlan() -> list[Field]:
    b = Builder("VLAN")
    b.own("uuid", "uuid")
    b.own("tagged-PIF", "tagged_PIF")
    b.own("untagged-PIF", "untagged_PIF")
    b.own("tag", "tag")
    return b.fields


def _tunnel() -> list[Field]:
    b = Builder("tunnel")
    b.own("uuid", "uuid")
    b.own("access-PIF", "access_PIF")
    b.own("transport-PIF", "transport_PIF")
    b.own("status", "status")
    b.own("other-config", "other_config", "MRW")
    b.own("protocol", "protocol")
    return b.fields


def _message() -> list[Field]:
    b = Builder("message")
    b.own("uuid", "uuid")
    b.own("name", "name")
    b.own("priority", "priority")
    b.own("class", "cls")
    b.own("obj-uuid", "obj_uuid")
    b.own("timestamp", "timestamp")
    b.own("body", "body")
    return b.fields


def _sm() -> list[Field]:
    b = Builder("SM")
    b.own("uuid", "uuid")
    b.own("name-label", "name_label")
    b.own("name-description", "name_description")
    b.own("type", "type")
    b.own("vendor", "vendor")
    b.own("copyright", "copyright")
    b.own("required-api-version", "required_api_version")
    b.own("capabilities", "capabilities", deprecated=True)
    b.own("features", "features", "MRO")
    b.own("configuration", "configuration")
    b.own("driver-filename", "driver_filename")
    b.own("required-cluster-stack", "required_cluster_stack", sep=", ")
    return b.fields


def _host_crashdump() -> list[Field]:
    b = Builder("host_crashdump")
    b.own("uuid", "uuid")
    b.own("host-uuid", "host")
    b.own("timestamp", "timestamp")
    b.own("size", "size")
    return b.fields


# xe prefix -> the record's table; gen_cmds' default filters and default list fields (matched by
# name, shown in the record's order; none: every field)
TABLES: dict[str, Callable[[], list[Field]]] = {
    "vm": _vm, "template": _vm, "snapshot": _vm, "host": _host, "sr": _sr, "vdi": _vdi, "vbd": _vbd,
    "vif": _vif, "network": _network, "pif": _pif, "pbd": _pbd, "task": _task, "pool": _pool,
    "host-cpu": _host_cpu, "console": _console, "bond": _bond, "vlan": _vlan, "tunnel": _tunnel,
    "message": _message, "sm": _sm, "host-crashdump": _host_crashdump,
}
DEFAULT_FILTERS = {"vm": {"is-a-template": "false"},
                   "template": {"is-a-template": "true", "is-a-snapshot": "false"},
                   "snapshot": {"is-a-snapshot": "true"}}
DEFAULT_PARAMS = {
    "pool": ("uuid", "name-label", "name-description", "master", "default-SR"),
    "pif": ("uuid", "device", "VLAN", "mac", "network-uuid", "currently-attached"),
    "vif": ("uuid", "device", "vm-uuid", "network-uuid"),
    "network": ("uuid", "name-label", "name-description", "bridge"),
    "vm": ("name-label", "uuid", "power-state"),
    "template": ("name-label", "name-description", "uuid"),
    "snapshot": ("name-label", "name-description", "uuid", "snapshot_of", "snapshot_time", "is-vmss-snapshot"),
    "host": ("uuid", "name-label", "name-description"),
    "host-cpu": ("uuid", "number", "vendor", "speed", "utilisation"),
    "vdi": ("uuid", "name-label", "name-description", "virtual-size", "read-only", "sharable", "sr-uuid"),
    "vbd": ("uuid", "vm-uuid", "vm-name-label", "vdi-uuid", "device", "empty"),
    "sr": ("uuid", "name-label", "name-description", "host", "type", "content-type"),
    "pbd": ("uuid", "host-uuid", "sr-uuid", "device-config", "currently-attached"),
    "task": ("uuid", "name-label", "name-description", "status", "progress"),
    "console": ("uuid", "vm-uuid", "vm-name-label", "protocol", "location"),
    "bond": ("uuid", "master", "slaves"),
    "vlan": ("uuid", "tagged-PIF", "untagged-PIF", "tag"),
    "tunnel": ("uuid", "transport-PIF", "access-PIF", "status"),
    "message": (),              # gen_cmds gives none: every field
    "sm": ("uuid", "type", "name-label", "name-description", "vendor", "copyright", "configuration"),
    "host-crashdump": ("uuid", "host", "timestamp", "size"),
}

