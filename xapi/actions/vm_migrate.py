"""Live migration between hosts: the receiving `PUT /migrate` handler, and VM.pool_migrate.

`PUT /migrate?vm=<uuid>` (from a pool host: the pool secret in X-Pool-Secret over TLS; else
authenticated as xapi's handlers are, RBAC action `http/put_services_xenops`, which xapi uses for
xenopsd's memory transfer): the body is the VM's
memory image (xapi.xenops.image) sent by the source xenopsd's VM.migrate_send. It is read whole
(bounded by the largest image there can be) and handed to this host's xenopsd VM.receive, which
checks it and builds the domain (same uuid, running or paused as it was); the VM must have been
given to this xenopsd with VM.add first. The answer is 200 once the domain runs, else 500 with
the error as a JSON list [code, params...] (the source xenopsd raises it and keeps its VM).

`VM.pool_migrate(vm, host, options)` on the coordinator (xapi_vm_migrate.ml pool_migrate): the VM
must be Running (VM_BAD_POWER_STATE) and able to boot on the host (xapi.pool.placement:
HOST_DISABLED, VM_REQUIRES_SR, VM_REQUIRES_NETWORK, HOST_NOT_ENOUGH_FREE_MEMORY...), whose memory is
reserved and which is the VM's scheduled_to_be_resident_on meanwhile. The destination's xenopsd gets
the VM (VM.add), the source's streams it there (VM.migrate_send to the destination's /migrate, with
the pool secret and the destination's pinned certificate) with progress on the task and cancel
passed through; resident_on changes only once the destination runs it (as xapi, late), and the
source's xenopsd forgets it. The disks are attached by the destination's storage before the memory
moves, released by the storage that held them after, then activated on the destination
(xapi.actions.vm_devices). A failed or cancelled migration leaves the VM running on the source;
transfer failures are VM_MIGRATE_FAILED [vm, source, destination, message]. To the host it runs on,
it is a localhost migration: that xenopsd's VM.migrate_local builds a new domain from the image.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import logging

import orjson

from xapi.datamodel.errors import XapiError
from xapi.db.schema import NULL_REF
from xapi.server.handlers import HttpError
from xapi.xenops import image
from xapi.xenops.server import XenopsError

log = logging.getLogger("xapi.migrate")

MAX_IMAGE = image.HEADER_SIZE + 4 + image.MAX_STATE + image.MAX_PAGES


def register(routes) -> None:
    routes.add("PUT", "/migrate", receive, action="put_services_xenops", auth=False)


SECRET_HEADER = "x-pool-secret"


async def _authenticate(request) -> None:
    """A pool host with the pool secret (over TLS only), else a session or credentials as usual."""
    given = request.headers.get(SECRET_HEADER)
    if given is not None:
        from xapi.pool import secret
        transport = request._exchange.proto.transport
        tls = transport is not None and transport.get_extra_info("ssl_object") is not None
        if not tls or not secret.matches(getattr(request.app, "pool_secret", ""), given):
            raise HttpError(403, "bad pool secret", close=True)
        return
    await request.authenticate()


async def _fail(response, error: list, status: int = 500) -> None:
    body = orjson.dumps([str(x) for x in error])
    response.start(status, [("Content-Type", "application/json")], length=len(body))
    await response.end(body)


async def receive(request, response) -> None:
    await _authenticate(request)
    vm_uuid = request.query.get("vm")
    if not vm_uuid:
        raise HttpError(400, "the request names no VM: vm=<uuid> is needed", close=True,
                        error=["INTERNAL_ERROR", "Missing vm query parameter"])
    if request.content_length is not None and request.content_length > MAX_IMAGE:
        raise HttpError(413, close=True, error=["INTERNAL_ERROR", "memory image too large"])
    data = bytearray()
    async for chunk in request.body():
        data += chunk
        if len(data) > MAX_IMAGE:
            raise HttpError(413, close=True, error=["INTERNAL_ERROR", "memory image too large"])
    try:
        await request.app.xenops.run("VM.receive", vm_uuid, base64.b64encode(data).decode(),
                                     on_progress=request.progress)
    except XenopsError as e:
        request.fail_task(e.description)
        log.info("migration of %s refused: %s", vm_uuid, e.description)
        await _fail(response, e.description)
        return
    response.start(200, [("Content-Type", "text/plain")], length=0)
    await response.end()


# -- VM.pool_migrate ------------------------------------------------------------------------------------
def _migrate_error(e: XenopsError, vm: str, source: str, dest: str, task_ref) -> XapiError:
    if e.code == "TASK_CANCELLED":
        return XapiError("TASK_CANCELLED", task_ref or (e.params[0] if e.params else ""))
    if e.code in ("VM_MIGRATE_FAILED", "INTERNAL_ERROR"):
        return XapiError("VM_MIGRATE_FAILED", vm, source, dest, e.params[-1] if e.params else e.code)
    return XapiError(e.code, *e.params)


async def _move_disks(app, vm: str, host: str) -> None:
    from xapi.actions import vm_devices
    try:
        await vm_devices.migrate_commit(app, vm, host)
    except XapiError as e:          # the domain runs there already: reported, not undone
        log.error("VM %s: moving its disks to host %s after migration failed: %s", vm, host, e.description)


async def pool_migrate(ctx, session, vm, host, options=None):
    from xapi.actions import vm as vm_actions, vm_devices
    from xapi.pool import placement
    app = ctx.app
    db = app.db
    vm_actions._rec(db, vm)
    if type(host) is not str or host not in db.table("host"):
        raise XapiError("HANDLE_INVALID", "host", host)
    task_ref = vm_actions._current_task(app)

    async def body(rec, progress):
        source = vm_actions.home(app, rec)
        placement.assert_can_boot_here(app, vm, rec, host)
        vms = db.table("VM")
        if host == source:              # localhost migration: a new domain on the same host
            try:
                await vm_actions.xenops_of(app, host).run("VM.migrate_local", rec["uuid"], on_progress=progress)
            except XenopsError as e:
                raise _migrate_error(e, vm, source, host, task_ref) from None
            await vm_actions.sync(app, vm, host)
            return
        src, dst = vm_actions.xenops_of(app, source), vm_actions.xenops_of(app, host)
        uuid = rec["uuid"]
        port = app.config.https_port
        address = db.table("host").get_field(host, "address")
        url = f"https://{address}:{port}/migrate?vm={uuid}"
        send_options = {"headers": {"X-Pool-Secret": app.pool_secret},
                        "fingerprint": app.pool.host_fingerprint(host)}
        with placement.reserve(app, host, placement.vm_memory(rec)):
            vms.set_field(vm, "scheduled_to_be_resident_on", host)
            try:
                # the disks: attached on the destination before the memory moves, deactivated and
                # detached on the source once it has, then activated on the destination (as xapi)
                moving = await vm_devices.migrate_prepare(app, vm, host)
                try:
                    await dst.call("VM.add", {**vm_actions._config(rec), "vifs": vm_devices.vif_devices(db, vm)})
                    try:
                        await src.run("VM.migrate_send", uuid, url, send_options, on_progress=progress)
                    except BaseException:
                        with contextlib.suppress(Exception):
                            await asyncio.shield(dst.call("VM.remove", uuid))
                        raise
                except BaseException:
                    if moving:
                        await asyncio.shield(vm_devices.release_disks(app, vm, host, here=False))
                    raise
                if moving:
                    await asyncio.shield(_move_disks(app, vm, host))
                vms.set_field(vm, "resident_on", host)  # late, as xapi: the domain runs there now
                await vm_actions.sync(app, vm, host)
            except XenopsError as e:
                raise _migrate_error(e, vm, source, host, task_ref) from None
            finally:
                if vm in vms:
                    vms.set_field(vm, "scheduled_to_be_resident_on", NULL_REF)
        with contextlib.suppress(Exception):
            await src.call("VM.remove", uuid)           # the source's xenopsd forgets it
        with contextlib.suppress(Exception):
            await vm_actions.sync_host_memory(app, source)
    await vm_actions._operation(ctx, vm, "pool_migrate", body)
    return ""
