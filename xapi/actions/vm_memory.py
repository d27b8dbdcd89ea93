"""A VM's memory limits: VM.set_memory_limits, set_memory_static_range, set_memory_dynamic_range,
set_memory and the check of VM.create (xapi_vm.ml, vm_memory_constraints.ml, xapi_vm_helpers.ml).

The setters need static_min <= dynamic_min <= dynamic_max <= static_max (xapi with dynamic memory
control, which XCP-ng has): MEMORY_CONSTRAINT_VIOLATION [the constraint's text] otherwise. VM.create
is more lenient, as xapi's validate_memory: the dynamic limits may lie outside the static ones (they
are clamped when used), only a maximum below its minimum fails (MEMORY_CONSTRAINT_VIOLATION []).
"""
from __future__ import annotations

from xapi.actions import vm as vm_mod
from xapi.datamodel.errors import XapiError

ORDER = "Memory limits must satisfy: static_min \u2264 dynamic_min \u2264 dynamic_max \u2264 static_max"


def _int(value, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise XapiError("FIELD_TYPE_ERROR", name) from None


def check_create(args: dict) -> None:
    names = ("memory_static_min", "memory_dynamic_min", "memory_dynamic_max", "memory_static_max")
    if not all(n in args for n in names):
        return                          # the generic constructor reports the missing field
    smin, dmin, dmax, smax = (_int(args[n], n) for n in names)
    if smax < smin or dmax < dmin:
        raise XapiError("MEMORY_CONSTRAINT_VIOLATION")


def _assert_order(smin: int, dmin: int, dmax: int, smax: int) -> None:
    if not smin <= dmin <= dmax <= smax:
        raise XapiError("MEMORY_CONSTRAINT_VIOLATION", ORDER)


def _halted(rec: dict, ref: str) -> None:
    if rec["power_state"] != "Halted":
        raise XapiError("VM_BAD_POWER_STATE", ref, "halted", rec["power_state"].lower())


def _write(db, ref: str, values: dict) -> None:
    db.table("VM").update(ref, {k: int(v) for k, v in values.items()})


def set_memory_limits(ctx, session, self, static_min, static_max, dynamic_min, dynamic_max):
    db = ctx.app.db
    rec = vm_mod._rec(db, self)
    _halted(rec, self)
    _assert_order(int(static_min), int(dynamic_min), int(dynamic_max), int(static_max))
    _write(db, self, {"memory_static_min": static_min, "memory_static_max": static_max,
                      "memory_dynamic_min": dynamic_min, "memory_dynamic_max": dynamic_max})
    return ""


def set_memory_static_range(ctx, session, self, min, max):  # noqa: A002 - the API's names
    db = ctx.app.db
    vm_mod._assert(db, self, "changing_static_range")
    rec = vm_mod._rec(db, self)
    _assert_order(int(min), rec["memory_dynamic_min"], rec["memory_dynamic_max"], int(max))
    _write(db, self, {"memory_static_min": min, "memory_static_max": max})
    return ""


def set_memory_dynamic_range(ctx, session, self, min, max):  # noqa: A002 - the API's names
    db = ctx.app.db
    vm_mod._assert(db, self, "changing_dynamic_range")
    rec = vm_mod._rec(db, self)
    _assert_order(rec["memory_static_min"], int(min), int(max), rec["memory_static_max"])
    _write(db, self, {"memory_dynamic_min": min, "memory_dynamic_max": max})
    return ""


def set_memory(ctx, session, self, value):
    """All of static max and the dynamic range at `value`; static min stays."""
    rec = vm_mod._rec(ctx.app.db, self)
    return set_memory_limits(ctx, session, self, rec["memory_static_min"], value, value, value)


def _single(field: str, setter):
    """set_memory_static_max and friends: one bound changed through its range setter."""
    def call(ctx, session, self, value):
        rec = vm_mod._rec(ctx.app.db, self)
        lo, hi = (("memory_static_min", "memory_static_max") if "static" in field
                  else ("memory_dynamic_min", "memory_dynamic_max"))
        bounds = {lo: rec[lo], hi: rec[hi], field: int(value)}
        return setter(ctx, session, self, bounds[lo], bounds[hi])
    call.__name__ = f"set_{field}"
    return call


set_memory_static_min = _single("memory_static_min", set_memory_static_range)
set_memory_static_max = _single("memory_static_max", set_memory_static_range)
set_memory_dynamic_min = _single("memory_dynamic_min", set_memory_dynamic_range)
set_memory_dynamic_max = _single("memory_dynamic_max", set_memory_dynamic_range)
