"""The records xe shows: for each class, the fields of xapi's CLI record (xapi-cli-server/records.ml)
under xe's names, in its order, with its kinds and derivations.

A field is read from the object's API record (a datamodel field, formatted by its datamodel type), from
a related record (VM_metrics, VM_guest_metrics, host_metrics, PIF_metrics), from the object a reference
points at (`vm-name-label`), or from an API call (`possible-hosts`, `allowed-VBD-devices`...). Its kind
is what records.ml gives it, which is what xe prints after the name: ` ( RO)`/` ( RW)` for a plain
field, `(SRO)`/`(SRW)` for a set with a member list, `(MRO)`/`(MRW)` for a map with a key list (a set
or map without one, like VM `snapshots`, prints as a plain field). `hidden` fields show only when asked
for by param-get; `expensive` ones show as `<expensive field>` in `<class>-list`.

The tables themselves are xapi.cli.record_tables; classes records.ml has no table for here get one
generated from the datamodel (`from_datamodel`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Awaitable, Callable
from xmlrpc.client import DateTime

from xapi import datamodel as dm
from xapi.datamodel.errors import XapiError

NULL_REF = "OpaqueRef:NULL"
NID = "<not in database>"               # records.ml's nid
UNKNOWN_TIME = "<unknown time>"


class RecordFailure(Exception):
    """records.ml's Record_failure and cli_operations' failwith: xe prints `Error: <message>`."""


# -- xe's spelling of enum values (record_util.ml); anything else is spelled as the datamodel does ----
ENUM_TEXT: dict[str, dict[str, str]] = {
    "vdi_type": {"system": "System", "user": "User", "ephemeral": "Ephemeral", "suspend": "Suspend",
                 "crashdump": "Crashdump", "ha_statefile": "HA statefile", "metadata": "Metadata",
                 "redo_log": "Redo log", "rrd": "rrd", "pvs_cache": "PVS cache", "cbt_metadata": "CBT metadata"},
    "vm_power_state": {"Halted": "halted", "Paused": "paused", "Running": "running", "Suspended": "suspended",
                       "ShuttingDown": "shutting down", "Migrating": "migrating"},
    "on_normal_exit": {"destroy": "Destroy", "restart": "Restart"},
    "on_crash_behaviour": {"destroy": "Destroy", "coredump_and_destroy": "Core dump and destroy",
                           "restart": "Restart", "coredump_and_restart": "Core dump and restart",
                           "preserve": "Preserve", "rename_restart": "Rename restart"},
    "task_allowed_operations": {"cancel": "Cancel", "destroy": "Destroy"},
    "host_allowed_operations": {"vm_start": "VM.start", "vm_resume": "VM.resume", "vm_migrate": "VM.migrate"},
    "storage_operations": {"vdi_create": "VDI.create", "vdi_introduce": "VDI.introduce",
                           "vdi_destroy": "VDI.destroy", "vdi_resize": "VDI.resize", "vdi_clone": "VDI.clone",
                           "vdi_snapshot": "VDI.snapshot", "vdi_mirror": "VDI.mirror",
                           "vdi_enable_cbt": "VDI.enable_cbt", "vdi_disable_cbt": "VDI.disable_cbt",
                           "vdi_set_on_boot": "VDI.set_on_boot", "vdi_data_destroy": "VDI.data_destroy",
                           "vdi_list_changed_blocks": "VDI.list_changed_blocks", "pbd_create": "PBD.create",
                           "pbd_destroy": "PBD.destroy"},
    "domain_type": {"pv_in_pvh": "pv-in-pvh"},
    "console_protocol": {"vt100": "VT100", "rfb": "RFB", "rdp": "RDP"},
    "tristate_type": {"yes": "true", "no": "false"},
}
# record_util's vm_operation_table: the operations xe knows by name; any other is "(unknown operation)"
VM_OPERATIONS = {
    "assert_operation_valid": "assertoperationvalid", "data_source_op": "data_sources_op",
    **{op: op for op in (
        "changing_dynamic_range", "changing_static_range", "changing_shadow_memory", "clean_reboot",
        "clean_shutdown", "clone", "snapshot", "checkpoint", "snapshot_with_quiesce", "copy", "revert",
        "reverting", "provision", "destroy", "export", "metadata_export", "import", "get_boot_record",
        "hard_reboot", "hard_shutdown", "migrate_send", "pause", "resume", "resume_on", "changing_VCPUs_live",
        "changing_NVRAM", "start", "start_on", "suspend", "unpause", "update_allowed_operations",
        "make_into_template", "send_sysrq", "send_trigger", "changing_memory_live", "awaiting_memory_live",
        "changing_shadow_memory_live", "pool_migrate", "power_state_reset", "csvm", "call_plugin")},
}


def enum_text(name: str, v: str) -> str:
    if name == "vm_operations":
        return VM_OPERATIONS.get(v, "(unknown operation)")
    return ENUM_TEXT.get(name, {}).get(v, v)


def enum_value(t, text: str) -> str:
    """The wire value of an enum typed by a user: its xe spelling or its datamodel name, any case."""
    low = text.lower()
    table = VM_OPERATIONS if t.name == "vm_operations" else ENUM_TEXT.get(t.name, {})
    for wire, shown in table.items():
        if shown.lower() == low:
            return wire
    for wire in dm.ENUMS.get(t.name, ()):
        if wire.lower() == low:
            return wire
    if t.name == "vm_operations":       # record_util.string_to_vm_operation
        raise XapiError("INVALID_VALUE", "blocked_operation", text)
    if t.name in PARSE_ERRORS:
        raise RecordFailure(PARSE_ERRORS[t.name] + text)
    return text


# record_util's words for an enum value it can't parse (string_to_*), before the value typed
PARSE_ERRORS = {
    "on_normal_exit": "Expected 'destroy' or 'restart', got ",
    "on_crash_behaviour": "Expected 'destroy', 'coredump_and_destroy','restart', 'coredump_and_restart', "
                          "'preserve' or 'rename_restart', got ",
    "on_boot": "Expected 'persist' or 'reset', got ",
    "vbd_mode": "Expected 'RO' or 'RW', got ",
    "vbd_type": "Expected 'CD' or 'Disk', got ",
    "vif_locking_mode": "Expected 'network_default', 'locked', 'unlocked', 'disabled', got ",
    "network_default_locking_mode": "Expected 'unlocked' or 'disabled', got ",
    "domain_type": "Invalid domain type. Got ",
    "network_purpose": "Expected a network purpose string; got ",
}


# -- the object being shown ----------------------------------------------------------------------------
class View:
    """One object's record and what its fields derive from, fetched once (records.ml's lazy caches)."""

    def __init__(self, run, cls: str, ref: str, rec: dict) -> None:
        self.run = run
        self.cls = cls
        self.ref = ref
        self.rec = rec
        self._related: dict[str, dict | None] = {}

    async def call(self, method: str, *args):
        return await self.run.call(method, *args)

    async def related(self, field: str, cls: str) -> dict | None:
        """The record of the object rec[field] points at, or None (no such object, as records.ml's
        `try ... with _ -> None`)."""
        if field not in self._related:
            ref = self.rec.get(field)
            rec = None
            if isinstance(ref, str) and ref.startswith("OpaqueRef:") and ref != NULL_REF:
                try:
                    rec = await self.call(f"{cls}.get_record", ref)
                except XapiError:
                    rec = None
            self._related[field] = rec
        return self._related[field]


async def text(run, t, v, sep: str = "; ") -> str:
    """A value as records.ml prints it: sets joined by sep, maps as `k: v; k2: v2`, references as the
    uuid they point at, floats with three decimals, enums in record_util's spelling."""
    kind = t.kind
    if kind == "option":
        return "" if v is None else await text(run, t.elem, v, sep)
    if kind == "map":
        if not isinstance(v, dict):
            return str(v)
        return "; ".join([f"{await text(run, t.key, k)}: {await text(run, t.elem, x)}" for k, x in v.items()])
    if kind == "set":
        if not isinstance(v, (list, tuple)):
            return str(v)
        return sep.join([await text(run, t.elem, x) for x in v])
    if kind == "ref":
        return await run.uuid_of(t.name, v)
    if kind == "bool":
        return "true" if v else "false"
    if kind == "float":
        try:
            return "%.3f" % float(v)
        except (TypeError, ValueError):
            return str(v)
    if kind == "enum" and isinstance(v, str):
        return enum_text(t.name, v)
    if isinstance(v, DateTime):
        return v.value
    if v is None:
        return ""
    return str(v)


