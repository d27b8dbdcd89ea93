"""Settings of a running VM, through the xenopsd of the host it runs on (xapi_vm.ml, xapi_xenops.ml,
message_forwarding.ml's operations):

* set_VCPUs_number_live (op changing_VCPUs_live, Running): xenopsd's VM.set_vcpus hot-plugs vCPUs
  (cpu/<i>/availability); outside 1..VCPUs_max INVALID_VALUE ["VCPU values must satisfy: 0 < VCPUs
  ≤ VCPUs_max", VCPUs_max] as xenopsd's Invalid_vcpus; then VCPUs_at_startup and
  VM_metrics.VCPUs_number follow and the memory overhead is recomputed;
* add_to_VCPUs_params_live: xapi checks the operation, then answers NOT_IMPLEMENTED;
* set_shadow_multiplier_live (Running; INVALID_VALUE below 1.0): xenopsd resizes the shadow
  allocation (HOST_NOT_ENOUGH_FREE_MEMORY when it does not fit); a PV domain has none and xapi ignores
  that; HVM_shadow_multiplier takes the value in effect, the overhead follows;
* wait_memory_target_live (Running): polls the domain once a second until its memory is within 1 MiB
  of its target, then VM_metrics.memory_actual takes it; VM_MEMORY_TARGET_WAIT_TIMEOUT [task] after
  256 s (Xapi_globs.wait_memory_target_timeout); a cancelled task stops the wait;
* call_plugin: only "guest-agent-operation" (else XENAPI_MISSING_PLUGIN [plugin]), one call per VM
  per 10 s (VM_CALL_PLUGIN_RATE_LIMIT [vm, interval, wait]); request-rdp-on/off need the guest's
  feature-ts2 (else XENAPI_PLUGIN_FAILURE); run-script is off by default in xapi (FEATURE_RESTRICTED).
"""
from __future__ import annotations

import asyncio
import time

from xapi.actions import vm as vm_mod
from xapi.actions import vm_settings
from xapi.datamodel.errors import XapiError
from xapi.xenops.server import XenopsError

VCPU_LIVE_RULE = "VCPU values must satisfy: 0 < VCPUs \u2264 VCPUs_max"
WAIT_MEMORY_TARGET_TIMEOUT = 256            # seconds, Xapi_globs.wait_memory_target_timeout
WAIT_MEMORY_TARGET_TOLERANCE = 1 << 20      # bytes, xapi_vm.ml wait_memory_target_tolerance_bytes
CALL_PLUGIN_INTERVAL = 10.0                 # seconds, Xapi_globs.vm_call_plugin_interval
GUEST_AGENT_PLUGIN = "guest-agent-operation"


def _running(ctx, vm: str) -> dict:
    """Xapi_vm_lifecycle's power check for the live operations: Running only."""
    rec = vm_mod._rec(ctx.app.db, vm)
    if rec["power_state"] != "Running":
        raise XapiError("VM_BAD_POWER_STATE", vm, "running", rec["power_state"].lower())
    return rec


def _xenops(ctx, rec: dict):
    return vm_mod.xenops_of(ctx.app, vm_mod.home(ctx.app, rec))


# -- vCPUs -----------------------------------------------------------------------------------------
async def set_VCPUs_number_live(ctx, session, self, nvcpu):  # noqa: N802 - the API's name
    app = ctx.app
    n = int(nvcpu)

    async def body(rec, _progress):
        try:
            await _xenops(ctx, rec).call("VM.set_vcpus", rec["uuid"], n)
        except XenopsError as e:
            if e.code == "INVALID_VCPUS":
                raise XapiError("INVALID_VALUE", VCPU_LIVE_RULE, *e.params) from None
            raise
        vms = app.db.table("VM")
        vms.set_field(self, "VCPUs_at_startup", n)
        mt = app.db.table("VM_metrics")
        metrics = vms.get_field(self, "metrics")
        if metrics in mt:
            mt.set_field(metrics, "VCPUs_number", n)
        vm_settings._update_overhead(ctx, self)
        return ""
    return await vm_mod._operation(ctx, self, "changing_VCPUs_live", body)


def add_to_VCPUs_params_live(ctx, session, self, key, value):  # noqa: N802 - the API's name
    vm_mod._assert(ctx.app.db, self, "changing_VCPUs_live")
    raise XapiError("NOT_IMPLEMENTED", "add_to_VCPUs_params_live")


