"""What a host puts in the database when it starts: the pool, itself, its CPUs and metrics, and the
control domain, all read from the hypervisor backend."""
from __future__ import annotations

import os
import socket
import uuid as _uuid

from xapi import __version__, datamodel as dm, xenctrl
from xapi.datamodel.types import datetime_now
from xapi.db.schema import insert

PAGE = 4096


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
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(f"{k}='{v}'\n" for k, v in sorted(inv.items()))
        os.rename(tmp, path)
    return inv


def populate(db, inventory: dict[str, str], hv, address: str) -> tuple[str, str]:
    """Creates this host's rows; returns (pool ref, host ref)."""
    info = hv.physinfo()
    domains = hv.domain_list()
    dom0 = next(d for d in domains if d["domid"] == 0)
    hostname = socket.gethostname()
    now = datetime_now()
    total = info["total_pages"] * PAGE
    free = info["free_pages"] * PAGE

    host_metrics = insert(db, "host_metrics", memory_total=total, memory_free=free, live=True,
                          last_updated=now)
    dom0_metrics = insert(db, "VM_metrics", memory_actual=dom0["tot_pages"] * PAGE,
                          VCPUs_number=dom0["nr_online_vcpus"], start_time=now, install_time=now,
                          last_updated=now, current_domain_type="pv")
    host = insert(
        db, "host", uuid=inventory["INSTALLATION_UUID"], name_label=hostname, hostname=hostname,
        address=address, enabled=True, API_version_major=dm.API_VERSION_MAJOR,
        API_version_minor=dm.API_VERSION_MINOR, API_version_vendor="XenSource",
        software_version={"product_brand": "pyxapi", "product_version": __version__,
                          "platform_version": "3.4.0", "xapi": __version__, "xen": "4.17.0",
                          "build_number": __version__, "hostname": hostname,
                          "db_schema": "5.602"},
        cpu_info={"cpu_count": str(info["nr_cpus"]), "socket_count": str(max(1, info["nr_nodes"])),
                  "speed": f"{info['cpu_khz'] / 1000:.3f}", "vendor": "GenuineIntel",
                  "modelname": "Simulated CPU"},
        capabilities=["xen-3.0-x86_64", "hvm-3.0-x86_32", "hvm-3.0-x86_64"], sched_policy="credit",
        metrics=host_metrics, memory_overhead=0, edition="xcp-ng",
    )
    cpus = [insert(db, "host_cpu", host=host, number=n, vendor="GenuineIntel",
                   speed=info["cpu_khz"] // 1000, modelname="Simulated CPU", utilisation=0.0)
            for n in range(info["nr_cpus"])]
    dom0_ref = insert(
        db, "VM", uuid=inventory["CONTROL_DOMAIN_UUID"], name_label=f"Control domain on host: {hostname}",
        power_state="Running", is_control_domain=True, resident_on=host, domid=0, domain_type="pv",
        memory_static_max=dom0["max_pages"] * PAGE, memory_dynamic_max=dom0["max_pages"] * PAGE,
        memory_dynamic_min=dom0["tot_pages"] * PAGE, memory_static_min=dom0["tot_pages"] * PAGE,
        memory_target=dom0["tot_pages"] * PAGE, VCPUs_max=dom0["max_vcpu_id"] + 1,
        VCPUs_at_startup=dom0["nr_online_vcpus"], metrics=dom0_metrics, user_version=1,
        actions_after_shutdown="destroy", actions_after_reboot="restart", actions_after_crash="restart",
    )
    hosts = db.table("host")
    hosts.update(host, {"resident_VMs": [dom0_ref], "control_domain": dom0_ref, "host_CPUs": cpus})
    pool = insert(db, "pool", uuid=inventory["POOL_UUID"], master=host, name_label="")
    return pool, host


def open_hypervisor(backend: str, sim_config: str = ""):
    return xenctrl.open(backend, sim_config)