async def members(run, t, v) -> list[str]:
    """A set's members as xe shows each one (get_set)."""
    if t.kind == "option":
        t = t.elem
    if not isinstance(v, (list, tuple)):
        return []
    return [await text(run, t.elem, x) for x in v]


async def pairs(run, t, v) -> dict[str, str]:
    """A map's keys and values as xe shows them (get_map)."""
    if t.kind == "option":
        t = t.elem
    if not isinstance(v, dict):
        return {}
    return {await text(run, t.key, k): await text(run, t.elem, x) for k, x in v.items()}


# -- fields ----------------------------------------------------------------------------------------------
Getter = Callable[[View], Awaitable[str]]


@dataclass
class Field:
    name: str
    get: Getter
    get_set: Callable[[View], Awaitable[list[str]]] | None = None
    get_map: Callable[[View], Awaitable[dict[str, str]]] | None = None
    set: Callable[[View, str], Awaitable] | None = None
    add_to_set: Callable[[View, str], Awaitable] | None = None
    remove_from_set: Callable[[View, str], Awaitable] | None = None
    add_to_map: Callable[[View, str, str], Awaitable] | None = None
    remove_from_map: Callable[[View, str], Awaitable] | None = None
    set_in_map: Callable[[View, str, str], Awaitable] | None = None
    set_map: Callable[[View, dict], Awaitable] | None = None
    clear_map: Callable[[View], Awaitable] | None = None
    expensive: bool = False
    hidden: bool = False
    deprecated: bool = False
    case_insensitive: bool = False
    enum: bool = False          # filters on it take any case (power-state=Halted)

    @property
    def label(self) -> str:
        """`name (kind)` as cli_operations.print_field writes it."""
        if self.get_set is not None:
            kind = "(SRO)" if self.add_to_set is None else "(SRW)"
        elif self.get_map is not None:
            kind = "(MRO)" if self.add_to_map is None else "(MRW)"
        else:
            kind = "( RO)" if self.set is None else "( RW)"
        return f"{self.name} {kind}" + (" [DEPRECATED]" if self.deprecated else "")


