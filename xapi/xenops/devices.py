"""The xenstore side of a domain's disks and network interfaces, as libxl writes them: the device
descriptions xapi hands over (VM.add's "vbds"/"vifs", VBD.plug, VIF.plug) turned into the layout's
Vbd/Vif, and hotplug of one device into a running domain (backend under
/local/domain/0/backend/<kind>/<domid>/<devid>, frontend under /local/domain/<domid>/device/<kind>/<devid>).
"""
from __future__ import annotations

from xapi.xenstored import layout


def vbd_spec(d: dict) -> layout.Vbd:
    return layout.Vbd(device=d["device"], params=d.get("params", ""), mode=d.get("mode", "w"),
                      device_type=d.get("device_type", "disk"), bootable=bool(d.get("bootable", True)),
                      removable=bool(d.get("removable", False)), sectors=int(d.get("sectors", 0)))


def vif_spec(d: dict) -> layout.Vif:
    return layout.Vif(devid=int(d["devid"]), mac=d.get("mac", "00:16:3e:00:00:00"),
                      bridge=d.get("bridge", "xenbr0"), mtu=d.get("mtu"))


def vbd_devid(d: dict) -> int:
    return layout.disk_devid(d["device"])


def plug_vbd(store, domid: int, d: dict, domain_type: str = "pv") -> None:
    """A disk hot-plugged into a running domain, connected (what blkback and blkfront write)."""
    v = vbd_spec(d)
    devid = layout.disk_devid(v.device)
    writable = v.mode == "w"
    state = layout.XENBUS_CONNECTED
    back = [("params", v.params), ("script", v.script), ("frontend-id", domid), ("online", 1),
            ("removable", int(v.removable)), ("bootable", int(v.bootable)), ("state", state),
            ("dev", v.device), ("type", v.type), ("mode", v.mode), ("device-type", v.device_type),
            ("discard-enable", int(writable)), ("physical-device", f"{0xfd:x}:{devid & 0xff:x}"),
            ("hotplug-status", "connected"), ("sectors", v.sectors), ("sector-size", v.sector_size),
            ("info", 0 if writable else 4), ("feature-flush-cache", 1), ("feature-discard", int(writable)),
            ("feature-persistent", 1), ("feature-max-indirect-segments", 256)]
    front = [("backend-id", v.backend_domid), ("state", state), ("virtual-device", devid),
             ("device-type", v.device_type)]
    if domain_type == "pv":
        front.append(("protocol", "x86_64-abi"))
    front += [("ring-ref", 8 + devid % 4096), ("event-channel", 10 + devid % 1000), ("feature-persistent", 1)]
    layout._device(store, "vbd", domid, devid, v.backend_domid, back, front)


def set_vbd_media(store, domid: int, d: dict) -> None:
    """A CD inserted or ejected: the backend's params change (what qemu's media change watches)."""
    devid = layout.disk_devid(d["device"])
    be = f"/local/domain/0/backend/vbd/{domid}/{devid}"
    if store.exists(be):
        store.write(f"{be}/params", d.get("params", ""))


def set_vif_bridge(store, domid: int, devid: int, bridge: str) -> None:
    """A VIF moved to another network: its backend is on the new bridge (the guest sees nothing)."""
    be = f"/local/domain/0/backend/vif/{domid}/{devid}"
    if store.exists(be):
        store.write(f"{be}/bridge", bridge)


def plug_vif(store, domid: int, d: dict) -> None:
    """A network interface hot-plugged into a running domain, connected (netback and netfront)."""
    v = vif_spec(d)
    state = layout.XENBUS_CONNECTED
    back = [("frontend-id", domid), ("online", 1), ("state", state), ("script", v.script), ("mac", v.mac),
            ("bridge", v.bridge), ("handle", v.devid), ("type", "vif")]
    front = [("backend-id", v.backend_domid), ("state", state), ("handle", v.devid), ("mac", v.mac)]
    if v.mtu is not None:
        back.append(("mtu", v.mtu))
        front.append(("mtu", v.mtu))
    back += [("hotplug-status", "connected"), ("feature-sg", 1), ("feature-gso-tcpv4", 1),
             ("feature-gso-tcpv6", 1), ("feature-rx-copy", 1), ("feature-rx-flip", 0),
             ("feature-multicast-control", 1), ("multi-queue-max-queues", 1)]
    front += [("tx-ring-ref", 768 + 2 * v.devid), ("rx-ring-ref", 769 + 2 * v.devid),
              ("event-channel", 20 + v.devid), ("request-rx-copy", 1), ("feature-rx-notify", 1),
              ("feature-sg", 1), ("feature-gso-tcpv4", 1), ("feature-gso-tcpv6", 1)]
    layout._device(store, "vif", domid, v.devid, v.backend_domid, back, front)


def unplug(store, domid: int, kind: str, devid: int) -> None:
    """The frontend, the backend and libxl's record of one device removed (libxl's device remove)."""
    for path in (f"/local/domain/{domid}/device/{kind}/{devid}",
                 f"/local/domain/0/backend/{kind}/{domid}/{devid}",
                 f"/libxl/{domid}/device/{kind}/{devid}"):
        if store.exists(path):
            store.rm(path)
