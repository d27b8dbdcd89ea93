"""What an XCP-ng host ships for its database's first boot: the default VM templates and the storage
(SM) drivers it registers.

The facts (names, reference labels, uuids, memory, VCPUs, boot and platform settings, the driver
fields) follow XCP-ng's guest-templates-json and sm packages; the descriptions are ours.
"""
from __future__ import annotations

GiB = 1 << 30
MiB = 1 << 20

# -- templates ---------------------------------------------------------------------------------------
# Every template starts from these platform flags (the template loader's defaults).
_PLATFORM_DEFAULTS = {"nx": "true", "acpi": "1", "apic": "true", "pae": "true", "hpet": "true"}

# Linux guests booted by HVM (base-hvmlinux)
_HVM_LINUX = {
    "platform": {"vga": "std", "videoram": "8", "viridian": "false", "device_id": "0001"},
    "other_config": {"linux_template": "true", "install-methods": "cdrom,nfs,http,ftp"},
    "boot": {"order": "cdn"},
    "restrictions": {"memory-static-max": 1536 * GiB, "vcpus-max": 32, "allow-gpu-passthrough": "1",
                     "allow-vgpu": "1"},
    "vcpus": 1,
}
# ... and their UEFI flavour (base-linux-uefi)
_UEFI_LINUX = {
    **_HVM_LINUX,
    "platform": {**_HVM_LINUX["platform"], "secureboot": "auto"},
    "boot": {"firmware": "uefi", "order": "cdn"},
    "restrictions": {**_HVM_LINUX["restrictions"], "supports-uefi": "yes", "supports-secure-boot": "yes"},
}
# Windows guests (base-windows, -8, -10)
_WINDOWS = {
    "platform": {"cores-per-socket": "2", "device_id": "0002", "viridian": "true",
                 "viridian_time_ref_count": "true", "viridian_reference_tsc": "true",
                 "viridian_hcall_remote_tlb_flush": "true", "viridian_apic_assist": "true",
                 "viridian_crash_ctl": "true", "viridian_stimer": "true", "secureboot": "true"},
    "other_config": {"install-methods": "cdrom"},
    "boot": {"firmware": "uefi", "order": "cd"},
    "restrictions": {"memory-static-max": 1536 * GiB, "vcpus-max": 32, "has-vendor-device": "true",
                     "supports-bios": "yes", "supports-uefi": "yes", "supports-secure-boot": "yes"},
    "vcpus": 2,
    "has_vendor_device": True,
    "generation_id": "0:0",
}

TEMPLATES: tuple[dict, ...] = (
    {
        "uuid": "552bce37-51b2-445d-84f2-5f33fa112d7e", "reference_label": "other-install-media",
        "name_label": "Other install media",
        "name_description": "Install an operating system of your choice from installation media.",
        "min_memory": 128 * MiB, "user_version": 2, "vcpus": 1,
        "platform": {"device-model": "qemu-upstream-compat"},
        "other_config": {"install-methods": "cdrom"},
        "boot": {"order": "dc"},
        "restrictions": {"memory-static-max": 128 * GiB, "vcpus-max": 32},
        "disks": (),
    },
    {
        **_HVM_LINUX,
        "uuid": "3de5e9c4-bafa-4f20-8720-7788e0eab29e", "reference_label": "debian-12",
        "name_label": "Debian Bookworm 12",
        "name_description": "Debian 12 (Bookworm), installed from CD or a network repository.",
        "min_memory": 512 * MiB, "disks": (10 * GiB,),
    },
    {
        **_UEFI_LINUX,
        "uuid": "df1a0e64-3799-482b-aa9f-1ed713c7dac5", "reference_label": "ubuntu-22.04",
        "name_label": "Ubuntu Jammy Jellyfish 22.04",
        "name_description": "Ubuntu 22.04 LTS (Jammy Jellyfish), UEFI boot.",
        "min_memory": 1 * GiB, "disks": (10 * GiB,),
    },
    {
        **_HVM_LINUX,
        "uuid": "535915de-8908-4506-bad8-e3696b0fb110", "reference_label": "centos-stream-9",
        "name_label": "CentOS Stream 9",
        "name_description": "CentOS Stream 9, installed from CD or a network repository.",
        "min_memory": 2 * GiB, "disks": (15 * GiB,),
    },
    {
        **_WINDOWS,
        "uuid": "7774689b-4ca1-4dea-8545-dddd6b64c17f", "reference_label": "windows-10-64bit",
        "name_label": "Windows 10 (64-bit)",
        "name_description": "Windows 10 (64-bit); storage is provisioned on the first boot.",
        "platform": {**_WINDOWS["platform"], "acpi_laptop_slate": "1"},
        "min_memory": 2 * GiB, "disks": (24 * GiB,), "bootable": False,
    },
    {
        **_WINDOWS,
        "uuid": "1c33af1c-e919-418c-ad45-85d7d6fb604a", "reference_label": "windows-server-2022-64bit",
        "name_label": "Windows Server 2022 (64-bit)",
        "name_description": "Windows Server 2022 (64-bit); storage is provisioned on the first boot.",
        "restrictions": {**_WINDOWS["restrictions"], "vcpus-min": 2, "allow-network-sriov": "1"},
        "min_memory": 1 * GiB, "disks": (32 * GiB,), "bootable": False,
    },
)

