"""What a Xen host's toolstack (libxl) writes into xenstore for a running domain.

    populate_domain(store, 5, "vm1", uuid, memory_kb=1048576, vcpus=2,
                    vbds=[{"device": "xvda", "params": "/srv/disk.vhd"}],
                    vifs=[{"devid": 0, "mac": "00:16:3e:12:34:56", "bridge": "xenbr0"}])

writes, with libxl's permissions (``ro``: ``n0 r<domid>``, the guest reads;
``rw``: ``n<domid>``, the guest owns):

    /local/domain/<domid>                      ro   name, vm, domid
        cpu/<n>/availability                   ro   online | offline
        memory/static-max, target, videoram    ro
        control/                               ro   platform-feature-multiprocessor-suspend,
                                                    platform-feature-xs_reset_watches
        control/shutdown, feature-poweroff,    rw   (feature-* say "1" once the guest's
          feature-reboot, feature-suspend,          drivers are up, i.e. when connected)
          sysrq (and feature-s3/-s4 for hvm)
        data, drivers, feature, attr, error    rw
        device/suspend/event-channel           rw
        store/port, store/ring-ref             ro
        console/                               ro   backend, backend-id, limit, type, output,
                                                    tty, port, ring-ref
        device/vbd/<devid>/                    fe   backend, backend-id, state, virtual-device,
                                                    device-type (+ ring-ref, event-channel,
                                                    protocol when connected)
        device/vif/<devid>/                    fe   backend, backend-id, state, handle, mac
                                                    (+ tx-ring-ref, rx-ring-ref, event-channel,
                                                    request-rx-copy, feature-* when connected)
    /local/domain/<bdomid>/backend/vbd/<domid>/<devid>/   be  frontend, frontend-id, params,
        script, online, removable, bootable, state, dev, type, mode, device-type,
        discard-enable (+ physical-device, hotplug-status, sectors, sector-size, info,
        feature-* when connected)
    /local/domain/<bdomid>/backend/vif/<domid>/<devid>/   be  frontend, frontend-id, online,
        state, script, mac, bridge, handle, type (+ hotplug-status, feature-* when connected)
    /local/domain/<bdomid>/backend/console/<domid>/0/     be  frontend, frontend-id, online,
        state, protocol
    /vm/<uuid>                                 ro   uuid, name, image/ostype, start_time
    /libxl/<domid>                             n0   type, dm-version,
                                                    device/<kind>/<devid>/{frontend,backend}

(fe: ``n<domid> r<bdomid>``; be: ``n<bdomid> r<domid>``.)  States are
XenbusState numbers: 1 Initialising, 4 Connected.
"""
import time
from dataclasses import dataclass, fields
from typing import Optional

XENBUS_INITIALISING = 1
XENBUS_CONNECTED = 4
CONSOLE_LIMIT = 1048576


@dataclass
class Vbd:
    device: str = "xvda"            # xvda.., hda.., sda.., or a device number
    params: str = ""                # what the backend opens (a path)
    mode: str = "w"                 # "w" read-write, "r" read-only
    device_type: str = "disk"       # "disk" or "cdrom"
    backend_domid: int = 0
    backend: str = "vbd"            # backend kind: "vbd" (blkback) or "qdisk" (qemu)
    type: str = "phy"               # backend's "type": phy, qdisk...
    bootable: bool = True
    removable: bool = False
    sectors: int = 0
    sector_size: int = 512
    script: str = "/etc/xen/scripts/block"


@dataclass
class Vif:
    devid: int = 0
    mac: str = "00:16:3e:00:00:00"
    bridge: str = "xenbr0"
    backend_domid: int = 0
    mtu: Optional[int] = None
    script: str = "/etc/xen/scripts/vif-bridge"


def _spec(cls, item):
    if isinstance(item, cls):
        return item
    names = {f.name for f in fields(cls)}
    unknown = set(item) - names
    if unknown:
        raise TypeError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
    return cls(**item)


