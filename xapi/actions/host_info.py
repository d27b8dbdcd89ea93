"""host.* queries and small settings, as xapi_host.ml answers them:

* get_servertime (UTC) and get_server_localtime (the host's local time, no zone), answered by the
  host itself (another pool member through its internal endpoint);
* compute_free_memory (what placement counts free: host_metrics free less the memory held for builds
  in progress), compute_memory_overhead (the host's memory_overhead);
* get_management_interface: the host's PIF with management set (xapi: Not_found otherwise);
* get_uncooperative_resident_VMs: deprecated, always empty; get_system_status_capabilities: the XML list
  xen-bugtool --capabilities prints;
* set_hostname_live: xapi's hostname rules (HOST_NAME_INVALID), then the hostname field and the control
  domain's name follow; on a real Xen host the system hostname is set too (`hostname`);
* dmesg_clear, get_log and list_methods answer NOT_IMPLEMENTED as xapi does (with its parameters).
"""
from __future__ import annotations

import asyncio
import time
from xmlrpc.client import DateTime

from xapi.actions import lookup
from xapi.datamodel.errors import XapiError
from xapi.pool import internal

_HOSTNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
_DOM0_STEM = "Control domain on host: "


def _host(ctx, host) -> dict:
    return lookup.record(ctx.app.db, "host", host)


# -- time, answered by the host itself -----------------------------------------------------------
@internal.method("host_info.servertime")
def _servertime(app) -> str:
    return time.strftime("%Y%m%dT%H:%M:%SZ", time.gmtime())


@internal.method("host_info.localtime")
def _localtime(app) -> str:
    return time.strftime("%Y%m%dT%H:%M:%S", time.localtime())


async def get_servertime(ctx, session, host):
    _host(ctx, host)
    return DateTime(await ctx.app.pool.call(host, "host_info.servertime"))


async def get_server_localtime(ctx, session, host):
    _host(ctx, host)
    return DateTime(await ctx.app.pool.call(host, "host_info.localtime"))


# -- memory ----------------------------------------------------------------------------------------
def compute_free_memory(ctx, session, host):
    from xapi.pool import placement
    _host(ctx, host)
    return max(0, placement.free_memory(ctx.app, host))


def compute_memory_overhead(ctx, session, host):
    return int(_host(ctx, host)["memory_overhead"])


# -- network and deprecated queries ----------------------------------------------------------------
def get_management_interface(ctx, session, host):
    _host(ctx, host)
    pifs = ctx.app.db.table("PIF")
    for pif in pifs.find("host", host):
        if pifs.get_field(pif, "management"):
            return pif
    raise XapiError("INTERNAL_ERROR", "Not_found")


def get_uncooperative_resident_VMs(ctx, session, self):  # noqa: N802 - the API's name
    _host(ctx, self)
    return []


# -- what a status report (xen-bugtool) can collect ------------------------------------------------
# (key, content type, checked by default, max size, PII) as xen-bugtool --capabilities lists them
_CAPABILITIES = (
    ("blobs", "text/plain", "yes", 5 << 20, "no"),
    ("disk-info", "text/plain", "yes", 128 << 10, "maybe"),
    ("hardware-info", "text/plain", "yes", 2 << 20, "maybe"),
    ("high-availability", "text/plain", "yes", 5 << 20, "maybe"),
    ("host-crashdump-logs", "text/plain", "no", -1, "maybe"),
    ("kernel-info", "text/plain", "yes", 256 << 10, "maybe"),
    ("multipath", "text/plain", "yes", 128 << 10, "maybe"),
    ("network-status", "text/plain", "yes", 128 << 10, "yes"),
    ("system-logs", "text/plain", "yes", 50 << 20, "maybe"),
    ("system-services", "text/plain", "yes", 128 << 10, "no"),
    ("xen-info", "text/plain", "yes", 128 << 10, "maybe"),
    ("xenserver-config", "text/plain", "yes", 256 << 10, "maybe"),
    ("xenserver-databases", "text/plain", "yes", 10 << 20, "yes"),
    ("xenserver-logs", "text/plain", "yes", 50 << 20, "maybe"),
)


def get_system_status_capabilities(ctx, session, host):
    """The XML document xen-bugtool --capabilities prints: one <capability> per kind of data."""
    _host(ctx, host)
    lines = ['<?xml version="1.0" ?>', "<system-status-capabilities>"]
    for key, ctype, checked, max_size, pii in _CAPABILITIES:
        lines.append(f'  <capability content-type="{ctype}" default-checked="{checked}" key="{key}" '
                     f'max-size="{max_size}" max-time="-1" min-size="-1" min-time="-1" pii="{pii}" />')
    lines.append("</system-status-capabilities>")
    return "\n".join(lines) + "\n"


# -- hostname --------------------------------------------------------------------------------------
def _check_hostname(hostname: str) -> None:
    if hostname == "":
        raise XapiError("HOST_NAME_INVALID", "hostname empty")
    if len(hostname) > 255:
        raise XapiError("HOST_NAME_INVALID", "hostname is too long")
    if hostname[0] == "-" or hostname[-1] == "-" or not set(hostname) <= _HOSTNAME_CHARS:
        raise XapiError("HOST_NAME_INVALID", "hostname contains invalid characters")


@internal.method("host_info.set_system_hostname")
async def _set_system_hostname(app, hostname: str) -> str:
    if app.config.backend == "sim":          # a simulated host's name is its database field
        return ""
    proc = await asyncio.create_subprocess_exec("hostname", hostname, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise XapiError("INTERNAL_ERROR", f"hostname: {err.decode(errors='replace').strip()}")
    return ""


async def set_hostname_live(ctx, session, host, hostname):
    app = ctx.app
    rec = _host(ctx, host)
    if rec["external_auth_type"] == "AD":     # the AD plugin does not survive a hostname change
        raise XapiError("AUTH_ALREADY_ENABLED", rec["external_auth_type"], rec["external_auth_service_name"])
    _check_hostname(hostname)
    await app.pool.call(host, "host_info.set_system_hostname", hostname)
    app.db.table("host").set_field(host, "hostname", hostname)
    vms = app.db.table("VM")
    for vm in vms.find("resident_on", host):
        if vms.get_field(vm, "is_control_domain"):
            name = vms.get_field(vm, "name_label")
            if name.startswith(_DOM0_STEM) and name != _DOM0_STEM + hostname:
                vms.set_field(vm, "name_label", _DOM0_STEM + hostname)
    return ""


# -- what xapi leaves unimplemented ----------------------------------------------------------------
def dmesg_clear(ctx, session, host):
    _host(ctx, host)
    raise XapiError("NOT_IMPLEMENTED", "dmesg_clear")


def get_log(ctx, session, host):
    _host(ctx, host)
    raise XapiError("NOT_IMPLEMENTED", "get_log")


def list_methods(ctx, session):
    raise XapiError("NOT_IMPLEMENTED", "list_method")


__all__ = ["get_servertime", "get_server_localtime", "compute_free_memory", "compute_memory_overhead",
           "get_management_interface", "get_uncooperative_resident_VMs", "get_system_status_capabilities",
           "set_hostname_live",
           "dmesg_clear", "get_log", "list_methods"]
