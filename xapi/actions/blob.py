"""Binary blobs: blob.create/destroy, <class>.create_new_blob for the five classes that hold blobs, and
the /blob HTTP handler.

As xapi (xapi_blob.ml): a new blob has an empty name (the object's `blobs` map names it), size 0,
last_updated never and mime_type application/octet-stream when none is given; its bytes live in a
file named by its uuid (here <data>/blobs/<uuid>). `GET /blob?ref=|uuid=` answers them with the
blob's MIME type, without a session when the blob is public; `PUT /blob?ref=|uuid=` replaces them
(http/put_blob permission), then sets size and last_updated. A request naming no blob is a 400, an
unknown blob a 404. Unlike xapi, a PUT may be chunked or (HTTP/1.0) end at the connection's close,
and the bytes go to a temporary file renamed into place once complete, so a cut upload leaves the
old contents.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import secrets

from xapi.datamodel.errors import XapiError
from xapi.datamodel.types import datetime_now
from xapi.db.schema import insert
from xapi.server.handlers import HttpError

CLASSES = ("VM", "host", "pool", "SR", "network")     # the classes with a `blobs` map
DEFAULT_MIME_TYPE = "application/octet-stream"
CHUNK = 1 << 20


def blob_dir(app) -> str:
    return os.path.join(app.config.data_dir, "blobs")


def blob_path(app, uuid: str) -> str:
    return os.path.join(blob_dir(app), uuid)


def _new(db, mime_type: str, public: bool) -> str:
    return insert(db, "blob", mime_type=mime_type or DEFAULT_MIME_TYPE, public=bool(public), size=0)


# -- messages -----------------------------------------------------------------------------------------
def create(ctx, session, mime_type, public):
    return _new(ctx.app.db, mime_type, public)


def create_new_blob(cls: str):
    """<cls>.create_new_blob(obj, name, mime_type, public): a new blob in the object's `blobs` map."""
    def create_new_blob(ctx, session, obj, name, mime_type, public):
        db = ctx.app.db
        table = db.table(cls)
        try:
            blobs = table.get_field(obj, "blobs")
        except (KeyError, TypeError):
            raise XapiError("HANDLE_INVALID", cls, obj) from None
        if name in blobs:
            raise XapiError("MAP_DUPLICATE_KEY", cls, "blobs", table.get_field(obj, "uuid"), name)
        ref = _new(db, mime_type, public)
        table.set_field(obj, "blobs", {**blobs, name: ref})
        return ref
    create_new_blob.__qualname__ = f"{cls}.create_new_blob"
    return create_new_blob


def destroy(ctx, session, self):
    """Removes the blob from every object's map, its file, and the row."""
    app = ctx.app
    db = app.db
    blobs = db.table("blob")
    if type(self) is not str or self not in blobs:
        raise XapiError("HANDLE_INVALID", "blob", self)
    for cls in CLASSES:
        table = db.table(cls)
        for ref in table.refs():
            current = table.get_field(ref, "blobs")
            if self in current.values():
                table.set_field(ref, "blobs", {k: v for k, v in current.items() if v != self})
    with contextlib.suppress(FileNotFoundError):
        os.unlink(blob_path(app, blobs.get_field(self, "uuid")))
    blobs.remove(self)
    return ""


# -- the HTTP handler ---------------------------------------------------------------------------------
def register(routes) -> None:
    # GET authenticates in the handler: public blobs need no session (get_blob has no RBAC check)
    routes.add("GET", "/blob", get_blob, action="get_blob", auth=False)
    routes.add("PUT", "/blob", put_blob, action="put_blob")


def _find(request) -> str:
    ref, uuid = request.query.get("ref"), request.query.get("uuid")
    if ref is None and uuid is None:
        raise HttpError(400, "the request names no blob: ref or uuid is needed", close=True)
    table = request.app.db.table("blob")
    if ref is not None:
        if ref in table:
            return ref
    else:
        found = table.find("uuid", uuid)
        if found:
            return found[0]
    raise HttpError(404, "Unknown reference", close=True)


class _FileIO:
    """File calls in the default executor, one at a time; the descriptor is closed only once no call
    is running (a cancelled handler must not close it under a thread still using it)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.loop = asyncio.get_running_loop()
        self.inflight: asyncio.Future | None = None

    async def call(self, fn, *args):
        self.inflight = fut = self.loop.run_in_executor(None, fn, self.fd, *args)
        return await asyncio.shield(fut)

    def close(self) -> None:
        fut = self.inflight

        def close_fd(done=None):
            if done is not None and not done.cancelled():
                done.exception()                    # retrieved
            os.close(self.fd)
        if fut is not None and not fut.done():
            fut.add_done_callback(close_fd)
        else:
            close_fd()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


async def get_blob(request, response):
    ref = _find(request)
    app = request.app
    row = app.db.table("blob").get(ref)
    if not row["public"]:
        await request.authenticate()
    try:
        fd = os.open(blob_path(app, row["uuid"]), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise HttpError(404, "the blob has no contents", close=True) from None
    io = _FileIO(fd)
    try:
        size = os.fstat(fd).st_size
        response.start(200, [("Content-Type", row["mime_type"] or DEFAULT_MIME_TYPE)], length=size)
        if request.method == "HEAD":
            return
        offset = 0
        while offset < size:
            chunk = await io.call(os.pread, min(CHUNK, size - offset), offset)
            if not chunk:
                break                               # the file shrank: end() closes the connection
            await response.write(chunk)
            offset += len(chunk)
    finally:
        io.close()


async def put_blob(request, response):
    ref = _find(request)
    app = request.app
    table = app.db.table("blob")
    directory = blob_dir(app)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = blob_path(app, table.get_field(ref, "uuid"))
    tmp = f"{path}.{secrets.token_hex(6)}.tmp"
    io = _FileIO(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    size = 0
    try:
        while True:
            chunk = await request.read(CHUNK)
            if not chunk:
                break
            await io.call(_write_all, chunk)
            size += len(chunk)
            request.progress(size / request.content_length if request.content_length else 0.0)
        await io.call(os.fsync)
    except BaseException:
        io.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    io.close()
    if ref not in table:                            # destroyed meanwhile
        os.unlink(tmp)
        raise HttpError(404, "Unknown reference", close=True)
    os.replace(tmp, path)
    table.update(ref, {"size": size, "last_updated": datetime_now()})
    app.hub.poke()
    response.start(200, [("Access-Control-Allow-Origin", "*")], length=0)
