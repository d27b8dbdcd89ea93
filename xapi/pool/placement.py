"""Where a VM may run and where it goes (xapi_vm_helpers.ml: assert_can_boot_here, possible_hosts,
choose_host_for_vm).

`assert_can_boot_here(app, vm, host)` raises in xapi's order: HOST_NOT_LIVE, HOST_DISABLED [host]
(not for the control domain, nor a VM already running there), VM_REQUIRES_SR [vm, sr] (a disk's SR
without a plugged PBD on the host), VM_REQUIRES_NETWORK [vm, network] (a VIF's network without a PIF
on the host; a PIF-less network is pinned to the host its running VMs are on),
HOST_NOT_ENOUGH_FREE_MEMORY [needed, available], HOST_NOT_ENOUGH_PCPUS [vcpus, pcpus].

Free memory is what the host's xenopsd last reported (host_metrics.memory_free, refreshed after
every operation on the host) minus the memory reserved for operations still building domains there
(`reserve`): the check and the reservation happen without a pause in between, so hundreds of
concurrent starts cannot all pick the same host's last free gigabyte.

`choose(app, vm)`: the affinity host when the VM can boot there, else the possible host with the most
free memory (spreading the load); none: NO_HOSTS_AVAILABLE, unless some host would do but for its
memory, whose HOST_NOT_ENOUGH_FREE_MEMORY is raised (xapi retries without the memory check and then
fails the start on that host's memory).
"""
from __future__ import annotations

import contextlib

from xapi.datamodel.errors import XapiError
from xapi.db.schema import NULL_REF


def _reserved(app) -> dict:
    r = getattr(app, "placement_reserved", None)
    if r is None:
        r = app.placement_reserved = {}
    return r


def vm_memory(rec: dict) -> int:
    """What a domain of this VM takes: our xenopsd builds it at memory_static_max."""
    return int(rec["memory_static_max"])


def free_memory(app, host: str) -> int:
    hm = app.db.table("host").get_field(host, "metrics")
    t = app.db.table("host_metrics")
    free = int(t.get_field(hm, "memory_free")) if hm in t else 0
    return free - _reserved(app).get(host, 0)


@contextlib.contextmanager
def reserve(app, host: str, amount: int):
    """Holds `amount` bytes of the host's free memory for an operation building a domain there."""
    r = _reserved(app)
    r[host] = r.get(host, 0) + amount
    try:
        yield
    finally:
        left = r.get(host, 0) - amount
        if left > 0:
            r[host] = left
        else:
            r.pop(host, None)


def _check_host_ref(app, host) -> dict:
    hosts = app.db.table("host")
    if type(host) is not str or host not in hosts:
        raise XapiError("HANDLE_INVALID", "host", host)
    return hosts.get(host)


def host_live(app, host: str) -> bool:
    hm = app.db.table("host").get_field(host, "metrics")
    t = app.db.table("host_metrics")
    return hm in t and bool(t.get_field(hm, "live"))


def required_srs(db, rec: dict) -> list[str]:
    vbds, vdis = db.table("VBD"), db.table("VDI")
    srs = []
    for vbd in rec.get("VBDs") or []:
        if vbd not in vbds or vbds.get_field(vbd, "empty"):
            continue
        vdi = vbds.get_field(vbd, "VDI")
        if vdi in vdis:
            srs.append(vdis.get_field(vdi, "SR"))
    if rec.get("power_state") == "Suspended" and rec.get("suspend_VDI") in vdis:
        srs.append(vdis.get_field(rec["suspend_VDI"], "SR"))
    return srs


def sr_available(db, sr: str, host: str) -> bool:
    pbds = db.table("PBD")
    return any(pbds.get_field(p, "host") == host and pbds.get_field(p, "currently_attached")
               for p in db.table("SR").get_field(sr, "PBDs") or [] if p in pbds)


def _network_available(db, vm: str, net: str, host: str) -> bool:
    networks, pifs = db.table("network"), db.table("PIF")
    if net not in networks:
        return True
    attached = [p for p in networks.get_field(net, "PIFs") or [] if p in pifs]
    if attached:
        return any(pifs.get_field(p, "host") == host for p in attached)
    # a host-internal network: the host where its other running VMs are
    vifs, vms = db.table("VIF"), db.table("VM")
    for vif in networks.get_field(net, "VIFs") or []:
        other = vifs.get_field(vif, "VM") if vif in vifs else NULL_REF
        if other != vm and other in vms and vms.get_field(other, "power_state") in ("Running", "Paused"):
            where = vms.get_field(other, "resident_on")
            if where not in (NULL_REF, host):
                return False
    return True


def assert_can_boot_here(app, vm: str, rec: dict, host: str, *, memory: bool = True) -> None:
    db = app.db
    hrec = _check_host_ref(app, host)
    if not host_live(app, host):
        raise XapiError("HOST_NOT_LIVE")
    local_live_migration = rec["power_state"] == "Running" and rec["resident_on"] == host
    if not rec.get("is_control_domain") and not local_live_migration and not hrec["enabled"]:
        raise XapiError("HOST_DISABLED", host)
    for sr in required_srs(db, rec):
        if not sr_available(db, sr, host):
            raise XapiError("VM_REQUIRES_SR", vm, sr)
    vifs = db.table("VIF")
    for vif in rec.get("VIFs") or []:
        if vif in vifs:
            net = vifs.get_field(vif, "network")
            if not _network_available(db, vm, net, host):
                raise XapiError("VM_REQUIRES_NETWORK", vm, net)
    if memory and not local_live_migration:
        need, free = vm_memory(rec), free_memory(app, host)
        if need > free:
            raise XapiError("HOST_NOT_ENOUGH_FREE_MEMORY", str(need), str(free))
    pcpus = len(hrec.get("host_CPUs") or []) or int((hrec.get("cpu_info") or {}).get("cpu_count", 0) or 0)
    if pcpus and int(rec["VCPUs_max"]) > pcpus \
            and (rec.get("platform") or {}).get("vcpu-unrestricted") != "true":
        raise XapiError("HOST_NOT_ENOUGH_PCPUS", str(rec["VCPUs_max"]), str(pcpus))


def _can(app, vm, rec, host, memory=True) -> bool:
    try:
        assert_can_boot_here(app, vm, rec, host, memory=memory)
    except XapiError:
        return False
    return True


def _evacuating(app, host: str) -> bool:
    return "evacuate" in (app.db.table("host").get_field(host, "current_operations") or {}).values()


def possible_hosts(app, vm: str, rec: dict) -> list[str]:
    """Every host the VM could boot on now (VM.get_possible_hosts)."""
    return [h for h in app.db.table("host").refs() if _can(app, vm, rec, h)]


def choose(app, vm: str, rec: dict, exclude=()) -> str:
    """A host for the VM (see the module doc). Synchronous: call `reserve` before the next await."""
    hosts = [h for h in app.db.table("host").refs() if h not in exclude and not _evacuating(app, h)]
    affinity = rec.get("affinity")
    if affinity in hosts and _can(app, vm, rec, affinity):
        return affinity
    good = [h for h in hosts if _can(app, vm, rec, h)]
    if good:
        return max(good, key=lambda h: (free_memory(app, h), h == app.host_ref))
    near = [h for h in hosts if _can(app, vm, rec, h, memory=False)]
    if not near:
        raise XapiError("NO_HOSTS_AVAILABLE")
    best = max(near, key=lambda h: free_memory(app, h))
    raise XapiError("HOST_NOT_ENOUGH_FREE_MEMORY", str(vm_memory(rec)), str(free_memory(app, best)))
