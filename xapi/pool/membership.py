"""Joining and leaving a pool (xapi_pool.ml's join and eject, in this project's shape).

pool.join runs on the joining host: its own checks (xapi's pre-join checks and errors), a login to
the coordinator with the credentials given, the coordinator's checks (versions, external auth), then
`POST /internal/join` on the coordinator with that session, carrying its CA certificates and CRLs:
the coordinator makes those it lacks the pool's (xapi's exchange_ca_certificates_on_join), adds the
joining host's own rows (host, metrics, CPUs, control domain, PIFs, local SRs with their PBDs and
VDIs, certificate) with their refs unchanged, its PIFs on the pool network of the same bridge, copies
the coordinator's bonds, VLANs and tunnels onto its NICs (xapi.pool.network_sync), and answers the
pool secret and the pool's CA certificates and CRLs. The joining host keeps them (its trust folders
become the pool's), records the coordinator in pool.conf, answers HOST_IS_SLAVE from then on and
replaces its database with a replica of the coordinator's.

pool.eject runs on the coordinator: xapi's checks, then the member resets itself to a fresh
standalone pool (new pool, new secret, no pool CA certificates or CRLs, its host uuid kept) and its
rows leave the pool database.
"""
from __future__ import annotations

import asyncio
import logging
import os

import orjson

from xapi import atomic, startup
from xapi.datamodel.errors import XapiError
from xapi.db.schema import NULL_REF, insert
from xapi.pool import certificates as trust, network_sync, replica, role as pool_role, secret
from xapi.pool.internal import method
from xapi.pool.remote import Remote
from xapi.server.handlers import HttpError

log = logging.getLogger("xapi.pool.membership")

JOIN_PATH = "/internal/join"


# -- the joining host's own rows --------------------------------------------------------------
def own_rows(db, host: str) -> dict[str, list[str]]:
    """table -> refs of the rows that describe `host` itself and go with it into a pool."""
    out: dict[str, list[str]] = {}

    def add(table, refs):
        refs = [r for r in refs if r and r != NULL_REF and r in db.table(table)]
        if refs:
            out.setdefault(table, [])
            out[table] += [r for r in refs if r not in out[table]]

    hosts = db.table("host")
    add("host", [host])
    add("host_metrics", [hosts.get_field(host, "metrics")])
    add("host_cpu", db.table("host_cpu").find("host", host))
    add("Certificate", db.table("Certificate").find("host", host))
    vms = db.table("VM")
    dom0s = [v for v in vms.find("resident_on", host) if vms.get_field(v, "is_control_domain")]
    add("VM", dom0s)
    add("VM_metrics", [vms.get_field(v, "metrics") for v in dom0s])
    add("console", [c for v in dom0s for c in db.table("console").find("VM", v)])
    pifs = db.table("PIF").find("host", host)
    add("PIF", pifs)
    add("PIF_metrics", [db.table("PIF").get_field(p, "metrics") for p in pifs])
    add("network", [db.table("PIF").get_field(p, "network") for p in pifs])
    pbds = db.table("PBD").find("host", host)
    add("PBD", pbds)
    srs = [db.table("PBD").get_field(p, "SR") for p in pbds]
    srs = [s for s in srs if s in db.table("SR") and not db.table("SR").get_field(s, "shared")]
    add("SR", srs)
    add("VDI", [v for s in srs for v in db.table("VDI").find("SR", s)])
    return out


def _export(db, host: str) -> dict:
    return {t: {ref: replica._encode(t, db.table(t).get(ref)) for ref in refs}
            for t, refs in own_rows(db, host).items()}


# -- pool.join (on the joining host) ------------------------------------------------------------
def _management_pif(db, host: str):
    pifs = db.table("PIF")
    return next((p for p in pifs.find("host", host) if pifs.get_field(p, "management")), None)


def _local_checks(app) -> None:
    db = app.db
    if _management_pif(db, app.host_ref) is None:
        raise XapiError("HOST_STILL_BOOTING")   # no management interface yet
    if len(db.table("host")) > 1:
        raise XapiError("JOINING_HOST_CANNOT_BE_MASTER_OF_OTHER_HOSTS")
    srs = db.table("SR")
    if any(srs.get_field(s, "shared") and srs.get_field(s, "content_type") != "iso" for s in srs.refs()):
        raise XapiError("JOINING_HOST_CANNOT_CONTAIN_SHARED_SRS")
    vms = db.table("VM")
    for v, row in vms.all_records().items():
        if row["is_control_domain"]:
            continue
        if row["power_state"] == "Running":
            raise XapiError("JOINING_HOST_CANNOT_HAVE_RUNNING_VMS")
        if row["current_operations"]:
            raise XapiError("JOINING_HOST_CANNOT_HAVE_VMS_WITH_CURRENT_OPERATIONS")
    _network_checks(db)


