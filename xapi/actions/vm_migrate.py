"""Live migration between hosts: the receiving `PUT /migrate` handler, and VM.pool_migrate.

`PUT /migrate?vm=<uuid>` (authenticated as xapi's handlers are, RBAC action
`http/put_services_xenops`, which xapi uses for xenopsd's memory transfer): the body is the VM's
memory image (xapi.xenops.image) sent by the source xenopsd's VM.migrate_send. It is read whole
(bounded by the largest image there can be) and handed to this host's xenopsd VM.receive, which
checks it and builds the domain (same uuid, running or paused as it was); the VM must have been
given to this xenopsd with VM.add first. The answer is 200 once the domain runs, else 500 with
the error as a JSON list [code, params...] (the source xenopsd raises it and keeps its VM).
"""
from __future__ import annotations

import base64
import logging

import orjson

from xapi.server.handlers import HttpError
from xapi.xenops import image
from xapi.xenops.server import XenopsError

log = logging.getLogger("xapi.migrate")

MAX_IMAGE = image.HEADER_SIZE + 4 + image.MAX_STATE + image.MAX_PAGES


def register(routes) -> None:
    routes.add("PUT", "/migrate", receive, action="put_services_xenops")


async def _fail(response, error: list, status: int = 500) -> None:
    body = orjson.dumps([str(x) for x in error])
    response.start(status, [("Content-Type", "application/json")], length=len(body))
    await response.end(body)


async def receive(request, response) -> None:
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