# -- conversions of what the user typed (records.ml's safe_*_of_string, record_util.bytes_of_string) -------
def to_int(name: str, s: str) -> int:
    try:
        return int(s)
    except ValueError:
        raise RecordFailure(f"Failed to parse parameter '{name}': expecting an integer") from None


def to_bool(name: str, s: str) -> bool:
    if s not in ("true", "false"):
        raise RecordFailure(f"Failed to parse parameter '{name}': expecting a boolean (true or false)")
    return s == "true"


def to_bytes(name: str, s: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([^\s\d]*)\s*", s)
    if m is None:
        raise RecordFailure(f"Failed to parse field '{name}': expecting an integer (possibly with suffix)")
    units = {"": 1, "bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
    if m.group(2) not in units:
        raise RecordFailure(f"Failed to parse field '{name}': Unknown suffix: '{m.group(2)}' "
                            "(try KiB, MiB, GiB or TiB)")
    return int(m.group(1)) * units[m.group(2)]


async def convert(view: View, name: str, t, s: str, how: str | None = None):
    """The API value for a field of type t from the text s."""
    kind = t.kind
    if kind == "option":
        t, kind = t.elem, t.elem.kind
    if how == "bytes":
        return str(to_bytes(name, s))
    if kind == "int":
        return str(to_int(name, s))
    if kind == "float":
        try:
            return float(s)
        except ValueError:
            raise RecordFailure(f"Parameter {name} must be a floating-point number") from None
    if kind == "bool":
        return to_bool(name, s)
    if kind == "enum":
        return enum_value(t, s)
    if kind == "ref":
        if s == "":
            return NULL_REF
        cls = dm.CLASS_BY_LOWER.get(t.name.lower(), t.name)
        return await view.call(f"{cls}.get_by_uuid", s)
    if kind == "set":
        return [await convert(view, name, t.elem, w) for w in s.split(",") if s != ""]
    return s


# -- the builders the tables use ---------------------------------------------------------------------------
class Builder:
    """Makes the fields of one class's table; `own` fields come from the class's datamodel fields."""

    def __init__(self, cls: str) -> None:
        self.cls = cls
        self.c = dm.CLASSES[cls]
        self.fields: list[Field] = []

    def _add(self, f: Field) -> Field:
        self.fields.append(f)
        return f

    def own(self, name: str, field: str, kind: str = "RO", *, sep: str = "; ", how: str | None = None,
            setter: str | None = None, values: bool = False, **flags) -> Field:
        """A field of the record. kind: RO, RW (set_<field>), SRO/SRW (a member list; SRW adds and
        removes with add_<field>/remove_<field>), MRO/MRW (a key list; MRW with add_to_<field>/
        remove_from_<field>). values=True shows a map's values only (current-operations)."""
        t = self.c.fields[field].type
        cls = self.cls
        if values:
            async def get(v: View) -> str:
                m = v.rec.get(field) or {}
                return "; ".join([await text(v.run, t.elem, x) for x in m.values()])

            async def get_set(v: View) -> list[str]:
                m = v.rec.get(field) or {}
                return [await text(v.run, t.elem, x) for x in m.values()]
        else:
            async def get(v: View) -> str:
                return await text(v.run, t, v.rec.get(field), sep)

            async def get_set(v: View) -> list[str]:
                return await members(v.run, t, v.rec.get(field))

        async def get_map(v: View) -> dict[str, str]:
            return await pairs(v.run, t, v.rec.get(field))

        f = Field(name, get, enum=t.kind == "enum", **flags)
        if kind in ("SRO", "SRW"):
            f.get_set = get_set
        if kind in ("MRO", "MRW"):
            f.get_map = get_map
        if kind == "RW" or setter:
            method = setter or f"set_{field}"

            async def set_(v: View, s: str) -> None:
                await v.call(f"{cls}.{method}", v.ref, await convert(v, name, t, s, how))
            f.set = set_
        if kind == "SRW":
            async def add(v: View, s: str) -> None:
                await v.call(f"{cls}.add_{field}", v.ref, await convert(v, name, t.elem, s))

            async def remove(v: View, s: str) -> None:
                await v.call(f"{cls}.remove_{field}", v.ref, await convert(v, name, t.elem, s))
            f.add_to_set, f.remove_from_set = add, remove
        if kind == "MRW":
            async def add_to(v: View, k: str, s: str) -> None:
                key = enum_value(t.key, k) if t.key.kind == "enum" else k
                await v.call(f"{cls}.add_to_{field}", v.ref, key, s)

            async def remove_from(v: View, k: str) -> None:
                key = enum_value(t.key, k) if t.key.kind == "enum" else k
                await v.call(f"{cls}.remove_from_{field}", v.ref, key)
            f.add_to_map, f.remove_from_map = add_to, remove_from
        return self._add(f)

    def rel(self, name: str, field: str, rel_cls: str, rel_field: str, kind: str = "RO", *, none: str = NID,
            **flags) -> Field:
        """A field of a related record (VM_metrics.memory_actual as memory-actual); `none` when the record
        is missing; MRO for a map with a key list."""
        t = dm.CLASSES[rel_cls].fields[rel_field].type

        async def get(v: View) -> str:
            r = await v.related(field, rel_cls)
            return none if r is None else await text(v.run, t, r.get(rel_field))

        async def get_map(v: View) -> dict[str, str]:
            r = await v.related(field, rel_cls)
            return {} if r is None else await pairs(v.run, t, r.get(rel_field))
        return self._add(Field(name, get, get_map=get_map if kind == "MRO" else None, **flags))

    def ref_name(self, name: str, field: str, **flags) -> Field:
        """The name-label of the object a reference points at (records.ml's get_name_from_ref)."""
        t = self.c.fields[field].type

        async def get(v: View) -> str:
            return await v.run.name_of(t.name, v.rec.get(field))
        return self._add(Field(name, get, **flags))

    def derived(self, name: str, get: Getter, **kw) -> Field:
        return self._add(Field(name, get, **kw))


def from_datamodel(c: dm.Class) -> list[Field]:
    """A class records.ml has no table for here: its datamodel fields under hyphenated names, uuid
    first, kinds from the messages it has (set_, add_to_/remove_from_, add_/remove_)."""
    b = Builder(c.name)
    names = ["uuid"] + [n for n in c.fields if n != "uuid"]
    for n in names:
        f = c.fields[n]
        kind = f.type.elem.kind if f.type.kind == "option" else f.type.kind
        if kind == "map":
            mode = "MRW" if f"add_to_{n}" in c.messages else "MRO"
        elif kind == "set":
            mode = "SRW" if f"add_{n}" in c.messages else "SRO"
        else:
            mode = "RW" if f"set_{n}" in c.messages else "RO"
        b.own(n.replace("_", "-"), n, mode)
    # hidden `<reference>-uuid` / `-name-label` fields, for filters such as vm-uuid=
    for n, f in c.fields.items():
        if f.type.kind == "ref" and n != "uuid":
            name = n.replace("_", "-").lower()
            if name + "-uuid" not in (x.name for x in b.fields):
                b.own(name + "-uuid", n, hidden=True)
                b.ref_name(name + "-name-label", n, hidden=True)
    return b.fields


_CACHE: dict[str, list[Field]] = {}


def fields(prefix: str, c: dm.Class) -> list[Field]:
    """The record of an xe class prefix (vm, template, host-cpu...) or of the datamodel class c."""
    from xapi.cli.record_tables import TABLES     # here: the tables are made with this module's Builder
    key = prefix if prefix in TABLES else "dm:" + c.name
    if key not in _CACHE:
        _CACHE[key] = TABLES[prefix]() if prefix in TABLES else from_datamodel(c)
    return _CACHE[key]