def _network_checks(db) -> None:
    """The joining host brings no bonds, tunnels or VLANs but a management one (it gets the pool's
    own through xapi.pool.network_sync once it is in)."""
    if len(db.table("Bond")):
        raise XapiError("POOL_JOINING_HOST_HAS_BONDS")
    if len(db.table("tunnel")):
        raise XapiError("POOL_JOINING_HOST_HAS_TUNNELS")
    pifs = db.table("PIF")
    for row in db.table("VLAN").all_records().values():
        untagged = row["untagged_PIF"]
        if untagged not in pifs or not pifs.get_field(untagged, "management"):
            raise XapiError("POOL_JOINING_HOST_HAS_NON_MANAGEMENT_VLANS")


def _same(a, b, field: str) -> bool:
    return (a.get("software_version") or {}).get(field) == (b.get("software_version") or {}).get(field)


def _remote_checks(app, me: dict, master: dict, force: bool, master_management: dict) -> None:
    """xapi's pre-join checks against the coordinator, in its order; `master_management` is the record
    of the coordinator's management PIF."""
    mine = app.db.table("PIF").get(_management_pif(app.db, app.host_ref))
    if str(mine["VLAN"]) != str(master_management["VLAN"]):
        raise XapiError("POOL_JOINING_HOST_MANAGEMENT_VLAN_DOES_NOT_MATCH", str(mine["VLAN"]),
                        str(master_management["VLAN"]))
    if (me.get("external_auth_type"), me.get("external_auth_service_name")) != \
            (master.get("external_auth_type"), master.get("external_auth_service_name")):
        raise XapiError("POOL_JOINING_EXTERNAL_AUTH_MISMATCH")
    # a host without the key runs the bridge backend, as xapi reads it
    backends = [(h.get("software_version") or {}).get("network_backend", "bridge") for h in (me, master)]
    if backends[0] != backends[1]:
        raise XapiError("OPERATION_NOT_ALLOWED", "Network backends differ")
    if mine["primary_address_type"] != master_management["primary_address_type"]:
        raise XapiError("OPERATION_NOT_ALLOWED", "Primary address type differs")
    if force:
        return
    if (str(me["API_version_major"]), str(me["API_version_minor"])) != \
            (str(master["API_version_major"]), str(master["API_version_minor"])):
        raise XapiError("POOL_JOINING_HOST_MUST_HAVE_SAME_API_VERSION",
                        f"{me['API_version_major']}.{me['API_version_minor']}",
                        f"{master['API_version_major']}.{master['API_version_minor']}")
    if not _same(me, master, "product_version"):
        raise XapiError("POOL_JOINING_HOST_MUST_HAVE_SAME_PRODUCT_VERSION")
    if not _same(me, master, "db_schema"):
        raise XapiError("POOL_JOINING_HOST_MUST_HAVE_SAME_DB_SCHEMA")


async def join(app, master_address: str, user: str, password: str, force: bool = False) -> None:
    if not isinstance(master_address, str) or not master_address:
        raise XapiError("INVALID_VALUE", "master_address", str(master_address))
    _local_checks(app)
    if master_address in (app.own_address, "localhost"):
        raise XapiError("OPERATION_NOT_ALLOWED", "Host cannot join a pool it is the coordinator of")
    remote = Remote(master_address, app.config.https_port)
    try:
        session = await remote.call("session.login_with_password", user, password, "1.0", "xapi-pool-join")
        try:
            pools = await remote.call("pool.get_all", session)
            master = await remote.call("pool.get_master", session, pools[0])
            master_rec = await remote.call("host.get_record", session, master)
            master_management = await remote.call("PIF.get_record", session,
                                                   await remote.call("host.get_management_interface",
                                                                     session, master))
            me = app.db.table("host").get(app.host_ref)
            _remote_checks(app, me, master_rec, force, master_management)
            offered = await asyncio.to_thread(trust.local_export, app)    # its CA certificates and CRLs
            body = orjson.dumps({"rows": _export(app.db, app.host_ref), "host": app.host_ref,
                                 "trust": offered})
            status, data = await remote.request("POST", f"{JOIN_PATH}?session_id={session}", body)
            reply = orjson.loads(data) if status == 200 else {"error": ["JOINING_HOST_SERVICE_FAILED"]}
            if "error" in reply:
                raise XapiError(*reply["error"])
        finally:
            try:
                await remote.call("session.logout", session)
            except XapiError:
                pass
    finally:
        remote.close()
    # Now a member: keep the pool secret and its trust, record the coordinator, follow its database.
    if "trust" in reply:
        await asyncio.to_thread(trust.local_take, app, reply["trust"])
    secret.store(app.config.data_dir, reply["secret"])
    app.pool_secret = reply["secret"]
    role = pool_role.Role(False, master_address, remote.fingerprint)
    pool_role.write(app.config.data_dir, role)
    app.role = role
    if app.redo is not None:
        app.redo.end()                          # the log of its own pool ends with it
    from xapi import pool as pool_setup
    pool_setup.become_member_in_memory(app, role)
    app.pool_ref = reply["pool"]
    pool_setup.start_replica(app)
    app.replica.plugging = asyncio.get_running_loop().create_task(plug_own_pbds(app))
    log.info("joined the pool of %s as host %s", master_address, app.host_ref)


