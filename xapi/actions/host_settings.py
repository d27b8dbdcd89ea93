"""host.* settings, as xapi_host.ml makes them:

* declare_dead: refused for a live host or this host (HOST_IS_LIVE [host]); its VMs other than control
  domains are reset to Halted (VM.power_state_reset: resident_on cleared, their VBDs/VIFs detached and
  their disks no longer held by the dead host), the host is disabled and its allowed_operations
  refreshed;
* set_power_on_mode: mode and config stored (both kept as given); the secrets the old config named
  (keys ending in password_secret) are destroyed, as Xapi_secret.clean_out_passwds; allowed_operations
  refreshed (power_on);
* get_sched_gran / set_sched_gran: Xen's sched-gran on the host's boot command line (effective at the
  next boot; absent means "cpu"), answered by the host itself; on a Xen host through xen-cmdline, on a
  simulated host in <data>/xen-cmdline, the simulated boot loader's;
* enable_display / disable_display: the console on the physical display, also a boot setting: the
  answer (and host.display) is enabled/disabled when the running state already matches, else
  enable_on_reboot/disable_on_reboot;
* set_multipathing, set_iscsi_iqn (not empty: INVALID_VALUE): the field and, for older readers,
  other_config:multipathing / other_config:iscsi_iqn;
* set_ssl_legacy: legacy SSL was removed from xapi: true is VALUE_NOT_SUPPORTED, false is stored;
* set_https_only: the field; on a Xen host the firewall's port 80 is closed/opened (firewall-port);
* apply_edition: XCP-ng has one edition, "xcp-ng"; any other is INVALID_EDITION [edition].
"""
from __future__ import annotations

import asyncio
import os
import shutil

from xapi import atomic
from xapi.actions import lookup
from xapi.datamodel.errors import XapiError
from xapi.pool import internal

SCHED_GRANS = ("cpu", "core", "socket")
EDITIONS = ("xcp-ng",)
XEN_CMDLINE = "/opt/xensource/libexec/xen-cmdline"
FIREWALL_PORT = "/etc/xapi.d/plugins/firewall-port"
_SIM_CMDLINE = "xen-cmdline"


def _host(ctx, host) -> dict:
    return lookup.record(ctx.app.db, "host", host)


