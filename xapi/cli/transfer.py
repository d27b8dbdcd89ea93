"""xe's file transfers (xapi's cli_operations.ml vdi_import/vdi_export/vm_export/vm_import): the server
makes a task, sends the client `HttpPut(filename, url)` or `HttpGet(filename, url)` with a URL carrying
the CLI's session and that task, and the client streams its local file to or from the URL itself (over
the connection it used for the command: the Unix socket, plain HTTP or TLS). Meanwhile the server
watches the task (with --progress, a progress bar goes to the client's stderr) and, once the client
answers, reports the task's outcome: its error as xe prints errors, or the command's output.

The task's progress starts at -1: a handler that received the task moves it to 0 or more, so when the
client fails (a missing file, a refused connection) with the progress still negative, the handler never
saw the task and the failure is the client's (CLIENT_ERROR)."""
from __future__ import annotations

import asyncio
import time
import urllib.parse

from xapi.cli import xe
from xapi.cli.commands import CliError, CliFailure, ExitWithError
from xapi.cli.cmdtable import VM_SELECTORS, command
from xapi.datamodel.errors import XapiError

POLL = 0.1              # how often the task is looked at while the client transfers
CLIENT_GRACE = 1.0      # how long a failed client's task may take to show the handler had it
NULL = "OpaqueRef:NULL"


class ProgressBar:
    """The `[####    ] 45% ETA 00:00:12` line xe redraws on stderr, then the total time."""

    WIDTH = 50

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.shown = -1

    def update(self, progress: float) -> str | None:
        pct = int(max(0.0, min(1.0, progress)) * 100)
        if pct == self.shown:
            return None
        self.shown = pct
        done = self.WIDTH * pct // 100
        elapsed = time.monotonic() - self.start
        eta = elapsed * (100 - pct) / pct if pct else 0.0
        return f"\r[{'#' * done}{' ' * (self.WIDTH - done)}] {pct:3d}% ETA {_hms(eta)}"

    def summary(self) -> str:
        return f"\nTotal time: {_hms(time.monotonic() - self.start)}\n"


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _task_row(run, task: str) -> dict | None:
    table = run.app.db.table("task")
    return table.get(task) if task in table else None


async def track(run, tag: int, filename: str, path: str, query: dict, label: str, *,
                progress_bar: bool = False) -> str:
    """Sends the client HttpGet/HttpPut for path?query (plus session_id and task_id), waits for the
    client and the task, and returns the task's result (raises its error)."""
    task = await run.call("task.create", label, "")
    run.app.db.table("task").set_field(task, "progress", -1.0)
    try:
        q = {"session_id": run.session, "task_id": task, **query}
        url = path + "?" + urllib.parse.urlencode(q, safe=":/")
        if run.forwarded:
            # the client reached us through a pool member: it must come here itself, over TLS
            address = run.app.db.table("host").get_field(run.app.host_ref, "address")
            url = f"https://{address}:{run.app.config.https_port}{url}"
        await run.channel.write(xe.command(tag, filename, url))
        answer = asyncio.ensure_future(run.channel.response())
        bar = ProgressBar() if progress_bar else None
        try:
            while not answer.done():
                await asyncio.wait({answer}, timeout=POLL)
                row = _task_row(run, task)
                if bar is not None and row is not None and row["progress"] >= 0:
                    line = bar.update(row["progress"])
                    if line:
                        await run.out("stderr", line)
        finally:
            if not answer.done():
                answer.cancel()
        ok = answer.result() == xe.OK
        deadline = time.monotonic() + CLIENT_GRACE
        while True:
            row = _task_row(run, task)
            if row is None or row["status"] != "pending":
                break
            if not ok and row["progress"] < 0 and time.monotonic() > deadline:
                raise XapiError("CLIENT_ERROR")
            await asyncio.sleep(POLL / 2)
        if bar is not None:
            line = bar.update(1.0 if row and row["status"] == "success" else row["progress"] if row else 0)
            await run.out("stderr", (line or "") + bar.summary())
        if row is None:
            raise XapiError("HANDLE_INVALID", "task", task)
        if row["status"] == "success":
            if not ok:
                raise XapiError("CLIENT_ERROR")
            return row["result"]
        if row["status"] == "cancelled":
            raise XapiError("TASK_CANCELLED", task)
        error = list(row["error_info"]) or ["INTERNAL_ERROR", "the transfer failed"]
        raise XapiError(error[0], *error[1:])
    finally:
        # also when the client has gone (the command is cancelled): no await here
        if task in run.app.db.table("task"):
            run.app.tasks.destroy(task)
            run.app.hub.poke()


def _vdi_query(run) -> dict:
    q = {}
    if "format" in run.args:
        q["format"] = run.args["format"]
    return q


@command("vdi-import", reqd=("uuid", "filename"), optn=("format", "progress"),
         help="Writes the local file into the disk: format=raw (default) or vhd.")
async def vdi_import(run) -> None:
    vdi = await run.call("VDI.get_by_uuid", run.args["uuid"])
    await track(run, xe.HTTP_PUT, run.args["filename"], "/import_raw_vdi", {"vdi": vdi, **_vdi_query(run)},
                "VDI import", progress_bar=run.flag("progress"))


