"""What a host puts in the database when it starts, as xapi's first boot and dbsync do: the pool, the
host with its metrics and CPUs, the control domain with its metrics and consoles, the management
network and its PIF, the default templates and the storage drivers. At first boot the host's other
NICs get their PIFs too, unplugged, on the pool-wide network of their bridge (a real host's firstboot
runs PIF.scan).

The host's software_version names its network backend as xapi does (network_backend: "openvswitch" or
"bridge", what xcp-networkd runs, from the first word of network.conf): a real host's is
/etc/xensource/network.conf; a simulated host's is <data dir>/network.conf, openvswitch (XCP-ng's
default) when there is none.

`populate` is idempotent: on a database loaded from disk it finds the rows already there (the host by
INSTALLATION_UUID, dom0 by CONTROL_DOMAIN_UUID, the pool, the management PIF and its network, the
templates and the SM drivers) and only refreshes what the running host says (memory, address,
versions, CPUs); it never adds a second copy of anything.
"""
from __future__ import annotations

import hashlib
import os
import socket
import uuid as _uuid

from xapi import __version__, atomic, datamodel as dm, first_boot_data, xenctrl
from xapi.datamodel.types import datetime_now
from xapi.db.schema import NULL_REF, insert, new_uuid
from xapi.sm import local_sr

PAGE = 4096
MANAGEMENT_DEVICE = "eth0"
MANAGEMENT_BRIDGE = "xenbr0"
NETWORK_CONF = "/etc/xensource/network.conf"
OVS_DB_SOCKETS = ("/run/openvswitch/db.sock", "/var/run/openvswitch/db.sock")
# xapi gives the control domain one console per protocol
DOM0_CONSOLES = ("rfb", "vt100")


def read_inventory(data_dir: str) -> dict[str, str]:
    """The host's identity, kept across restarts (like /etc/xensource-inventory: KEY='value' lines)."""
    path = os.path.join(data_dir, "inventory")
    inv: dict[str, str] = {}
    if os.path.exists(path):
        for line in open(path):
            if "=" in line:
                k, v = line.strip().split("=", 1)
                inv[k] = v.strip("'")
    changed = False
    for key in ("INSTALLATION_UUID", "CONTROL_DOMAIN_UUID", "POOL_UUID"):
        if key not in inv:
            inv[key] = str(_uuid.uuid4())
            changed = True
    if changed:
        atomic.write_file(path, "".join(f"{k}='{v}'\n" for k, v in sorted(inv.items())).encode(), 0o644)
    return inv


def network_backend(backend: str = "sim", data_dir: str | None = None) -> str:
    """"openvswitch" or "bridge", as xcp-networkd reads network.conf ("vswitch" is openvswitch too).
    A real host without the file: openvswitch when its database socket is there, else bridge."""
    if backend == "sim":
        path = os.path.join(data_dir, "network.conf") if data_dir else None
    else:
        path = NETWORK_CONF
    kind = ""
    if path is not None:
        try:
            with open(path) as f:
                kind = f.read().strip().lower()
        except OSError:
            pass
    if kind in ("openvswitch", "vswitch"):
        return "openvswitch"
    if kind == "bridge":
        return "bridge"
    if backend == "sim":
        return "openvswitch"
    return "openvswitch" if any(os.path.exists(p) for p in OVS_DB_SOCKETS) else "bridge"


# -- helpers -----------------------------------------------------------------------------------------
def _sync(table, ref: str, values: dict) -> None:
    """Writes the fields that differ (one write, so one event, or none at all)."""
    row = table.get(ref)
    changed = {k: v for k, v in values.items() if k not in row or row[k] != v}
    if changed:
        table.update(ref, changed)


def _valid(db, cls: str, ref) -> bool:
    return isinstance(ref, str) and ref != NULL_REF and ref in db.table(cls)


def _one(db, cls: str, field: str, value):
    refs = db.table(cls).find(field, value)
    return refs[0] if refs else None