# restriction name -> the attribute xapi's clients read it from ("max"/"min"/"value")
_RESTRICTION_ATTRS = (("memory-static-max", "max"), ("vcpus-min", "min"), ("vcpus-max", "max"),
                      ("has-vendor-device", "value"), ("allow-gpu-passthrough", "value"),
                      ("allow-vgpu", "value"), ("allow-network-sriov", "value"), ("supports-bios", "value"),
                      ("supports-uefi", "value"), ("supports-secure-boot", "value"))


def recommendations(spec: dict) -> str:
    """The `recommendations` XML of a template: <restrictions> with field and property limits."""
    r = {"has-vendor-device": "true" if spec.get("has_vendor_device") else "false", **spec["restrictions"]}
    parts = [f'<restriction field="{name}" {attr}="{r[name]}"/>' for name, attr in _RESTRICTION_ATTRS
             if name in r]
    parts.append('<restriction property="number-of-vbds" max="255"/>')
    parts.append('<restriction property="number-of-vifs" max="7"/>')
    return "<restrictions>" + "".join(parts) + "</restrictions>"


def provision(spec: dict) -> str:
    """The `disks` other_config entry: the disks a VM installed from the template gets."""
    bootable = "true" if spec.get("bootable", True) else "false"
    disks = "".join(f'<disk device="{i}" size="{size}" sr="" bootable="{bootable}" type="system"/>'
                    for i, size in enumerate(spec["disks"]))
    return f"<provision>{disks}</provision>"


def template_row(spec: dict, mac_seed: str) -> dict:
    """The VM row of one default template."""
    low = spec["min_memory"]
    other = {**spec["other_config"], "default_template": "true", "mac_seed": mac_seed}
    if spec["disks"]:
        other["disks"] = provision(spec)
    vcpus = spec.get("vcpus", 1)
    return {
        "uuid": spec["uuid"], "name_label": spec["name_label"], "name_description": spec["name_description"],
        "reference_label": spec["reference_label"], "user_version": spec.get("user_version", 1),
        "is_a_template": True, "is_default_template": True, "power_state": "Halted", "domid": -1,
        "memory_static_min": low, "memory_static_max": 2 * low, "memory_dynamic_min": 2 * low,
        "memory_dynamic_max": 2 * low, "memory_target": 0,
        "VCPUs_max": vcpus, "VCPUs_at_startup": vcpus, "VCPUs_params": {},
        "actions_after_shutdown": "destroy", "actions_after_reboot": "restart",
        "actions_after_crash": "restart",
        "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "", "PV_args": "", "PV_bootloader_args": "",
        "PV_legacy_args": "", "HVM_boot_policy": "BIOS order", "HVM_boot_params": dict(spec["boot"]),
        "HVM_shadow_multiplier": 1.0, "platform": {**_PLATFORM_DEFAULTS, **spec["platform"]},
        "PCI_bus": "", "other_config": other, "recommendations": recommendations(spec),
        "domain_type": "hvm", "has_vendor_device": spec.get("has_vendor_device", False),
        "generation_id": spec.get("generation_id", ""),
    }


# -- storage drivers ---------------------------------------------------------------------------------
SM_DIR = "/opt/xensource/sm"