@command("vdi-export", reqd=("uuid", "filename"), optn=("format", "base", "progress"),
         help="Copies the disk into a new local file (filename= empty: standard output): format=raw "
              "(default) or vhd.")
async def vdi_export(run) -> None:
    vdi = await run.call("VDI.get_by_uuid", run.args["uuid"])
    q = {"vdi": vdi, **_vdi_query(run)}
    if "base" in run.args:
        q["base"] = run.args["base"]
    await track(run, xe.HTTP_GET, run.args["filename"], "/export_raw_vdi", q, "VDI export",
                progress_bar=run.flag("progress"))


@command("vm-export", reqd=("filename",),
         optn=("compress", "preserve-power-state", "include-snapshots", "metadata", VM_SELECTORS, "multiple"),
         help="Writes the selected VM (its metadata and disks, as an XVA) into a new local file (filename= "
              "empty: standard output); compress=true|gzip|zstd.")
async def vm_export(run) -> None:
    from xapi.cli import ops_vm
    filename = run.args["filename"]
    compress = run.args.get("compress", "false").lower()
    if compress == "true":
        compress = "gzip"
    path = "/export_metadata" if run.flag("metadata") else "/export"
    n = 0

    async def op(ref):
        nonlocal n
        n += 1
        target = filename if n == 1 or not filename else f"{filename}{n}"
        q = {"ref": ref, "use_compression": compress,
             "preserve_power_state": str(run.flag("preserve-power-state")).lower(),
             "export_snapshots": str(run.flag("include-snapshots")).lower()}
        await track(run, xe.HTTP_GET, target, path, q, "Export of VM")
        if target:
            await run.out("print", "Export succeeded")
    await ops_vm.each_vm(run, ("filename", "compress", "preserve-power-state", "include-snapshots", "metadata"),
                         op, include_templates=True)


async def _export_one(run, kind: str, key: str) -> None:
    """template-export / snapshot-export-to-template: one VM by uuid, which must be of that kind."""
    vm = await run.call("VM.get_by_uuid", run.args[key])
    flag = "VM.get_is_a_template" if kind == "template" else "VM.get_is_a_snapshot"
    if not await run.call(flag, vm):
        raise CliError(f"This operation can only be performed on a VM {kind}. {run.args[key]} is not a VM {kind}.")
    filename = run.args["filename"]
    compress = run.args.get("compress", "false").lower()
    q = {"ref": vm, "use_compression": "gzip" if compress == "true" else compress,
         "preserve_power_state": "false", "export_snapshots": "false"}
    await track(run, xe.HTTP_GET, filename, "/export", q, "Export of VM")
    if filename:
        await run.out("print", "Export succeeded")


@command("template-export", reqd=("template-uuid", "filename"), optn=("compress",),
         help="Writes the template (its metadata and disks, as an XVA) into a new local file.")
async def template_export(run) -> None:
    await _export_one(run, "template", "template-uuid")


@command("snapshot-export-to-template", reqd=("snapshot-uuid", "filename"), optn=("compress",),
         help="Writes the snapshot as a template (an XVA) into a new local file.")
async def snapshot_export(run) -> None:
    await _export_one(run, "snapshot", "snapshot-uuid")


@command("vm-import", reqd=("filename",), optn=("sr-uuid", "preserve", "force", "metadata", "dry-run"),
         help="Creates the VMs of a local XVA file (into sr-uuid or the pool's default SR); prints their "
              "uuids. preserve=true keeps their MAC addresses and identity.")
async def vm_import(run) -> None:
    if "sr-uuid" in run.args:
        sr = await run.call("SR.get_by_uuid", run.args["sr-uuid"])
    else:
        pool = (await run.call("pool.get_all"))[0]
        sr = await run.call("pool.get_default_SR", pool)
        if sr not in await run.call("SR.get_all"):
            raise CliFailure("No SR specified and Pool default SR is null")
    metadata, dry_run = run.flag("metadata"), run.flag("dry-run")
    if dry_run and not metadata:
        await run.out("stderr", "Only metadata import function support dry-run\n")
        raise ExitWithError(1)
    filename = run.args["filename"]
    if filename.lower().endswith("ova.xml"):        # the file beside the folder of an unpacked export
        filename = filename[:-len("ova.xml")]
    q = {"restore": str(run.flag("preserve")).lower(), "force": str(run.flag("force")).lower(),
         "dry_run": str(dry_run).lower(), "sr_id": sr}
    result = await track(run, xe.HTTP_PUT, filename, "/import_metadata" if metadata else "/import", q,
                         "VM import")
    refs = parse_refs(result)
    uuids = [await run.uuid_of("VM", r) for r in refs]
    await run.out("print", ",".join(uuids))


def parse_refs(result: str) -> list[str]:
    """The VM refs of an import task's result: XML-RPC value text (an array of strings), or a plain ref."""
    import re
    return re.findall(r"OpaqueRef:[0-9A-Za-z-]+", result or "")