def _mac(seed: str) -> str:
    """A stable, locally administered unicast MAC for this host's NIC."""
    h = bytearray(hashlib.sha1(seed.encode()).digest()[:6])
    h[0] = (h[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in h)


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


# -- populate ----------------------------------------------------------------------------------------
def populate(db, inventory: dict[str, str], hv, address: str, backend: str = "sim",
             data_dir: str | None = None) -> tuple[str, str]:
    """Creates this host's rows, or refreshes them when they are already there; returns (pool, host).
    `backend` is the hypervisor's ("sim" or "xc"), `data_dir` the daemon's (the simulator's network.conf)."""
    info = hv.physinfo()
    dom0 = next(d for d in hv.domain_list() if d["domid"] == 0)
    hostname = socket.gethostname()
    now = datetime_now()

    first_boot = _one(db, "host", "uuid", inventory["INSTALLATION_UUID"]) is None
    host = _host(db, inventory, info, hostname, address, now, network_backend(backend, data_dir))
    pool = _pool(db, inventory, host)
    _host_cpus(db, host, info)
    dom0_ref = _control_domain(db, inventory, host, hostname, dom0, now)
    _dom0_consoles(db, dom0_ref, address)
    _management_interface(db, inventory, host, address, now)
    if first_boot:
        _scan_nics(db, host, backend, inventory["INSTALLATION_UUID"])
    _templates(db)
    _storage_drivers(db)
    if first_boot:
        local_sr.first_boot(db, pool, host)    # "Local storage", the pool's default SR (xapi.sm.local_sr)
    return pool, host


def _host(db, inventory, info, hostname, address, now, network_kind) -> str:
    from xapi.actions.host_settings import EDITIONS
    hosts = db.table("host")
    total = info["total_pages"] * PAGE
    free = info["free_pages"] * PAGE
    live = {
        "hostname": hostname, "address": address, "enabled": True,
        "API_version_major": dm.API_VERSION_MAJOR, "API_version_minor": dm.API_VERSION_MINOR,
        "API_version_vendor": "XenSource",
        "software_version": {"product_brand": "pyxapi", "product_version": __version__,
                             "platform_version": "3.4.0", "xapi": __version__, "xapi_build": __version__,
                             "xen": "4.17.0", "build_number": __version__, "hostname": hostname,
                             "network_backend": network_kind, "db_schema": "5.602"},
        "cpu_info": {"cpu_count": str(info["nr_cpus"]), "socket_count": str(max(1, info["nr_nodes"])),
                     "speed": f"{info['cpu_khz'] / 1000:.3f}", "vendor": "GenuineIntel",
                     "modelname": "Simulated CPU"},
        "capabilities": ["xen-3.0-x86_64", "hvm-3.0-x86_32", "hvm-3.0-x86_64"], "sched_policy": "credit",
        "edition": "xcp-ng", "editions": list(EDITIONS),     # what host.apply_edition accepts
    }
    metrics_live = {"memory_total": total, "memory_free": free, "live": True, "last_updated": now}
    host = _one(db, "host", "uuid", inventory["INSTALLATION_UUID"])
    if host is None:
        metrics = insert(db, "host_metrics", **metrics_live)
        return insert(db, "host", uuid=inventory["INSTALLATION_UUID"], name_label=hostname,
                      metrics=metrics, memory_overhead=0, **live)
    _sync(hosts, host, live)
    metrics = hosts.get_field(host, "metrics")
    if _valid(db, "host_metrics", metrics):
        _sync(db.table("host_metrics"), metrics, metrics_live)
    else:
        hosts.set_field(host, "metrics", insert(db, "host_metrics", **metrics_live))
    return host


def _pool(db, inventory, host) -> str:
    pools = db.table("pool")
    refs = pools.refs()
    if not refs:
        return insert(db, "pool", uuid=inventory["POOL_UUID"], master=host, name_label="")
    pool = refs[0]
    _sync(pools, pool, {"master": host})
    return pool


def _host_cpus(db, host, info) -> None:
    cpus = db.table("host_cpu")
    values = {"vendor": "GenuineIntel", "speed": info["cpu_khz"] // 1000, "modelname": "Simulated CPU",
              "family": 6, "model": 85, "stepping": "4", "flags": "fpu de tsc msr pae cx8 apic sep",
              "features": ""}
    existing = sorted(cpus.find("host", host), key=lambda r: cpus.get_field(r, "number"))
    if len(existing) != info["nr_cpus"]:
        # like xapi, the host's CPU objects are made again when the count changed
        for ref in existing:
            cpus.remove(ref)
        for n in range(info["nr_cpus"]):
            insert(db, "host_cpu", host=host, number=n, utilisation=0.0, **values)
        return
    for n, ref in enumerate(existing):
        _sync(cpus, ref, {"number": n, **values})


def _control_domain(db, inventory, host, hostname, dom0, now) -> str:
    vms = db.table("VM")
    vcpus = dom0["max_vcpu_id"] + 1
    online = dom0["nr_online_vcpus"]
    memory = {"memory_static_max": dom0["max_pages"] * PAGE, "memory_dynamic_max": dom0["max_pages"] * PAGE,
              "memory_dynamic_min": dom0["tot_pages"] * PAGE, "memory_static_min": dom0["tot_pages"] * PAGE,
              "memory_target": dom0["tot_pages"] * PAGE}
    live = {"name_label": f"Control domain on host: {hostname}", "power_state": "Running",
            "resident_on": host, "affinity": host, "domid": 0, "is_control_domain": True,
            "VCPUs_max": vcpus, "VCPUs_at_startup": online, **memory}
    metrics_live = {"memory_actual": dom0["tot_pages"] * PAGE, "VCPUs_number": online,
                    "VCPUs_utilisation": {n: 0.0 for n in range(online)}, "current_domain_type": "pv",
                    "last_updated": now}
    ref = _one(db, "VM", "uuid", inventory["CONTROL_DOMAIN_UUID"])
    if ref is None:
        metrics = insert(db, "VM_metrics", start_time=now, install_time=now, **metrics_live)
        ref = insert(db, "VM", uuid=inventory["CONTROL_DOMAIN_UUID"], domain_type="pv", metrics=metrics,
                     user_version=1, actions_after_shutdown="destroy", actions_after_reboot="destroy",
                     actions_after_crash="destroy", **live)
    else:
        _sync(vms, ref, live)
        metrics = vms.get_field(ref, "metrics")
        if _valid(db, "VM_metrics", metrics):
            _sync(db.table("VM_metrics"), metrics, metrics_live)
        else:
            vms.set_field(ref, "metrics", insert(db, "VM_metrics", start_time=now, install_time=now,
                                                 **metrics_live))
    _sync(db.table("host"), host, {"control_domain": ref})
    return ref


def _dom0_consoles(db, dom0_ref, address) -> None:
    """One console per protocol, as xapi keeps for the control domain (rfb and vt100)."""
    consoles = db.table("console")
    location = f"https://{_url_host(address)}/console?ref={dom0_ref}"
    mine = consoles.find("VM", dom0_ref)
    for protocol in DOM0_CONSOLES:
        these = [c for c in mine if consoles.get_field(c, "protocol") == protocol]
        if len(these) == 1:
            _sync(consoles, these[0], {"location": location})
            continue
        for c in these:
            consoles.remove(c)
        insert(db, "console", protocol=protocol, location=location, VM=dom0_ref)


def _management_interface(db, inventory, host, address, now) -> tuple[str, str]:
    """The host's eth0 PIF (made at first boot, on xenbr0) and the management flags. As xapi's
    dbsync (Xapi_pif.update_management_flags), the inventory's MANAGEMENT_INTERFACE decides which
    bridge's PIFs are the management ones: host_mgmt writes it (another bridge after
    management_reconfigure or local_management_reconfigure, "" after management_disable: none). An
    inventory without the key (first boot, an older data folder) keeps the PIF flagged before, else
    eth0. The management PIF on eth0 carries the daemon's address; another keeps its own configuration."""
    pifs = db.table("PIF")
    mine = pifs.find("host", host)
    eth0 = next((p for p in mine if pifs.get_field(p, "device") == MANAGEMENT_DEVICE
                 and pifs.get_field(p, "VLAN") == -1), None)
    if "MANAGEMENT_INTERFACE" in inventory:
        bridge = inventory["MANAGEMENT_INTERFACE"]
    else:
        flagged = next((p for p in mine if pifs.get_field(p, "management")), None) or eth0
        bridge = _bridge_of(db, flagged) if flagged is not None else MANAGEMENT_BRIDGE
    network = pifs.get_field(eth0, "network") if eth0 is not None else None
    if not _valid(db, "network", network):
        network = _one(db, "network", "bridge", MANAGEMENT_BRIDGE)
    if network is None:
        network = insert(db, "network", name_label=f"Pool-wide network associated with {MANAGEMENT_DEVICE}",
                         name_description="", bridge=MANAGEMENT_BRIDGE, MTU=1500, managed=True,
                         other_config={})
    metrics_live = {"carrier": True, "speed": 1000, "duplex": True, "last_updated": now}
    if eth0 is None:
        metrics = insert(db, "PIF_metrics", vendor_id="8086", vendor_name="Intel Corporation",
                         device_id="100e", device_name="82540EM Gigabit Ethernet Controller",
                         pci_bus_path="0000:00:03.0", **metrics_live)
        eth0 = insert(db, "PIF", device=MANAGEMENT_DEVICE, MAC=_mac(inventory["INSTALLATION_UUID"]), MTU=1500,
                      VLAN=-1, physical=True, metrics=metrics, gateway="", DNS="", managed=True,
                      properties={"gro": "on"}, network=network, host=host, currently_attached=True,
                      management=False, **_address_fields(address))
        mine = [*mine, eth0]
    else:
        _sync(pifs, eth0, {"network": network, "host": host})
        metrics = pifs.get_field(eth0, "metrics")
        if _valid(db, "PIF_metrics", metrics):
            _sync(db.table("PIF_metrics"), metrics, metrics_live)
        else:
            pifs.set_field(eth0, "metrics", insert(db, "PIF_metrics", **metrics_live))
    # exactly the PIFs on the management bridge are management PIFs (none when it is "")
    management = None
    for pif in mine:
        on = bool(bridge) and _bridge_of(db, pif) == bridge
        if pifs.get_field(pif, "management") != on:
            pifs.set_field(pif, "management", on)
        if on and management is None:
            management = pif
    if management is not None:
        live = {"currently_attached": True}
        if management == eth0:
            live.update(_address_fields(address))
        _sync(pifs, management, live)
    return network, eth0


def _bridge_of(db, pif: str) -> str | None:
    network = db.table("PIF").get_field(pif, "network")
    return db.table("network").get_field(network, "bridge") if _valid(db, "network", network) else None


def _address_fields(address: str) -> dict:
    netmask = "255.0.0.0" if address.startswith("127.") else "255.255.255.0"
    return {"ip_configuration_mode": "Static", "IP": address, "netmask": netmask}


def _scan_nics(db, host, backend, host_uuid) -> None:
    """PIF.scan at first boot: a PIF for each NIC that has none (the management one has)."""
    from xapi.actions import host_nics, pif
    known = pif._physical_devices(db, host)
    for device, nic in host_nics.local(backend, host_uuid).items():
        if device not in known:
            pif._introduce(db, host, nic, managed=True)


def _templates(db) -> None:
    vms = db.table("VM")
    for spec in first_boot_data.TEMPLATES:
        if _one(db, "VM", "uuid", spec["uuid"]) is not None:
            continue
        if any(vms.get_field(r, "is_default_template") for r in vms.find("name_label", spec["name_label"])):
            continue
        insert(db, "VM", **first_boot_data.template_row(spec, mac_seed=new_uuid()))


def _storage_drivers(db) -> None:
    sms = db.table("SM")
    for spec in first_boot_data.SM_DRIVERS:
        row = first_boot_data.sm_row(spec)
        ref = _one(db, "SM", "type", spec["type"])
        if ref is None:
            insert(db, "SM", **row)
        else:
            _sync(sms, ref, row)


def open_hypervisor(backend: str, sim_config: str = ""):
    return xenctrl.open(backend, sim_config)