SM_DRIVERS: tuple[dict, ...] = (
    {
        "type": "ext", "driver": "EXT", "name_label": "Local EXT4 VHD",
        "name_description": "Disks as VHD files on a local EXT4 file system, in an LVM volume.",
        "vendor": "Citrix Systems Inc", "copyright": "(C) 2008 Citrix Systems Inc",
        "version": "1.0", "required_api_version": "1.0",
        "capabilities": ("SR_PROBE", "SR_UPDATE", "SR_SUPPORTS_LOCAL_CACHING", "VDI_CREATE", "VDI_DELETE",
                         "VDI_ATTACH", "VDI_DETACH", "VDI_UPDATE", "VDI_CLONE", "VDI_SNAPSHOT", "VDI_RESIZE",
                         "VDI_MIRROR", "VDI_GENERATE_CONFIG", "VDI_RESET_ON_BOOT/2", "ATOMIC_PAUSE",
                         "VDI_CONFIG_CBT", "VDI_ACTIVATE", "VDI_DEACTIVATE", "THIN_PROVISIONING",
                         "VDI_READ_CACHING"),
        "configuration": {"device": "local block device(s) to use, comma-separated (required)"},
    },
    {
        "type": "nfs", "driver": "NFS", "name_label": "NFS VHD",
        "name_description": "Disks as VHD files on a remote NFS export.",
        "vendor": "Citrix Systems Inc", "copyright": "(C) 2008 Citrix Systems Inc",
        "version": "1.0", "required_api_version": "1.0",
        "capabilities": ("SR_PROBE", "SR_UPDATE", "SR_CACHING", "VDI_CREATE", "VDI_DELETE", "VDI_ATTACH",
                         "VDI_DETACH", "VDI_UPDATE", "VDI_CLONE", "VDI_SNAPSHOT", "VDI_RESIZE",
                         "VDI_GENERATE_CONFIG", "VDI_MIRROR", "VDI_RESET_ON_BOOT/2", "ATOMIC_PAUSE",
                         "VDI_CONFIG_CBT", "VDI_ACTIVATE", "VDI_DEACTIVATE", "THIN_PROVISIONING",
                         "VDI_READ_CACHING"),
        "configuration": {"server": "NFS server name or address (required)",
                          "serverpath": "exported path on the server (required)",
                          "nfsversion": "NFS protocol version: 3, 4, 4.0 or 4.1 (optional)"},
    },
    {
        "type": "iso", "driver": "ISO", "name_label": "ISO",
        "name_description": "CD and DVD images kept as ISO files, local or on a network share.",
        "vendor": "Citrix Systems Inc", "copyright": "(C) 2008 Citrix Systems Inc",
        "version": "1.0", "required_api_version": "1.0",
        "capabilities": ("VDI_CREATE", "VDI_DELETE", "VDI_ATTACH", "VDI_DETACH", "SR_SCAN", "SR_ATTACH",
                         "SR_DETACH"),
        "configuration": {"location": "what to mount, e.g. server:/path (required)",
                          "options": "extra mount options (deprecated)",
                          "type": "cifs or nfs",
                          "nfsversion": "NFS protocol version: 3, 4, 4.0 or 4.1 (optional)"},
    },
    {
        "type": "udev", "driver": "udev", "name_label": "udev",
        "name_description": "Removable devices plugged into the host (CD drives, USB disks) as VDIs.",
        "vendor": "Citrix Systems Inc", "copyright": "(C) 2008 Citrix Systems Inc",
        "version": "1.0", "required_api_version": "1.1",
        "capabilities": ("VDI_INTRODUCE", "VDI_ATTACH", "VDI_DETACH", "VDI_UPDATE", "SR_UPDATE"),
        "configuration": {"location": "folder of the device links (required)"},
    },
)


def sm_row(spec: dict) -> dict:
    """The SM row of one driver: features carry their versions ('NAME/2'), capabilities only names."""
    features: dict[str, int] = {}
    for cap in spec["capabilities"]:
        name, _, version = cap.partition("/")
        features[name] = int(version) if version else 1
    return {
        "name_label": spec["name_label"], "name_description": spec["name_description"],
        "type": spec["type"], "vendor": spec["vendor"], "copyright": spec["copyright"],
        "version": spec["version"], "required_api_version": spec["required_api_version"],
        "capabilities": list(features), "features": features,
        "configuration": dict(spec["configuration"]),
        "driver_filename": f"{SM_DIR}/{spec['driver']}SR", "required_cluster_stack": [],
    }
