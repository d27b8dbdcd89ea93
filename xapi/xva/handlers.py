"""`GET /export` and `PUT /import`: VMs as XVA archives over HTTP (xapi's export.ml / import.ml
handlers; the URL parameters are xapi's).

Export: `ref=` or `uuid=` names the VM (HANDLE_INVALID / UUID_INVALID); `use_compression=true|gzip`
gzips the stream, `zstd` compresses it with zstd (xapi.xva.compression), anything else
means none, as xapi; `preserve_power_state=true` keeps a suspended VM's state and suspend disk. The VM
must allow `export` (Halted or Suspended: VM_BAD_POWER_STATE otherwise, OTHER_OPERATION_IN_PROGRESS...),
and holds `export` in current_operations meanwhile. The reply is 200 with Task-Id and
`Content-Disposition: attachment; filename="export.xva"`, the body ending with the connection (no
length, as xapi). Disks are read 8 MiB at a time in the transfer pool, where the chunks are also
checked for zeros and hashed; gzip runs in the pool too, 8 MiB per gzip member, two at once.

Import: `sr_id=` (or `sr_uuid=`; else the pool's default SR, DEFAULT_SR_NOT_FOUND), `restore=true`,
`force=true` (checksum failures are ignored and nothing is undone on failure, as xapi). The body
(Content-Length, chunked or HTTP/1.0 until the close) may be gzip or zstd compressed: a first block
that isn't the tar header of ova.xml is taken for zstd when it has zstd's magic, else for gzip. The
task's result is the new VM refs as an XML-RPC array (xapi's API.rpc_of_ref_VM_set). Errors, on the
task: IMPORT_ERROR_PREMATURE_EOF (the archive ends early), IMPORT_ERROR_GENERIC (a bad checksum, a
malformed archive), IMPORT_ERROR_UNEXPECTED_FILE [ova.xml, name], IMPORT_INCOMPATIBLE_VERSION,
SR_FULL and the other errors of VDI.create. Whatever was created is destroyed again on failure. As
in xapi, the reply (200, Task-Id) goes out once the SR is known, before the body is read: from then
on the outcome is on the task only. `/export/` and `/import/` (Xen Orchestra's paths) work too.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from xapi.actions import vm as vm_actions
from xapi.datamodel.errors import XapiError
from xapi.forwarding import locks
from xapi.server.handlers import HttpError
from xapi.sm import transfer, vhd
from xapi.tasks import value_text
from xapi.xva import chunks, compression, export, ovaxml, tar
from xapi.xva.importer import Importer, assert_compatible, non_cdrom_vdis

log = logging.getLogger("xapi.xva")

BATCH = 8 * chunks.CHUNK            # what one pool call reads and encodes
_is_zero = transfer._is_zero
_run = transfer._run


def register(routes) -> None:
    for slash in ("", "/"):         # Xen Orchestra asks for /export/ and /import/
        routes.add("GET", "/export" + slash, export_vm, action="get_export", task="VM.export")
        routes.add("PUT", "/import" + slash, import_vm, action="put_import", task="VM.import")


def _flag(request, name: str) -> bool:
    return request.query.get(name, "").lower() == "true"


# -- export -------------------------------------------------------------------------------------------
def _vm_of(request) -> str:
    table = request.app.db.table("VM")
    ref = request.query.get("ref")
    if ref is not None:
        if ref not in table:
            raise XapiError("HANDLE_INVALID", "VM", ref)
        return ref
    uuid = request.query.get("uuid")
    if uuid is None:
        raise HttpError(400, "the request names no VM: ref= or uuid= is needed", close=True,
                        error=["INTERNAL_ERROR", "Not_found"])
    found = table.find("uuid", uuid)
    if not found:
        raise XapiError("UUID_INVALID", "VM", uuid)
    return found[0]


def _codec(request) -> str | None:
    value = request.query.get("use_compression")
    if value in ("true", "gzip"):
        return "gzip"
    if value == "zstd":
        return "zstd"
    return None


def _encode_job(disk, prefix: str, off: int, n: int, nchunks: int):
    data = disk.read_blocks(off, n)
    return chunks.encode_batch(prefix, off // chunks.CHUNK, nchunks, data, _is_zero)[0]


async def export_vm(request, response):
    app = request.app
    db = app.db
    vm = _vm_of(request)
    codec = _codec(request)
    preserve = _flag(request, "preserve_power_state")
    if request.method == "HEAD":            # the checks and the head, not the archive
        vm_actions._assert(db, vm, "export")
        response.start(200, [("Content-Type", "application/octet-stream"),
                             ("Content-Disposition", 'attachment; filename="export.xva"')], close=True)
        return None
    try:
        async with locks.operation(app, "VM", vm, "export", check=vm_actions._assert,
                                   refresh=vm_actions.refresh_allowed_operations, key=request.task):
            app.hub.poke()
            await _send_archive(request, response, vm, codec, preserve)
    finally:
        app.hub.poke()
    request.progress(1.0)
    return None


async def _send_archive(request, response, vm: str, codec: str | None, preserve: bool) -> None:
    """The archive as the reply: ova.xml, then the disks in chunks, through the codec's sink."""
    app = request.app
    db = app.db
    sink = None
    try:
        table, header = export.vm_metadata(db, vm, app.host_ref, preserve)
        disks = export.disks(db, vm, table, preserve)
        total = sum(size for _, _, size in disks) or 1
        headers = [("Content-Type", "application/octet-stream"),
                   ("Content-Disposition", 'attachment; filename="export.xva"')]
        if request.task:
            headers.append(("Task-Id", request.task))
        sink = {"gzip": compression.Gzip, "zstd": compression.Zstd}.get(codec, compression.Plain)(response)
        if isinstance(sink, compression.Zstd):
            compression.zstd_program()
        response.start(200, headers, close=True)
        request.progress(0.0)
        if isinstance(sink, compression.Zstd):
            await sink.open()
        await sink.write(b"".join(tar.member(ovaxml.FILENAME, ovaxml.dumps(header))))
        done = 0
        for i, (prefix, vdi, size) in enumerate(disks):
            att = transfer._Attached(request, vdi, "export", False)
            att.dp = f"{att.dp}/{i}"
            info = await _attach(att)
            try:
                disk = transfer._open(info, False)
                nchunks = chunks.count(size)
                offsets = list(range(0, size, BATCH))

                def job(k):
                    off = offsets[k]
                    return asyncio.ensure_future(
                        _run(_encode_job, disk, prefix, off, min(BATCH, size - off), nchunks))
                nxt = job(0) if offsets else None
                try:
                    for k, off in enumerate(offsets):     # the next batch is read while this one goes
                        data = await nxt
                        nxt = job(k + 1) if k + 1 < len(offsets) else None
                        await sink.write(data)
                        request.progress((done + min(off + BATCH, size)) / total)
                finally:
                    if nxt is not None:
                        with contextlib.suppress(BaseException):
                            await asyncio.wait([nxt])
                        if nxt.done() and not nxt.cancelled():
                            nxt.exception()
                    disk.close()
            finally:
                await _uncancelled(att._release())
            done += size
        await sink.write(tar.END)
        await sink.close()
        sink = None
    except (OSError, vhd.VHDError) as e:
        if isinstance(e, ConnectionError):
            raise
        raise transfer.io_error(str(e)) from None
    finally:
        if isinstance(sink, (compression.Zstd, compression.Gzip)):
            sink.kill()