def disk_devid(device) -> int:
    """Xen's device number of a virtual disk name (libxl's rules): xvdX ->
    202:16*n (and the extended form past xvdp), hdX -> 3/22/33/..., sdX ->
    8:16*n; a number stands for itself."""
    if isinstance(device, int):
        return device
    s = str(device)
    if s.isdigit():
        return int(s)

    def disk_index(letters):
        n = 0
        for ch in letters:
            if not "a" <= ch <= "z":
                raise ValueError(f"bad virtual disk name {device!r}")
            n = n * 26 + (ord(ch) - 96)
        return n - 1

    def split(rest):
        i = len(rest)
        while i and rest[i - 1].isdigit():
            i -= 1
        letters, part = rest[:i], rest[i:]
        if not letters:
            raise ValueError(f"bad virtual disk name {device!r}")
        return disk_index(letters), int(part) if part else 0

    if s.startswith("xvd"):
        disk, part = split(s[3:])
        if disk < 16 and part < 16:
            return (202 << 8) | (disk << 4) | part
        return (1 << 28) | (disk << 8) | part
    if s.startswith("hd"):
        disk, part = split(s[2:])
        majors = (3, 22, 33, 34, 56, 57, 88, 89, 90, 91)
        if disk >= 2 * len(majors) or part >= 64:
            raise ValueError(f"bad virtual disk name {device!r}")
        return (majors[disk // 2] << 8) | ((disk % 2) << 6) | part
    if s.startswith("sd"):
        disk, part = split(s[2:])
        if disk >= 16 or part >= 16:
            raise ValueError(f"bad virtual disk name {device!r}")
        return (8 << 8) | (disk << 4) | part
    raise ValueError(f"bad virtual disk name {device!r}")


def _writev(store, base, entries):
    for key, value in entries:
        store.write(f"{base}/{key}", str(value))


def _device(store, kind, domid, devid, bdomid, back, front, ro_front=(), backend_kind=None):
    """libxl__device_generic_add: frontend owned by the guest (backend reads),
    backend owned by the backend domain (guest reads), and /libxl's record."""
    backend_kind = backend_kind or kind
    dom_path = f"/local/domain/{domid}"
    fe = f"{dom_path}/device/{kind}/{devid}" if kind != "console" else f"{dom_path}/console"
    be = f"/local/domain/{bdomid}/backend/{backend_kind}/{domid}/{devid}"
    fe_perms = f"n{domid} r{bdomid}"
    be_perms = f"n{bdomid} r{domid}"
    if store.exists(fe):
        store.rm(fe)
    store.mkdir(fe, perms=fe_perms)
    store.write(f"{fe}/backend", be)
    _writev(store, fe, front)
    for key, value in ro_front:
        store.write(f"{fe}/{key}", str(value), perms=be_perms)
    if store.exists(be):
        store.rm(be)
    store.mkdir(be, perms=be_perms)
    store.write(f"{be}/frontend", fe)
    _writev(store, be, back)
    lx = f"/libxl/{domid}/device/{kind}/{devid}"
    store.mkdir(lx, perms="n0")
    store.write(f"{lx}/frontend", fe)
    store.write(f"{lx}/backend", be)
    return fe, be


def populate_domain(store, domid: int, name: str, vm_uuid: str, memory_kb: int, vcpus: int,
                    vbds=(), vifs=(), *, domain_type: str = "pv", max_memory_kb: int = None,
                    online_vcpus: int = None, connected: bool = True, introduce: bool = True,
                    console: bool = True, store_port: int = 1, store_mfn: int = None,
                    console_port: int = 2, console_mfn: int = None, console_tty: str = "",
                    start_time: float = None, platform: dict = None) -> str:
    """Write a running domain's entries (see the module doc); returns
    /local/domain/<domid>.  `connected` also writes what the guest's drivers
    and the backends write once they are up (state 4, rings, features,
    hotplug-status).  `introduce` introduces the domain (@introduceDomain)."""
    if not 0 < domid < 0x7FF0:
        raise ValueError(f"bad domid {domid}")
    if domain_type not in ("pv", "hvm", "pvh"):
        raise ValueError(f"bad domain type {domain_type!r}")
    vbds = [_spec(Vbd, v) for v in vbds]
    vifs = [_spec(Vif, v) for v in vifs]
    max_memory_kb = memory_kb if max_memory_kb is None else max_memory_kb
    online_vcpus = vcpus if online_vcpus is None else online_vcpus
    dom_path = f"/local/domain/{domid}"
    vm_path = f"/vm/{vm_uuid}"
    libxl_path = f"/libxl/{domid}"
    ro, rw = f"n0 r{domid}", f"n{domid}"
    hvm = domain_type == "hvm"

    # libxl__domain_make
    for path, perms in ((dom_path, ro), (vm_path, ro), (libxl_path, "n0")):
        if store.exists(path):
            store.rm(path)
        store.mkdir(path, perms=perms)
    store.mkdir(f"{libxl_path}/device", perms="n0")
    store.write(f"{dom_path}/vm", vm_path)
    store.write(f"{dom_path}/name", name)
    for sub in ("cpu", "memory", "device", "control") + (("hvmloader",) if hvm else ()):
        store.mkdir(f"{dom_path}/{sub}", perms=ro)
    features = ("feature-poweroff", "feature-reboot", "feature-suspend") + (("feature-s3", "feature-s4") if hvm else ())
    for sub in ("control/shutdown",) + tuple(f"control/{f}" for f in features) + ("control/sysrq",):
        store.mkdir(f"{dom_path}/{sub}", perms=rw)
    for sub in ("device/suspend/event-channel", "data", "drivers", "feature", "attr", "error"):
        store.mkdir(f"{dom_path}/{sub}", perms=rw)
    store.write(f"{vm_path}/uuid", vm_uuid)
    store.write(f"{vm_path}/name", name)
    for key, value in (platform or {}).items():
        store.write(f"{dom_path}/platform/{key}", str(value))
    store.write(f"{dom_path}/control/platform-feature-multiprocessor-suspend", "1")
    store.write(f"{dom_path}/control/platform-feature-xs_reset_watches", "1")
    store.write(f"{libxl_path}/type", domain_type)
    store.write(f"{libxl_path}/dm-version", "qemu_xen")

    # libxl__build_post
    store_mfn = (0xFEFFF if hvm else 0x10000 + domid) if store_mfn is None else store_mfn
    _writev(store, dom_path, [
        ("memory/static-max", max_memory_kb),
        ("memory/target", memory_kb),
        ("memory/videoram", 8192 if hvm else -1),
        ("domid", domid),
        ("store/port", store_port),
        ("store/ring-ref", store_mfn),
    ] + [(f"cpu/{i}/availability", "online" if i < online_vcpus else "offline") for i in range(vcpus)])
    started = time.time() if start_time is None else start_time
    _writev(store, vm_path, [("image/ostype", "hvm" if hvm else "linux"), ("start_time", f"{started:.2f}")])

    # the primary console (libxl__device_console_add with a build state)
    if console:
        console_mfn = (0xFEFFE if hvm else 0x10100 + domid) if console_mfn is None else console_mfn
        _device(store, "console", domid, 0, 0,
                back=[("frontend-id", domid), ("online", 1), ("state", XENBUS_INITIALISING),
                      ("protocol", "vt100")],
                front=[("backend-id", 0)],
                ro_front=[("limit", CONSOLE_LIMIT), ("type", "xenconsoled"), ("output", "pty"),
                          ("tty", console_tty), ("port", console_port), ("ring-ref", console_mfn)])

    state = XENBUS_CONNECTED if connected else XENBUS_INITIALISING
    for vbd in vbds:
        devid = disk_devid(vbd.device)
        writable = vbd.mode == "w"
        back = [("params", vbd.params)]
        if vbd.backend == "vbd":
            back.append(("script", vbd.script))
        back += [("frontend-id", domid), ("online", 1), ("removable", int(vbd.removable)),
                 ("bootable", int(vbd.bootable)), ("state", state), ("dev", vbd.device),
                 ("type", vbd.type), ("mode", vbd.mode), ("device-type", vbd.device_type),
                 ("discard-enable", int(writable))]
        front = [("backend-id", vbd.backend_domid), ("state", state), ("virtual-device", devid),
                 ("device-type", vbd.device_type)]
        if domain_type == "pv":
            front.append(("protocol", "x86_64-abi"))
        if connected:
            back += [("physical-device", f"{0xfd:x}:{devid & 0xff:x}"), ("hotplug-status", "connected"),
                     ("sectors", vbd.sectors), ("sector-size", vbd.sector_size),
                     ("info", 0 if writable else 4), ("feature-flush-cache", 1),
                     ("feature-discard", int(writable)), ("feature-persistent", 1),
                     ("feature-max-indirect-segments", 256)]
            front += [("ring-ref", 8 + devid % 4096), ("event-channel", 10 + devid % 1000),
                      ("feature-persistent", 1)]
        _device(store, "vbd", domid, devid, vbd.backend_domid, back, front, backend_kind=vbd.backend)

    for vif in vifs:
        back = [("frontend-id", domid), ("online", 1), ("state", state), ("script", vif.script),
                ("mac", vif.mac), ("bridge", vif.bridge), ("handle", vif.devid), ("type", "vif")]
        front = [("backend-id", vif.backend_domid), ("state", state), ("handle", vif.devid),
                 ("mac", vif.mac)]
        if vif.mtu is not None:
            back.append(("mtu", vif.mtu))
            front.append(("mtu", vif.mtu))
        if connected:
            back += [("hotplug-status", "connected"), ("feature-sg", 1), ("feature-gso-tcpv4", 1),
                     ("feature-gso-tcpv6", 1), ("feature-rx-copy", 1), ("feature-rx-flip", 0),
                     ("feature-multicast-control", 1), ("multi-queue-max-queues", 1)]
            front += [("tx-ring-ref", 768 + 2 * vif.devid), ("rx-ring-ref", 769 + 2 * vif.devid),
                      ("event-channel", 20 + vif.devid), ("request-rx-copy", 1),
                      ("feature-rx-notify", 1), ("feature-sg", 1), ("feature-gso-tcpv4", 1),
                      ("feature-gso-tcpv6", 1)]
        _device(store, "vif", domid, vif.devid, vif.backend_domid, back, front)

    if connected:
        # the guest's drivers say which shutdown requests they handle
        for f in ("feature-poweroff", "feature-reboot", "feature-suspend"):
            store.write(f"{dom_path}/control/{f}", "1")
    if introduce:
        store.introduce_domain(domid, store_mfn, store_port)
    return dom_path


def populate_dom0(store, name: str = "Domain-0", vm_uuid: str = "00000000-0000-0000-0000-000000000000",
                  memory_kb: int = None, vcpus: int = 1):
    """/local/domain/0 as xen-init-dom0 and the toolstack leave it."""
    store.write("/local/domain/0/name", name)
    store.write("/local/domain/0/domid", "0")
    store.write("/local/domain/0/vm", f"/vm/{vm_uuid}")
    if memory_kb is not None:
        store.write("/local/domain/0/memory/target", str(memory_kb))
        store.write("/local/domain/0/memory/static-max", str(memory_kb))
    for i in range(vcpus):
        store.write(f"/local/domain/0/cpu/{i}/availability", "online")
    store.write(f"/vm/{vm_uuid}/uuid", vm_uuid)
    store.write(f"/vm/{vm_uuid}/name", name)


def remove_domain(store, domid: int):
    """Tear a domain down as libxl's destroy does: release it (drops the
    nodes it owns, fires @releaseDomain), then remove its backends, its
    /local/domain, /vm and /libxl entries."""
    if store.is_domain_introduced(domid) and domid != 0:
        store.release_domain(domid)
    dom_path = f"/local/domain/{domid}"
    vm_path = None
    if store.exists(f"{dom_path}/vm"):
        vm_path = store.read(f"{dom_path}/vm").decode("latin-1")
    for bdom in (store.directory("/local/domain") if store.exists("/local/domain") else []):
        base = f"/local/domain/{bdom}/backend"
        if not store.exists(base):
            continue
        for kind in store.directory(base):
            path = f"{base}/{kind}/{domid}"
            if store.exists(path):
                store.rm(path)
    for path in (dom_path, vm_path, f"/libxl/{domid}"):
        if path and path.startswith("/") and store.exists(path):
            store.rm(path)
