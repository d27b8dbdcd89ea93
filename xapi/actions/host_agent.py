"""host.* calls about the toolstack on a host rather than the pool's objects, as xapi_host.ml does them:

* restart_agent(host): that host's daemon stops cleanly once the answer is out and starts again
  (the same argv, the same pid: an exec), as Xapi_fuse.light_fuse_and_run; sessions do not survive
  (they are not persisted, as in xapi); shutdown_agent (emergency call): stops the receiving daemon;
* syslog_reconfigure(host): host.logging's syslog_destination, syslog_destination_only and
  syslog_listen_remote written as <data>/syslog.conf (xapi's SYSLOG_HOST / SYSLOG_REMOTE_ONLY /
  SYSLOGD_OPTIONS lines) on that host;
* sync_data(host): Xapi_sync.sync_host: a live member gets a copy of the pool's blobs it lacks or holds
  at another size (so a new coordinator has them); a host not live is skipped, as xapi does;
* backup_rrds(host, delay): after `delay` seconds the host writes its latest metrics sample (what stands
  for its RRDs here) to <data>/rrd-backup.json, once, without holding up the answer;
* power_on(host): as host allowed_operations and Xapi_host.power_on check it: a live host
  HOST_IS_LIVE [host], power_on_mode "" HOST_POWER_ON_MODE_DISABLED, no "power-on-host" plugin
  XENAPI_MISSING_PLUGIN [power-on-host]; then that plugin's "main" with remote_host_uuid must answer
  "True", else INTERNAL_ERROR ["The host failed to power on."];
* license_add/license_apply(host, contents): contents not base64: LICENSE_PROCESSING_ERROR; XCP-ng's
  licensing daemon takes no license files, so any file is refused the same way; license_remove leaves the
  edition as it is;
* bugreport_upload(host, url, options): a status report of the host (tar.gz) put to `url` with curl
  (options http_proxy, else $http_proxy), curl's failures as xapi reads them: exit 1/3/4 "URL not
  recognised", 5/6 "Failed to resolve proxy or host", 7 "Failed to connect to host", 9 "FTP access
  denied", others INTERNAL_ERROR with curl's message.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import logging
import os
import signal
import tarfile
import tempfile
import time

from xapi import atomic
from xapi.actions import blob as blob_actions, host_plugins, lookup
from xapi.datamodel.errors import XapiError
from xapi.pool import internal

log = logging.getLogger("xapi.host")

POWER_ON_PLUGIN, POWER_ON_FN = "power-on-host", "main"


def _rec(app, host) -> dict:
    return lookup.record(app.db, "host", host)


def _live(app, rec: dict) -> bool:
    metrics = app.db.table("host_metrics")
    return rec["metrics"] in metrics and bool(metrics.get_field(rec["metrics"], "live"))


# -- the agent itself --------------------------------------------------------------------------------
@internal.method("host_agent.stop")
def _stop(app, restart: bool) -> str:
    """On the host itself: SIGTERM to this daemon once the answer has gone (serve() then exits, or execs
    itself again when restart_after_stop is set)."""
    app.restart_after_stop = bool(restart)
    log.info("host %s: agent %s requested", app.host_ref, "restart" if restart else "shutdown")
    asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)
    return ""


async def restart_agent(ctx, session, host):
    app = ctx.app
    _rec(app, host)
    await app.pool.call(host, "host_agent.stop", True)
    return ""


def shutdown_agent(ctx, session):
    return _stop(ctx.app, False)


# -- syslog ------------------------------------------------------------------------------------------
@internal.method("host_agent.syslog")
def _syslog(app, destination: str, only: bool, listen_remote: bool) -> str:
    text = ""
    if destination:
        text += f'SYSLOG_HOST="{destination}"\nSYSLOG_REMOTE_ONLY="{1 if only else 0}"\n'
    if listen_remote:
        text += 'SYSLOGD_OPTIONS="-r $SYSLOGD_OPTIONS"\n'
    atomic.write_file(os.path.join(app.config.data_dir, "syslog.conf"), text.encode(), 0o640)
    return ""


def _flag(logging_map: dict, key: str) -> bool:
    return str(logging_map.get(key, "")).lower() == "true"


async def syslog_reconfigure(ctx, session, host):
    app = ctx.app
    logging_map = _rec(app, host)["logging"]
    await app.pool.call(host, "host_agent.syslog", str(logging_map.get("syslog_destination", "")),
                        _flag(logging_map, "syslog_destination_only"), _flag(logging_map, "syslog_listen_remote"))
    return ""


# -- data kept on every host -------------------------------------------------------------------------
@internal.method("host_agent.blob_sizes")
def _blob_sizes(app, uuids: list) -> dict:
    sizes = {}
    for uuid in uuids:
        try:
            sizes[uuid] = os.path.getsize(blob_actions.blob_path(app, uuid))
        except OSError:
            sizes[uuid] = -1
    return sizes


@internal.method("host_agent.put_blob")
def _put_blob(app, uuid: str, data: str) -> str:
    os.makedirs(blob_actions.blob_dir(app), mode=0o700, exist_ok=True)
    atomic.write_file(blob_actions.blob_path(app, uuid), base64.b64decode(data))
    return ""


async def sync_data(ctx, session, host):
    app = ctx.app
    rec = _rec(app, host)
    if host == app.host_ref or not _live(app, rec):
        return ""
    blobs = app.db.table("blob")
    uuids = [blobs.get_field(b, "uuid") for b in blobs.refs()]
    theirs = await app.pool.call(host, "host_agent.blob_sizes", uuids)
    for uuid in uuids:
        path = blob_actions.blob_path(app, uuid)
        try:
            size = os.path.getsize(path)
        except OSError:
            continue                                    # never written: nothing to copy
        if theirs.get(uuid) != size:
            data = await asyncio.to_thread(_read, path)
            await app.pool.call(host, "host_agent.put_blob", uuid, base64.b64encode(data).decode())
    return ""


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@internal.method("host_agent.backup_rrds")
def _backup_rrds(app, delay: float) -> str:
    def backup() -> None:
        sample = (getattr(app, "metrics_samples", {}) or {}).get(app.host_ref)
        body = json.dumps({"host": app.host_ref, "time": time.time(), "sample": sample}, default=str)
        try:
            atomic.write_file(os.path.join(app.config.data_dir, "rrd-backup.json"), body.encode())
        except OSError as e:
            log.warning("RRD backup: %s", e)
    asyncio.get_running_loop().call_later(max(0.0, float(delay)), backup)
    return ""


async def backup_rrds(ctx, session, host, delay):
    app = ctx.app
    _rec(app, host)
    await app.pool.call(host, "host_agent.backup_rrds", float(delay))
    return ""


# -- power -------------------------------------------------------------------------------------------
async def power_on(ctx, session, host):
    app = ctx.app
    rec = _rec(app, host)
    if _live(app, rec):
        raise XapiError("HOST_IS_LIVE", host)
    if rec["power_on_mode"] == "":
        raise XapiError("HOST_POWER_ON_MODE_DISABLED")
    path = host_plugins.find(app, "plugins", POWER_ON_PLUGIN)
    if path is None or not os.access(path, os.X_OK):
        raise XapiError("XENAPI_MISSING_PLUGIN", POWER_ON_PLUGIN)
    result = await host_plugins.call_plugin(ctx, session, app.host_ref, POWER_ON_PLUGIN, POWER_ON_FN,
                                            {"remote_host_uuid": rec["uuid"]})
    if result != "True":
        raise XapiError("INTERNAL_ERROR", "The host failed to power on.")
    return ""


# -- licensing ---------------------------------------------------------------------------------------
def license_add(ctx, session, host, contents):
    _rec(ctx.app, host)
    try:
        base64.b64decode(contents, validate=True)
    except (binascii.Error, ValueError):
        raise XapiError("LICENSE_PROCESSING_ERROR") from None
    raise XapiError("LICENSE_PROCESSING_ERROR")


def license_apply(ctx, session, host, contents):
    return license_add(ctx, session, host, contents)


def license_remove(ctx, session, host):
    _rec(ctx.app, host)
    return ""


# -- bug reports -------------------------------------------------------------------------------------
_CURL_ERRORS = {1: "URL not recognised", 3: "URL not recognised", 4: "URL not recognised",
                5: "Failed to resolve proxy or host", 6: "Failed to resolve proxy or host",
                7: "Failed to connect to host", 9: "FTP access denied"}


def _report(app, host: str) -> bytes:
    """A small status report: the host's record and software versions, as a tar.gz."""
    rec = app.db.table("host").get(host)
    files = {"host-record.json": json.dumps(rec, default=str, indent=1).encode()}
    inv = os.path.join(app.config.data_dir, "inventory")
    if os.path.exists(inv):
        files["inventory"] = _read(inv)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"bug-report/{name}")
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@internal.method("host_agent.bugreport_upload")
async def _bugreport_upload(app, url: str, proxy: str) -> str:
    data = _report(app, app.host_ref)
    with tempfile.NamedTemporaryFile(prefix="bugreport-", suffix=".tar.gz", dir=app.config.data_dir) as f:
        f.write(data)
        f.flush()
        args = ["curl", "--silent", "--show-error", "--fail", "--connect-timeout", "30", "--max-time", "600",
                "-T", f.name, url]
        if proxy:
            args[1:1] = ["--proxy", proxy]
        try:
            proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL,
                                                        stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.PIPE)
        except OSError as e:
            raise XapiError("INTERNAL_ERROR", f"curl: {e}") from None
        out, err = await proc.communicate()
    if proc.returncode in _CURL_ERRORS:
        raise XapiError("INTERNAL_ERROR", _CURL_ERRORS[proc.returncode])
    if proc.returncode != 0:
        raise XapiError("INTERNAL_ERROR", f"bugreport upload failed (curl exit {proc.returncode}): "
                                          f"{err.decode(errors='replace').strip()}")
    return ""


async def bugreport_upload(ctx, session, host, url, options):
    app = ctx.app
    _rec(app, host)
    proxy = options.get("http_proxy") or os.environ.get("http_proxy", "")
    await app.pool.call(host, "host_agent.bugreport_upload", url, proxy, timeout=700)
    return ""


HOST_MESSAGES = {name: globals()[name] for name in (
    "restart_agent", "shutdown_agent", "syslog_reconfigure", "sync_data", "backup_rrds", "power_on",
    "license_add", "license_apply", "license_remove", "bugreport_upload")}