# -- import -------------------------------------------------------------------------------------------
def _sr_of(request) -> str:
    db = request.app.db
    sr = request.param("sr_id")
    if sr:
        if sr not in db.table("SR"):
            raise XapiError("HANDLE_INVALID", "SR", sr)
    elif request.param("sr_uuid"):
        found = db.table("SR").find("uuid", request.param("sr_uuid"))
        if not found:
            raise XapiError("UUID_INVALID", "SR", request.param("sr_uuid"))
        sr = found[0]
    else:
        pools = db.table("pool").refs()
        sr = db.table("pool").get_field(pools[0], "default_SR") if pools else "OpaqueRef:NULL"
        if sr not in db.table("SR"):
            raise XapiError("DEFAULT_SR_NOT_FOUND", sr)
    if db.table("SR").get_field(sr, "content_type") == "iso":
        raise HttpError(400, "cannot import into an ISO library", close=True, error=["SR_OPERATION_NOT_SUPPORTED"])
    return sr


async def _open_source(request) -> compression.Source:
    first = await compression.read_at_least(request, tar.BLOCK)
    try:
        parsed = tar.parse_header(first) if len(first) == tar.BLOCK else None
    except tar.TarError:
        parsed = None
    if parsed is not None:
        if parsed[0] != ovaxml.FILENAME:
            raise XapiError("IMPORT_ERROR_UNEXPECTED_FILE", ovaxml.FILENAME, parsed[0])
        return compression.Source(request, first)
    if not first:
        raise XapiError("IMPORT_ERROR_PREMATURE_EOF")
    if first.startswith(compression.ZSTD_MAGIC):
        src = compression.UnzstdSource(request, first)
        await src.start()
        return src
    return compression.GunzipSource(request, first)