async def _run(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise XapiError("INTERNAL_ERROR", f"{os.path.basename(argv[0])}: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


# -- declare_dead ----------------------------------------------------------------------------------
async def declare_dead(ctx, session, host):
    from xapi.actions import host_operations, vm as vm_mod
    app = ctx.app
    rec = _host(ctx, host)
    hm = app.db.table("host_metrics")
    alive = rec["metrics"] in hm and bool(hm.get_field(rec["metrics"], "live"))
    if alive or host == app.host_ref:
        raise XapiError("HOST_IS_LIVE", host)
    vms = app.db.table("VM")
    for vm in list(rec.get("resident_VMs") or []):
        if vm in vms and not vms.get_field(vm, "is_control_domain"):
            await vm_mod.power_state_reset(ctx, session, vm)
            await _release_dead_vm(app, vm, host)
    app.db.table("host").set_field(host, "enabled", False)
    host_operations.refresh(app.db, host)
    return ""


async def _release_dead_vm(app, vm: str, dead: str) -> None:
    """What xapi's force_state_reset does for a VM now Halted: its VBDs and VIFs detached; and its
    storage let go: the dead host can hold nothing any more (its sm-config host key dropped from the
    VM's VDIs, so another host may attach them read-write), this host's datapaths of it released.
    The dead host itself is not called."""
    from xapi.actions import vm_devices
    db = app.db
    vm_devices._holders(app).pop(vm, None)
    await vm_devices.release_datapaths(app, db.table("VM").get_field(vm, "uuid"))
    vbds, vifs, vdis = db.table("VBD"), db.table("VIF"), db.table("VDI")
    key = f"host_{dead}"
    for ref in db.table("VM").get_field(vm, "VBDs") or []:
        if ref not in vbds:
            continue
        if vbds.get_field(ref, "currently_attached"):
            vbds.set_field(ref, "currently_attached", False)
        vdi = vbds.get_field(ref, "VDI")
        if vdi in vdis and key in vdis.get_field(vdi, "sm_config"):
            vdis.set_field(vdi, "sm_config", {k: v for k, v in vdis.get_field(vdi, "sm_config").items() if k != key})
    for ref in db.table("VM").get_field(vm, "VIFs") or []:
        if ref in vifs and vifs.get_field(ref, "currently_attached"):
            vifs.set_field(ref, "currently_attached", False)
    vm_devices.refresh_operations(db, vm)


# -- power on --------------------------------------------------------------------------------------
def set_power_on_mode(ctx, session, self, power_on_mode, power_on_config):
    db = ctx.app.db
    old = dict(_host(ctx, self)["power_on_config"] or {})
    db.table("host").update(self, {"power_on_mode": power_on_mode, "power_on_config": dict(power_on_config)})
    secrets = db.table("secret")
    for key, uuid in old.items():
        if key.endswith("password_secret"):
            for ref in secrets.find("uuid", uuid):
                secrets.remove(ref)
    from xapi.actions import host_operations
    host_operations.refresh(db, self)          # power_on follows the mode (xapi: update_allowed_operations)
    return ""


# -- boot command line: sched-gran and the display -------------------------------------------------
def _sim_path(app) -> str:
    return os.path.join(app.config.data_dir, _SIM_CMDLINE)


def _sim_read(app) -> dict:
    try:
        with open(_sim_path(app)) as f:
            entries = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    except FileNotFoundError:
        entries = {}
    # what the simulated host booted with: the file as it was when this daemon first read it
    app.__dict__.setdefault("_booted_cmdline", dict(entries))
    return entries


def _sim_write(app, entries: dict) -> None:
    _sim_read(app)
    atomic.write_file(_sim_path(app), "".join(f"{k}={v}\n" for k, v in sorted(entries.items())).encode(), 0o644)


def _real_xen(app) -> bool:
    return app.config.backend != "sim"


@internal.method("host_settings.get_sched_gran")
async def _get_sched_gran(app) -> str:
    if _real_xen(app):
        if not shutil.which(XEN_CMDLINE):
            raise XapiError("INTERNAL_ERROR", f"{XEN_CMDLINE} not found")
        out = (await _run(XEN_CMDLINE, "--get-xen", "sched-gran")).strip()
        value = out.split("=", 1)[1] if "=" in out else ""
    else:
        value = _sim_read(app).get("sched-gran", "")
    return value or "cpu"


@internal.method("host_settings.set_sched_gran")
async def _set_sched_gran(app, value: str) -> str:
    if _real_xen(app):
        if not shutil.which(XEN_CMDLINE):
            raise XapiError("INTERNAL_ERROR", f"{XEN_CMDLINE} not found")
        await _run(XEN_CMDLINE, "--set-xen", f"sched-gran={value}")
    else:
        _sim_write(app, {**_sim_read(app), "sched-gran": value})
    return ""


async def get_sched_gran(ctx, session, self):
    _host(ctx, self)
    return await ctx.app.pool.call(self, "host_settings.get_sched_gran")


async def set_sched_gran(ctx, session, self, value):
    _host(ctx, self)
    if value not in SCHED_GRANS:
        raise XapiError("INVALID_VALUE", "value", value)
    await ctx.app.pool.call(self, "host_settings.set_sched_gran", value)
    return ""


@internal.method("host_settings.display")
async def _display(app, enable: bool) -> str:
    """The display's boot setting changed; answers the host_display state that results."""
    if _real_xen(app):
        raise XapiError("INTERNAL_ERROR", "the physical display is not managed on this host")
    entries = _sim_read(app)
    booted_on = app.__dict__["_booted_cmdline"].get("display", "on") == "on"
    _sim_write(app, {**entries, "display": "on" if enable else "off"})
    if enable:
        return "enabled" if booted_on else "enable_on_reboot"
    return "disable_on_reboot" if booted_on else "disabled"


async def _set_display(ctx, host, enable: bool) -> str:
    _host(ctx, host)
    state = await ctx.app.pool.call(host, "host_settings.display", enable)
    ctx.app.db.table("host").set_field(host, "display", state)
    return state


async def enable_display(ctx, session, host):
    return await _set_display(ctx, host, True)


async def disable_display(ctx, session, host):
    return await _set_display(ctx, host, False)


# -- storage initiator settings --------------------------------------------------------------------
def _set_with_other_config(ctx, host, field: str, value, text: str) -> None:
    rec = _host(ctx, host)
    other = {k: v for k, v in (rec["other_config"] or {}).items() if k != field}
    ctx.app.db.table("host").update(host, {field: value, "other_config": {**other, field: text}})


def set_multipathing(ctx, session, host, value):
    _set_with_other_config(ctx, host, "multipathing", bool(value), "true" if value else "false")
    return ""


def set_iscsi_iqn(ctx, session, host, value):
    _host(ctx, host)
    if value == "":
        raise XapiError("INVALID_VALUE", "value", value)
    _set_with_other_config(ctx, host, "iscsi_iqn", value, value)
    return ""


# -- TLS and the plain HTTP port -------------------------------------------------------------------
def set_ssl_legacy(ctx, session, self, value):
    _host(ctx, self)
    if value:
        raise XapiError("VALUE_NOT_SUPPORTED", "value", "true", "Legacy SSL support has been removed")
    ctx.app.db.table("host").set_field(self, "ssl_legacy", False)
    return ""


@internal.method("host_settings.https_only")
async def _https_only(app, value: bool) -> str:
    if _real_xen(app) and os.access(FIREWALL_PORT, os.X_OK):
        await _run(FIREWALL_PORT, "close" if value else "open", "80")
    return ""


async def set_https_only(ctx, session, self, value):
    _host(ctx, self)
    await ctx.app.pool.call(self, "host_settings.https_only", bool(value))
    ctx.app.db.table("host").set_field(self, "https_only", bool(value))
    return ""


# -- licensing -------------------------------------------------------------------------------------
def apply_edition(ctx, session, host, edition, force):
    _host(ctx, host)
    if edition not in EDITIONS:
        raise XapiError("INVALID_EDITION", edition)
    ctx.app.db.table("host").set_field(host, "edition", edition)
    return ""


__all__ = ["declare_dead", "set_power_on_mode", "get_sched_gran", "set_sched_gran", "enable_display",
           "disable_display", "set_multipathing", "set_iscsi_iqn", "set_ssl_legacy", "set_https_only",
           "apply_edition"]