# -- shadow memory ---------------------------------------------------------------------------------
async def set_shadow_multiplier_live(ctx, session, self, multiplier):
    app = ctx.app
    _running(ctx, self)
    multiplier = float(multiplier)
    if multiplier < 1.0:
        raise XapiError("INVALID_VALUE", "multiplier", vm_settings._ocaml_float(multiplier))

    async def body(rec, _progress):
        try:
            effective = await _xenops(ctx, rec).call("VM.set_shadow_multiplier", rec["uuid"], multiplier)
        except XenopsError as e:
            if e.code != "UNIMPLEMENTED":      # a PV domain: xapi logs it and goes on
                raise
        else:
            app.db.table("VM").set_field(self, "HVM_shadow_multiplier", float(effective))
        vm_settings._update_overhead(ctx, self)
        return ""
    return await vm_mod._operation(ctx, self, "changing_shadow_memory_live", body)


# -- memory target ---------------------------------------------------------------------------------
async def wait_memory_target_live(ctx, session, self):
    app = ctx.app
    task = vm_mod._current_task(app) or ""
    waited = 0
    while True:
        rec = _running(ctx, self)
        try:
            st = await _xenops(ctx, rec).call("VM.stat", rec["uuid"])
        except XenopsError as e:
            raise XapiError(e.code, *e.params) from None
        actual, target = int(st.get("memory", 0)), int(st.get("memory_target", 0))
        if abs(actual - target) <= WAIT_MEMORY_TARGET_TOLERANCE:
            mt = app.db.table("VM_metrics")
            if rec["metrics"] in mt:
                mt.set_field(rec["metrics"], "memory_actual", actual)
            return ""
        if waited >= WAIT_MEMORY_TARGET_TIMEOUT:
            raise XapiError("VM_MEMORY_TARGET_WAIT_TIMEOUT", task)
        await asyncio.sleep(1.0)            # a cancelled task ends here (TASK_CANCELLED)
        waited += 1


# -- guest agent plugin ----------------------------------------------------------------------------
def _rate_limit(app, vm: str) -> None:
    """record_call_plugin_latest: at most one call per VM and interval, on this host."""
    latest = app.__dict__.setdefault("_vm_call_plugin_latest", {})
    now = time.monotonic()
    for v, t in list(latest.items()):
        if now - t > CALL_PLUGIN_INTERVAL:
            del latest[v]
    if vm in latest:
        wait = latest[vm] + CALL_PLUGIN_INTERVAL - now
        raise XapiError("VM_CALL_PLUGIN_RATE_LIMIT", vm, repr(CALL_PLUGIN_INTERVAL), repr(round(wait, 6)))
    latest[vm] = now


def _has_feature_ts2(db, rec: dict) -> bool:
    gt = db.table("VM_guest_metrics")
    if rec.get("guest_metrics") not in gt:
        return False
    return (gt.get_field(rec["guest_metrics"], "other") or {}).get("feature-ts2", "") not in ("", "0")


async def call_plugin(ctx, session, vm, plugin, fn, args):
    app = ctx.app
    rec = vm_mod._rec(app.db, vm)
    if plugin != GUEST_AGENT_PLUGIN:
        raise XapiError("XENAPI_MISSING_PLUGIN", plugin)
    _rate_limit(app, vm)
    if fn in ("request-rdp-on", "request-rdp-off"):
        if rec["power_state"] != "Running" or not _has_feature_ts2(app.db, rec):
            msg = (f'The requested fn "{fn}" of plugin "{plugin}" could not be executed for lack of guest '
                   f"agent control feature.")
            raise XapiError("XENAPI_PLUGIN_FAILURE", "failed to execute fn", msg, msg)
        await _xenops(ctx, rec).call("VM.request_rdp", rec["uuid"], fn == "request-rdp-on")
        return ""
    if fn == "run-script":
        raise XapiError("FEATURE_RESTRICTED")
    msg = f'The requested fn "{fn}" could not be found in plugin "{plugin}".'
    raise XapiError("XENAPI_PLUGIN_FAILURE", "failed to find fn", msg, msg)


__all__ = ["set_VCPUs_number_live", "add_to_VCPUs_params_live", "set_shadow_multiplier_live",
           "wait_memory_target_live", "call_plugin"]