async def _uncancelled(coro):
    """Runs coro to its end even when the caller is cancelled meanwhile (an attach or a release
    stopped half-way leaves the VDI in use); the cancellation goes on afterwards."""
    fut = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        await asyncio.wait([fut])
        raise


async def _attach(att) -> dict:
    """att (transfer._Attached) attached and activated; released again if the caller is cancelled."""
    fut = asyncio.ensure_future(att.__aenter__())
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        await asyncio.wait([fut])
        if not fut.cancelled() and fut.exception() is None:
            await _uncancelled(att._release())
        raise


class _Disks:
    """The VDI being written: attached on demand, released when the stream moves on."""

    def __init__(self, request, refs: list) -> None:
        self.request = request
        self.refs = refs
        self.index = -1
        self.att = None
        self.disk = None

    async def get(self, i: int):
        if i != self.index:
            await self.release()
            att = transfer._Attached(self.request, self.refs[i], "import", True)
            att.dp = f"{att.dp}/{i}"
            info = await _attach(att)
            self.att = att
            try:
                self.disk = transfer._open(info, True)
            except BaseException:
                await self.release()
                raise
            self.index = i
        return self.disk

    async def release(self) -> None:
        disk, att = self.disk, self.att
        self.disk = self.att = None
        self.index = -1
        try:
            if disk is not None:
                try:
                    await _run(disk.flush)
                finally:
                    disk.close()
        finally:
            if att is not None:
                await _uncancelled(att._release())


def _apply(disk, batch: list, force: bool) -> None:
    """Checks a run of contiguous chunks and writes it (in the pool): from a block boundary as whole
    blocks (transfer's write_blocks), all-zero blocks skipped on a VHD (a fresh one reads as zero)."""
    for w in batch:
        problem = chunks.verify(w)
        if problem is not None:
            if not force:
                raise XapiError("IMPORT_ERROR_GENERIC", f'Stream_vdi.Invalid_checksum("{problem}")')
            log.warning("ignoring (force): %s", problem)
    off = batch[0].offset
    if off % transfer.BLOCK == 0:
        data = batch[0].data if len(batch) == 1 else b"".join(w.data for w in batch)
        disk.write_blocks(off, data, disk.is_vhd)
        return
    for w in batch:
        if not (disk.is_vhd and _is_zero(w.data)):
            disk.write(w.offset, w.data)


class _Writer:
    """Chunks to the disks: runs of contiguous chunks of one disk gathered up to BATCH bytes, then
    checked and written in the pool, one run in flight while the next one gathers."""

    def __init__(self, disks: _Disks, force: bool) -> None:
        self.disks = disks
        self.force = force
        self.batch: list = []
        self.size = 0
        self.inflight: asyncio.Future | None = None

    async def add(self, w: chunks.Write) -> None:
        b = self.batch
        if b and (w.disk != b[-1].disk or w.offset != b[-1].offset + len(b[-1].data) or self.size >= BATCH):
            await self.flush()
        self.batch.append(w)
        self.size += len(w.data)

    async def flush(self) -> None:
        if not self.batch:
            return
        batch, self.batch, self.size = self.batch, [], 0
        await self.wait()
        disk = await self.disks.get(batch[0].disk)
        self.inflight = asyncio.ensure_future(_run(_apply, disk, batch, self.force))

    async def wait(self) -> None:
        if self.inflight is not None:
            p, self.inflight = self.inflight, None
            await p

    async def close(self) -> None:
        await self.flush()
        await self.wait()

    async def abort(self) -> None:
        """After a failure: lets a write in flight end (the disk is released next)."""
        p, self.inflight = self.inflight, None
        if p is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait([p])
            if p.done() and not p.cancelled():
                p.exception()


async def import_vm(request, response):
    app = request.app
    sr = _sr_of(request)
    restore, force = _flag(request, "restore"), _flag(request, "force")
    # as xapi: the answer (200 and the task) goes out before the body is read; from here on the
    # outcome is the task's. Clients probe with an empty body (Xen Orchestra) or close the connection
    # once the archive is sent (xe, after the answer; Xen Orchestra, without reading it).
    task, own = request.task, request._own_task
    headers = [("Content-Type", "application/octet-stream")]
    if task:
        headers.append(("Task-Id", task))
    # no length: the reply ends with the connection, once the import is done (clients that wait for
    # its end, as Xen Orchestra's, go on sending meanwhile)
    response.start(200, headers, close=True)
    await response.write(b"")               # the head goes out now
    # so the import runs on (reading what the client sent) when the connection goes: a job of its
    # own that settles the task, which the framework no longer sees; task.cancel reaches the job
    request.task = None
    job = asyncio.ensure_future(_import_job(request, task, own, sr, restore, force))
    if task:
        app.tasks.running[task] = job
    return await asyncio.shield(job)