async def plug_own_pbds(app, timeout: float = 30.0) -> None:
    """A new member's PBDs (its share of the pool's shared SRs) plugged through the coordinator, as
    at a member's start (xapi.pool.member_start.plug_all), once the replica is in step."""
    from xapi.pool import member_start
    try:
        await asyncio.wait_for(app.replica.synced.wait(), timeout)
    except asyncio.TimeoutError:
        log.warning("replica not in step after %ss: the PBDs stay unplugged", timeout)
        return
    await member_start.plug_all(app)


# -- the coordinator's side of a join --------------------------------------------------------------
async def _admit(request, response) -> None:
    app = request.app
    session = await request.authenticate()
    if not (session.superuser or "pool.join" in session.permissions):
        raise HttpError(403, error=["RBAC_PERMISSION_DENIED", "pool.join", "no permission"])
    parts = []
    async for chunk in request.body():
        parts.append(chunk)
    try:
        if not app.is_coordinator:
            raise XapiError("HOST_IS_SLAVE", app.coordinator_address)
        payload = orjson.loads(b"".join(parts))
        from xapi.actions.certificates import exchange_on_join
        pool_trust = await exchange_on_join(app, payload.get("trust") or {})
        admit(app, payload["rows"])
        reply = {"secret": app.pool_secret, "pool": app.pool_ref, "coordinator": app.host_ref,
                 "trust": pool_trust}
    except XapiError as e:
        reply = {"error": [str(x) for x in e.description]}
    except (KeyError, TypeError, ValueError) as e:
        reply = {"error": ["INTERNAL_ERROR", f"bad join request: {e}"]}
    data = orjson.dumps(reply)
    response.start(200, [("Content-Type", "application/json")], length=len(data))
    await response.end(data)
    app.hub.poke()


def admit(app, rows: dict) -> None:
    db = app.db
    hosts = db.table("host")
    new_host = next(iter(rows.get("host", {})), None)
    if new_host is None:
        raise XapiError("INTERNAL_ERROR", "join request without a host")
    row = rows["host"][new_host]
    for h in hosts.refs():
        if h == new_host or hosts.get_field(h, "uuid") == row.get("uuid"):
            raise XapiError("OPERATION_NOT_ALLOWED", "host is already a member of this pool")
        if hosts.get_field(h, "address") == row.get("address"):
            raise XapiError("OPERATION_NOT_ALLOWED", f"a host of this pool has address {row.get('address')}")
    # the joining host's networks become the pool's networks of the same bridge
    networks = db.table("network")
    renamed: dict[str, str] = {}
    for ref, net in list(rows.get("network", {}).items()):
        same = [n for n in networks.refs() if networks.get_field(n, "bridge") == net.get("bridge")]
        if same:
            renamed[ref] = same[0]
            del rows["network"][ref]
    for ref, pif in rows.get("PIF", {}).items():
        pif["network"] = renamed.get(pif.get("network"), pif.get("network"))
    order = ["network", "host_metrics", "host", "host_cpu", "Certificate", "VM_metrics", "VM", "console",
             "PIF_metrics", "PIF", "SR", "PBD", "VDI"]
    for table in order + [t for t in rows if t not in order]:
        for ref, encoded in rows.get(table, {}).items():
            t = db.table(table)
            if ref in t:
                continue
            t.add(ref, replica._decode(table, encoded))
    # a PBD on each shared SR of the pool, configured as the others (xapi: create_storage)
    pbds, srs = db.table("PBD"), db.table("SR")
    for sr in srs.refs():
        if not srs.get_field(sr, "shared"):
            continue
        existing = pbds.find("SR", sr)
        if not existing or any(pbds.get_field(p, "host") == new_host for p in existing):
            continue
        config = {k: v for k, v in pbds.get_field(existing[0], "device_config").items() if k != "SRmaster"}
        insert(db, "PBD", host=new_host, SR=sr, device_config=config, other_config={}, currently_attached=False)
    network_sync.copy_from_coordinator(app, new_host)      # the pool's bonds, VLANs and tunnels on its NICs
    log.info("host %s (%s) joined the pool", new_host, row.get("address"))


