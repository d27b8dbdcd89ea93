"""The physical network interfaces of a host, as PIF.scan and PIF.introduce look for them (xapi's
make_tables: the devices Net.Interface.is_physical accepts, with their MAC and MTU).

On the simulated hypervisor every host has SIM_NICS NICs eth0 ... eth<SIM_NICS-1>: eth0 is the one its
first boot made the management PIF of (the same MAC, from the host's uuid), the others have MACs made
the same way from the host's uuid and the device, so every scan finds the same NICs. With libxenctrl
(backend xc) the daemon lists its own host's /sys/class/net, where an interface with a device link
is physical; another host's interfaces are out of its sight (NOT_IMPLEMENTED).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from xapi import startup
from xapi.datamodel.errors import XapiError

SIM_NICS = 4
SYS_NET = "/sys/class/net"


@dataclass(frozen=True)
class Nic:
    device: str
    MAC: str  # noqa: N815 - the PIF field's name
    MTU: int  # noqa: N815
    metrics: dict   # what the monitor would put in the PIF's PIF_metrics


def _simulated(host_uuid: str) -> dict[str, Nic]:
    nics = {}
    for i in range(SIM_NICS):
        device = f"eth{i}"
        seed = host_uuid if device == startup.MANAGEMENT_DEVICE else f"{host_uuid}/{device}"
        metrics = {"vendor_id": "8086", "vendor_name": "Intel Corporation", "device_id": "100e",
                   "device_name": "82540EM Gigabit Ethernet Controller", "pci_bus_path": f"0000:00:{3 + i:02x}.0",
                   "carrier": True, "speed": 1000, "duplex": True}
        nics[device] = Nic(device, startup._mac(seed), 1500, metrics)
    return nics


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _sysfs() -> dict[str, Nic]:
    nics = {}
    for device in sorted(os.listdir(SYS_NET)):
        base = os.path.join(SYS_NET, device)
        if not os.path.exists(os.path.join(base, "device")):
            continue
        try:
            nics[device] = Nic(device, _read(os.path.join(base, "address")).lower(),
                               int(_read(os.path.join(base, "mtu"))), {})
        except (OSError, ValueError):
            continue                            # gone while listing
    return nics


def local(backend: str, host_uuid: str) -> dict[str, Nic]:
    """device -> Nic of this daemon's own host (its first boot scans them)."""
    return _simulated(host_uuid) if backend == "sim" else _sysfs()


def nics(app, host: str) -> dict[str, Nic]:
    """device -> Nic of the host's physical interfaces."""
    if app.config.backend == "sim":
        return _simulated(app.db.table("host").get_field(host, "uuid"))
    if host != app.host_ref:
        raise XapiError("NOT_IMPLEMENTED", "PIF.scan of another host's interfaces")
    return _sysfs()