def _progress(app, task):
    def set_progress(value: float) -> None:
        table = app.db.table("task")
        if task and task in table and table.get_field(task, "status") == "pending":
            table.set_field(task, "progress", max(0.0, min(1.0, float(value))))
            app.hub.poke()
    return set_progress


async def _import_job(request, task, own: bool, sr: str, restore: bool, force: bool):
    app = request.app
    tasks = app.tasks
    try:
        vms = await _import(request, task, sr, restore, force)
        outcome = ("success", value_text(vms), ())
    except asyncio.CancelledError:
        outcome = ("cancelled", "", ("TASK_CANCELLED", task))
    except XapiError as e:
        outcome = ("failure", "", tuple(e.description))
    except Exception as e:  # noqa: BLE001 - a bug fails the task, never the daemon
        log.exception("import failed")
        outcome = ("failure", "", ("INTERNAL_ERROR", f"{type(e).__name__}: {e}"))
    finally:
        if task and tasks.running.get(task) is asyncio.current_task():
            tasks.running.pop(task, None)
    if task and task in tasks.table and tasks.table.get_field(task, "status") in ("pending", "cancelling"):
        status, result, error = outcome
        tasks._settle(task, status, result=result, error=list(error))
        if own:
            tasks.destroy(task)             # as the framework does with the tasks it makes
    app.hub.poke()
    return None


async def _import(request, task, sr: str, restore: bool, force: bool) -> list:
    app = request.app
    progress = _progress(app, task)
    progress(0.0)
    source = None
    importer = None
    disks = None
    writer = None
    try:
        try:
            source = await _open_source(request)
            reader = tar.Reader()
            files: list = []
            while not files:
                data = await source.read()
                if not data:
                    reader.finish()
                    raise tar.PrematureEof("no ova.xml")
                files = reader.feed(data)
            name, xml = files.pop(0)
            if name != ovaxml.FILENAME:
                raise XapiError("IMPORT_ERROR_UNEXPECTED_FILE", ovaxml.FILENAME, name)
            header = ovaxml.loads(xml)
            assert_compatible(header.version)
            importer = Importer(request, request.session, sr, task, restore, force)
            await importer.run(header)
            objs = header.by_id()
            ids = [i for i in non_cdrom_vdis(header) if i in importer.table]
            sizes = [int(objs[i].snapshot.get("virtual_size", 0) or 0) for i in ids]
            total = sum(sizes) or 1
            receiver = chunks.Receiver(list(zip(ids, sizes)), header.version.export_vsn > 0)
            disks = _Disks(request, [importer.table[i] for i in ids])
            writer = _Writer(disks, force)
            shown = 0.0
            before = [sum(sizes[:k]) for k in range(len(sizes))]
            while not receiver.done:
                for fname, fdata in files:
                    for w in receiver.file(fname, fdata):
                        await writer.add(w)
                        done = (before[w.disk] + w.offset + len(w.data)) / total * 0.99
                        if done - shown >= 0.01:    # a database write and an event: not per chunk
                            progress(done)
                            shown = done
                    if receiver.done:
                        break
                if receiver.done:
                    break
                data = await source.read()
                if not data:
                    reader.finish()
                    raise tar.PrematureEof("the archive ended before the disks")
                files = reader.feed(data)
            await writer.close()
            await disks.release()
        except tar.PrematureEof:
            raise XapiError("IMPORT_ERROR_PREMATURE_EOF") from None
        except ConnectionError:
            raise XapiError("IMPORT_ERROR_PREMATURE_EOF") from None
        except tar.TarError as e:
            raise XapiError("IMPORT_ERROR_GENERIC", f"Tar: {e}") from None
        except ovaxml.OvaError as e:
            raise XapiError("IMPORT_ERROR_GENERIC", str(e)) from None
        except chunks.XvaFormatError as e:
            raise XapiError(e.code, *e.params) from None
        finally:
            if writer is not None:
                await writer.abort()
    except BaseException:
        if disks is not None:
            with contextlib.suppress(Exception):
                await disks.release()
        if importer is not None and not force:
            await importer.undo()
        raise
    finally:
        if source is not None:
            source.close()
    importer.complete()
    progress(1.0)
    return importer.vms