# -- pool.eject (on the coordinator) ---------------------------------------------------------------
async def eject(app, host) -> None:
    db = app.db
    hosts = db.table("host")
    if type(host) is not str or host not in hosts:
        raise XapiError("HANDLE_INVALID", "host", host)
    pools = db.table("pool")
    if any(pools.get_field(p, "ha_enabled") for p in pools.refs()):
        raise XapiError("HA_IS_ENABLED")
    if host == app.host_ref:
        raise XapiError("OPERATION_NOT_ALLOWED", "Cannot eject the pool coordinator")
    vms = db.table("VM")
    for v in vms.find("resident_on", host):
        if not vms.get_field(v, "is_control_domain") and vms.get_field(v, "power_state") != "Halted":
            raise XapiError("OPERATION_NOT_ALLOWED", "VM resident on host")
    await app.pool.call(host, "pool.reset_standalone")
    forget_host(app, host)


async def destroy_host(app, host) -> None:
    """host.destroy: the record of a host that is gone for good (xapi_host.ml destroy's checks)."""
    db = app.db
    if type(host) is not str or host not in db.table("host"):
        raise XapiError("HANDLE_INVALID", "host", host)
    try:
        await app.pool.call(host, "host.ping", timeout=3.0)
        alive = True
    except (XapiError, TimeoutError):
        alive = False
    if alive:
        raise XapiError("HOST_IS_LIVE", host)
    if host == app.host_ref:
        raise XapiError("HOST_CANNOT_DESTROY_SELF", host)
    pools = db.table("pool")
    if any(pools.get_field(p, "ha_enabled") for p in pools.refs()):
        raise XapiError("HA_IS_ENABLED")
    vms = db.table("VM")
    if any(not vms.get_field(v, "is_control_domain") for v in vms.find("resident_on", host)):
        raise XapiError("HOST_HAS_RESIDENT_VMS", host)
    forget_host(app, host)


def forget_host(app, host: str) -> None:
    """Removes a host that left the pool, with what was its own; its halted VMs stay, not resident."""
    db = app.db
    owned = own_rows(db, host)
    for v in db.table("VM").find("resident_on", host):
        if v not in owned.get("VM", ()):
            db.table("VM").set_field(v, "resident_on", NULL_REF)
    for table in reversed(["host_metrics", "host", "host_cpu", "Certificate", "VM_metrics", "VM", "console",
                           "PIF_metrics", "PIF", "SR", "PBD", "VDI"]):
        t = db.table(table)
        for ref in owned.get(table, ()):
            if ref in t:
                t.remove(ref)
    app.hub.poke()
    log.info("host %s left the pool", host)


@method("pool.reset_standalone")
async def reset_standalone(app) -> str:
    """On an ejected member: a fresh standalone pool of its own (xapi: the host comes back as the
    coordinator of a new pool); the host keeps its uuid, its certificate and its running daemon."""
    from xapi import pool as pool_setup
    from xapi.actions import host as host_actions
    from xapi.auth.roles import ensure_roles
    data_dir = app.config.data_dir
    if getattr(app, "replica", None) is not None:
        await app.replica.stop()
        app.replica = None
    app.pool_secret = secret.new()
    secret.store(data_dir, app.pool_secret)
    await asyncio.to_thread(trust.local_forget, app)      # the pool's CA certificates and CRLs go
    app.role = pool_role.Role()
    pool_role.write(data_dir, app.role)
    inventory = startup.read_inventory(data_dir)
    inventory.pop("POOL_UUID", None)
    atomic.write_file(os.path.join(data_dir, "inventory"),
                      "".join(f"{k}='{v}'\n" for k, v in sorted(inventory.items())).encode(), 0o644)
    inventory = startup.read_inventory(data_dir)
    db = app.db
    for table in replica.replicated_tables(db):
        t = db.table(table)
        for ref in t.refs():
            t.remove(ref)
    address = app.own_address
    app.pool_ref, app.host_ref = startup.populate(db, inventory, app.hypervisor, address,
                                                  app.config.backend, data_dir)
    app.sessions.host_ref = app.host_ref
    ensure_roles(db)
    host_actions.sync_certificate(app)
    app.is_coordinator = True
    app.coordinator_address = address
    app.hub.poke()
    if app.redo is not None:
        app.redo.end()
        await app.redo.begin()                  # its new pool's own log
    pool_setup.log.info("ejected: now the coordinator of a new pool")
    return app.host_ref


def register(routes) -> None:
    routes.add("POST", JOIN_PATH, _admit, auth=False)
