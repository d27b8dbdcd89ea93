"""The xe commands: generated from the datamodel for every class with uuids (`<class>-list`,
`-param-list`, `-param-get`, `-param-set`, `-param-add`, `-param-remove`, `-param-clear`), `help`, and
the hand-written ones of xapi.cli.ops_* and xapi.cli.transfer (registered in xapi.cli.cmdtable). `Run`
is one command's run: its arguments, the object selectors and filters, the printer. Every XenAPI call
goes through the RPC layer's dispatch (arity, types, session, RBAC, events, audit) with the CLI session.

Filters and `params=` take a class's fields and, as xe, `<reference field>-uuid` / `-name-label`
(vbd-list vm-uuid=...).

Output follows xapi's cli_printer: a record is its fields one a line, `name ( RO): value`, the first
name padded on the right and the others on the left to the longest name plus four; maps print as
`k: v; k2: v2`, sets as `a; b`, references as the uuid they point to. `--minimal` prints one
comma-joined line (commas in values escaped).
"""
from __future__ import annotations

import inspect
from xmlrpc.client import DateTime

from xapi import datamodel as dm
from xapi.cli import errors as cli_errors
from xapi.cli.cmdtable import TABLE
from xapi.datamodel.errors import XapiError

NULL_REF = "OpaqueRef:NULL"


class CliError(Exception):
    """A failure the CLI reports in its own words (xapi's Cli_failure)."""


class CliFailure(CliError):
    """A failure xe words itself, printed as `Error: <message>` (xapi's Cli_util.Cli_failure). A
    plain CliError is what xapi's commands raise with failwith: xe prints it as an INTERNAL_ERROR whose
    message is `Failure: <message>`."""


class MultipleFailure(Exception):
    """Some of the objects of a --multiple operation failed: (uuid, message) of each."""

    def __init__(self, failures: list[tuple[str, str]]) -> None:
        super().__init__(failures)
        self.failures = failures


class ParamNotFound(CliError):
    """A required parameter is missing (xapi's Cli_frontend.ParamNotFound)."""


class ExitWithError(Exception):
    """The command has printed its own failure: the client exits with this code."""

    def __init__(self, code: int = 1) -> None:
        super().__init__(code)
        self.code = code


class Unknown(Exception):
    """No such command."""


# -- names ------------------------------------------------------------------------------------------
def hyphen(name: str) -> str:
    return name.replace("_", "-")


def cli_class(cls: str) -> str:
    return hyphen(cls.lower())


CLASSES: dict[str, dm.Class] = {}        # xe prefix (vm, host, sr...) -> class
for _c in dm.CLASSES.values():
    if "uuid" in _c.fields and "get_all_records" in _c.messages and "get_by_uuid" in _c.messages:
        CLASSES[cli_class(_c.name)] = _c

# The fields `<class>-list` shows, as cli_operations.gen_cmds names them, in records.ml's order;
# (ref field, "uuid" | "name_label") is a derived `<field>-uuid`/`<field>-name-label` column, and
# ("PBDs", "host") is the SR's `host` column (its one PBD's host, or <shared>).
DEFAULT_LIST = {
    "vm": ("uuid", "name_label", "power_state"),
    "host": ("uuid", "name_label", "name_description"),
    "sr": ("uuid", "name_label", "name_description", ("PBDs", "host"), "type", "content_type"),
    "vdi": ("uuid", "name_label", "name_description", ("SR", "uuid"), "virtual_size", "sharable", "read_only"),
    "pbd": ("uuid", ("host", "uuid"), ("SR", "uuid"), "device_config", "currently_attached"),
    "task": ("uuid", "name_label", "name_description", "status", "progress"),
    "network": ("uuid", "name_label", "name_description", "bridge"),
    "pif": ("uuid", "device", "currently_attached", "VLAN", ("network", "uuid")),
    "vbd": ("uuid", ("VM", "uuid"), ("VM", "name_label"), ("VDI", "uuid"), "empty", "device"),
    "vif": ("uuid", ("VM", "uuid"), "device", ("network", "uuid")),
    "pool": ("uuid", "name_label", "name_description", "master", "default_SR"),
}

# record_util's own spellings (its "intentional shadowing"): VDI types capitalised; vm_power_state
# is lowercased (power-state: running)
ENUM_TEXT = {
    "vdi_type": {"system": "System", "user": "User", "ephemeral": "Ephemeral", "suspend": "Suspend",
                 "crashdump": "Crashdump", "ha_statefile": "HA statefile", "metadata": "Metadata",
                 "redo_log": "Redo log", "rrd": "rrd", "pvs_cache": "PVS cache", "cbt_metadata": "CBT metadata"},
}

GENERATED = ("list", "param-list", "param-get", "param-set", "param-add", "param-remove", "param-clear")


def generated_commands() -> dict[str, tuple[tuple, tuple, str]]:
    """name -> (required params, optional params, description) of the <class>-list/-param-* families."""
    cmds = {}
    for prefix, c in CLASSES.items():
        name = c.name
        cmds[f"{prefix}-list"] = ((), ("params",), f"Lists {name}s; field=value pairs filter them, params= picks "
                                  "the fields shown (params=all: every field).")
        cmds[f"{prefix}-param-list"] = (("uuid",), (), f"Shows every field of the {name}.")
        cmds[f"{prefix}-param-get"] = (("uuid", "param-name"), ("param-key",), f"Shows one field of the {name} "
                                       "(one key of a map field with param-key).")
        cmds[f"{prefix}-param-set"] = (("uuid",), (), f"Sets writable fields of the {name}: field=value, or "
                                       "map-field:key=value.")
        cmds[f"{prefix}-param-add"] = (("uuid", "param-name"), ("param-key",), f"Adds to a set field of the "
                                       f"{name} (param-key) or to a map field (key=value pairs).")
        cmds[f"{prefix}-param-remove"] = (("uuid", "param-name", "param-key"), (), f"Removes a key from a map "
                                          f"field or an element from a set field of the {name}.")
        cmds[f"{prefix}-param-clear"] = (("uuid", "param-name"), (), f"Empties a field of the {name}.")
    return cmds


_COMMANDS: dict | None = None


def all_commands() -> dict[str, tuple[tuple, tuple, str]]:
    """Every command with its parameters and description, by name."""
    global _COMMANDS
    if _COMMANDS is None:
        cmds = generated_commands()
        cmds["help"] = ((), ("all", "minimal"), "Shows help: the commands (--all: every one, --minimal: names "
                                                 "only, comma-separated) or one command's parameters.")
        for name, spec in TABLE.items():
            cmds[name] = (spec.reqd, spec.optn, spec.help)
        _COMMANDS = dict(sorted(cmds.items()))
    return _COMMANDS


STDPARAMS = {"server", "port", "username", "password", "minimal", "multiple", "force", "all", "params",
             "database", "progress", "_topic"}


# -- marker and values ------------------------------------------------------------------------------
def marker(f: dm.Field, c: dm.Class | None = None) -> str:
    writable = f.qualifier == "RW" or (c is not None and (
        f"set_{f.name}" in c.messages or f"add_to_{f.name}" in c.messages or f"add_{f.name}" in c.messages))
    rw = "W" if writable else "O"
    kind = f.type.kind
    if kind == "option":
        kind = f.type.elem.kind
    if kind == "map":
        return f"(MR{rw})"
    if kind == "set":
        return f"(SR{rw})"
    return f"( R{rw})"


def escape_commas(s: str) -> str:
    return s.replace("\\", "\\\\").replace(",", "\\,")


# -- the command run --------------------------------------------------------------------------------
class Run:
    def __init__(self, ctx, session: str, out, args: dict, flags: set, channel=None) -> None:
        self.ctx = ctx              # the request: app, local, peer
        self.app = ctx.app
        self.session = session
        self.out = out              # async callable(kind, text): kind "print" | "stderr"
        self.args = args
        self.flags = flags
        self.channel = channel      # the CLI connection (xapi.cli.server.Channel): prompts, file transfers
        self.forwarded = False      # relayed by a pool member: the client is not talking to us directly
        self._uuids: dict[str, str] = {}

    async def call(self, method: str, *params):
        result = self.app.endpoints.call(self.ctx, method, [self.session, *params])
        if inspect.isawaitable(result):
            result = await result
        return result

    # -- formatting --
    async def uuid_of(self, cls: str, ref) -> str:
        if not isinstance(ref, str) or ref == NULL_REF or not ref.startswith("OpaqueRef:"):
            return "<not in database>"
        if ref in self._uuids:
            return self._uuids[ref]
        name = dm.CLASS_BY_LOWER.get(cls.lower(), cls)
        c = dm.CLASSES.get(name)
        if c is None or "uuid" not in c.fields or "get_uuid" not in c.messages:
            v = ref
        else:
            try:
                v = await self.call(f"{name}.get_uuid", ref)
            except XapiError:
                v = "<not in database>"
        self._uuids[ref] = v
        return v

    async def fmt(self, t, v) -> str:
        kind = t.kind
        if kind == "option":
            return "" if v is None else await self.fmt(t.elem, v)
        if kind == "map":
            if not isinstance(v, dict):
                return str(v)
            parts = [f"{await self.fmt(t.key, k)}: {await self.fmt(t.elem, x)}" for k, x in v.items()]
            return "; ".join(parts)
        if kind == "set":
            if not isinstance(v, (list, tuple)):
                return str(v)
            return "; ".join([await self.fmt(t.elem, x) for x in v])
        if kind == "ref":
            return await self.uuid_of(t.name, v)
        if kind == "bool":
            return "true" if v else "false"
        if kind == "enum" and isinstance(v, str):
            # records.ml prints an enum as the datamodel spells it (VBD type Disk/CD, mode RW/RO,
            # IP modes DHCP/Static), except the ones record_util spells its own way
            return ENUM_TEXT.get(t.name, {}).get(v, v.lower() if t.name == "vm_power_state" else v)
        if isinstance(v, DateTime):
            return v.value
        if v is None:
            return ""
        return str(v)

    async def record_lines(self, c: dm.Class, rec: dict, fields) -> list[tuple[str, str]]:
        """`name (RO): value` rows; a field may be (reference field, "uuid" | "name_label"), shown as
        `<field>-uuid ( RO)` with the value of the object it points at."""
        rows = []
        for name in fields:
            if name == ("PBDs", "host"):        # records.ml's SR `host`
                pbds = rec.get("PBDs") or []
                if len(pbds) > 1:
                    value = "<shared>"
                else:
                    value = "<not in database>"     # records.ml's nid for no single host
                    try:
                        if pbds:
                            value = await self.call("host.get_name_label",
                                                    await self.call("PBD.get_host", pbds[0]))
                    except XapiError:
                        pass
                rows.append(("host ( RO)", value))
                continue
            if isinstance(name, tuple):
                ref_field, via = name
                f = c.fields[ref_field]
                value = await self.via(f.type, rec.get(ref_field), via)
                rows.append((f"{hyphen(ref_field).lower()}-{hyphen(via)} ( RO)", value))
                continue
            f = c.fields[name]
            rows.append((f"{hyphen(name)} {marker(f, c)}", await self.fmt(f.type, rec.get(name))))
        return rows

    async def print_list(self, values: list[str]) -> None:
        """cli_printer's PList: a line each, or one comma-joined line (commas escaped) with --minimal."""
        if self.flag("minimal"):
            await self.out("print", ",".join(escape_commas(v) for v in values))
            return
        for v in values:
            await self.out("print", v)

    async def print_records(self, records: list[list[tuple[str, str]]]) -> None:
        if self.flag("minimal"):
            await self.out("print", ",".join(escape_commas(r[0][1]) for r in records if r))
            return
        for r in records:
            width = 4 + max((len(k) for k, _ in r), default=0)
            lines = []
            for i, (k, v) in enumerate(r):
                lines.append((k.ljust(width) if i == 0 else k.rjust(width)) + ": " + v)
            await self.out("print", "\n".join(lines) + "\n\n")

    # -- lookups --
    def field_of(self, c: dm.Class, cli_name: str) -> str:
        name = cli_name.replace("-", "_")
        if name in c.fields:
            return name
        for f in c.fields:
            if f.lower() == name.lower():
                return f
        raise CliError(f"Unknown field '{cli_name}'")

    def param_field(self, c: dm.Class, cli_name: str) -> str:
        """The field a -param-* command names. xapi's field_lookup raises CLI_failed_to_find_param,
        which xe shows as the raw error `Missing parameter` [name]."""
        try:
            return self.field_of(c, cli_name)
        except CliError:
            raise XapiError("Missing parameter", cli_name) from None

    async def by_uuid(self, c: dm.Class, uuid: str | None) -> str:
        if uuid is None:
            raise ParamNotFound("uuid")
        return await self.call(f"{c.name}.get_by_uuid", uuid)

    async def select(self, c: dm.Class, prefix: str, own=(), *, include_templates=False,
                     include_control=False) -> list[str]:
        """The objects a command acts on (xapi's do_vm_op/do_host_op): `uuid=`, `<prefix>=` (name-label or
        uuid), and filters on any other field; with no selector at all, every object. The command's own
        parameters (`own`) are not filters. More than one match needs --multiple."""
        recs = await self.call(f"{c.name}.get_all_records")
        filters = {k: v for k, v in self.args.items()
                   if k not in own and k not in STDPARAMS and k != prefix and ":" not in k}
        if prefix == "vm":
            if not include_templates:
                filters.setdefault("is-a-template", "false")
            if not include_control:
                filters.setdefault("is-control-domain", "false")
        refs = await self.filter(c, recs, filters)
        if prefix in self.args:
            v = self.args[prefix]
            names = ("uuid", "name_label", "hostname") if prefix == "host" else ("uuid", "name_label")
            refs = [r for r in refs if any(recs[r].get(n) == v for n in names)]
        if not refs:
            raise CliError(f"No matching {c.name}s found")
        if len(refs) > 1 and not self.flag("multiple"):
            what = "matches VMs" if prefix == "vm" else f"matching {c.name}s"
            raise CliError(f"Multiple {what} found. --multiple required to complete the operation")
        return refs

    async def each(self, c: dm.Class, prefix: str, own, op, **kw) -> None:
        """op(ref) on each selected object; with several, every one is tried and the failures are
        reported together at the end (xapi's do_multiple)."""
        refs = await self.select(c, prefix, own, **kw)
        if len(refs) == 1:
            await op(refs[0])
            return
        failures = []
        for ref in refs:
            try:
                await op(ref)
            except XapiError as e:
                text = cli_errors.lines(e.code, list(e.params))
                failures.append((await self.uuid_of(c.name, ref),
                                 "\n".join(text) if text else f"{e.code}: [ {'; '.join(e.params)} ]"))
            except CliError as e:
                failures.append((await self.uuid_of(c.name, ref), str(e)))
        if failures:
            raise MultipleFailure(failures)

    def flag(self, name: str) -> bool:
        """--name, or name=true (xe turns --name into name=true)."""
        if name in self.flags:
            return True
        return self.args.get(name, "false").lower() in ("true", "yes", "1", "on")

    def need(self, name: str) -> str:
        v = self.args.get(name)
        if v is None:
            raise ParamNotFound(name)
        return v

    def map_arg(self, prefix: str) -> dict[str, str]:
        """`prefix:key=value` arguments as a map (device-config:path=/x, sm-config:type=raw...)."""
        head = prefix + ":"
        return {k[len(head):]: v for k, v in self.args.items() if k.startswith(head)}

    async def lookup(self, cls: str, value: str, *, by_name: bool = True) -> str:
        """One object by uuid, or by name-label if no uuid matches."""
        recs = await self.call(f"{cls}.get_all_records")
        for r, rec in recs.items():
            if rec.get("uuid") == value:
                return r
        if by_name:
            refs = [r for r, rec in recs.items() if rec.get("name_label") == value]
            if len(refs) == 1:
                return refs[0]
            if len(refs) > 1:
                raise CliError(f"Multiple {cls}s named '{value}' found")
        raise CliError(f"No matching {cls}s found")

    async def prompt_yes(self, message: str) -> bool:
        """xe's confirmation: the message, `Type 'yes' to continue`, and the user's answer."""
        if self.channel is None:
            return False
        await self.out("print", message)
        answer = await self.channel.prompt("Type 'yes' to continue")
        if answer.strip().lower() != "yes":
            await self.out("print", f"Aborted (you typed: '{answer}')")
            return False
        return True

    async def filter(self, c: dm.Class, recs: dict, filters: dict) -> list[str]:
        """The refs whose printed fields equal the filters. Besides the class's own fields, xe takes
        `<reference field>-uuid` and `<reference field>-name-label` (vbd-list vm-uuid=..., vdi-list
        sr-name-label=...), matched against the object the field points at."""
        wanted = []
        for k, v in filters.items():
            if k in STDPARAMS or ":" in k:
                continue
            wanted.append((*self.filter_field(c, k), v))
        out = []
        for ref, rec in recs.items():
            ok = True
            for name, via, v in wanted:
                t = c.fields[name].type
                if via is None:
                    have = await self.fmt(t, rec.get(name))
                else:
                    have = await self.via(t, rec.get(name), via)
                if have != v and not (t.kind == "enum" and (have.lower() == v.lower()       # type=disk
                                                            or str(rec.get(name)).lower() == v.lower())):
                    ok = False
                    break
            if ok:
                out.append(ref)
        return out

    def list_field(self, c: dm.Class, key: str):
        name, via = self.filter_field(c, key)
        return name if via is None else (name, via)

    def filter_field(self, c: dm.Class, key: str) -> tuple[str, str | None]:
        """(field, None) for a field of c; (reference field, "uuid" | "name_label") for a derived one."""
        try:
            return self.field_of(c, key), None
        except CliError:
            for suffix, via in (("-uuid", "uuid"), ("-name-label", "name_label")):
                if key.endswith(suffix):
                    try:
                        name = self.field_of(c, key[:-len(suffix)])
                    except CliError:
                        continue
                    if c.fields[name].type.kind == "ref":
                        return name, via
            raise

    async def via(self, t, ref, field: str) -> str:
        if field == "uuid":
            return await self.uuid_of(t.name, ref)
        if not isinstance(ref, str) or ref == NULL_REF:
            return ""
        cls = dm.CLASS_BY_LOWER.get(t.name.lower(), t.name)
        try:
            return await self.call(f"{cls}.get_name_label", ref)
        except XapiError:
            return ""

    # -- generated commands --
    def record_order(self, c: dm.Class, fields: list) -> list:
        """Fields in the record's order, whatever order params= named them in (xapi's select_fields
        filters the record): uuid first, a derived column right after its reference field."""
        order = {name: i for i, name in enumerate(c.fields)}
        order["uuid"] = -1

        def key(f):
            if isinstance(f, tuple):
                return (order.get(f[0], len(order)), 1 if f[1] == "uuid" else 2)
            return (order.get(f, len(order)), 0)
        return sorted(fields, key=key)

    async def do_list(self, prefix: str, c: dm.Class, defaults: tuple | None = None) -> None:
        recs = await self.call(f"{c.name}.get_all_records")
        filters = dict(self.args)
        if prefix == "vm":
            if filters.get("is-a-snapshot") != "true":     # snapshots are templates too
                filters.setdefault("is-a-template", "false")
            filters.setdefault("is-a-snapshot", "false")
        refs = await self.filter(c, recs, filters)
        params = self.args.get("params")
        if params == "all":
            fields = list(c.fields)
        elif params:
            fields = self.record_order(c, [self.list_field(c, p.strip()) for p in params.split(",") if p.strip()])
        else:
            defaults = defaults or DEFAULT_LIST.get(prefix, ("uuid", "name_label", "name_description"))
            fields = [f for f in defaults if (f[0] if isinstance(f, tuple) else f) in c.fields]
        records = [await self.record_lines(c, recs[r], fields) for r in refs]
        await self.print_records(records)

    async def do_param_list(self, prefix: str, c: dm.Class) -> None:
        ref = await self.by_uuid(c, self.args.get("uuid"))
        rec = await self.call(f"{c.name}.get_record", ref)
        fields = ["uuid"] + [f for f in c.fields if f != "uuid"]
        await self.print_records([await self.record_lines(c, rec, fields)])

    async def do_param_get(self, prefix: str, c: dm.Class) -> None:
        ref = await self.by_uuid(c, self.args.get("uuid"))
        pname = self.args.get("param-name")
        if pname is None:
            raise ParamNotFound("param-name")
        name = self.param_field(c, pname)
        rec = await self.call(f"{c.name}.get_record", ref)
        f = c.fields[name]
        value = rec.get(name)
        key = self.args.get("param-key")
        if key is not None and isinstance(value, dict):     # on other fields xapi ignores param-key
            if key not in value:
                raise CliError(f"Key {key} not found in map")
            await self.print_list([await self.fmt(f.type.elem, value[key])])
            return
        await self.print_list([await self.fmt(f.type, value)])

    async def convert(self, t, text: str):
        kind = t.kind
        if kind == "int":
            try:
                return int(text)
            except ValueError:
                raise CliError(f"Failed to parse parameter: expecting an integer, got '{text}'") from None
        if kind == "float":
            return float(text)
        if kind == "bool":
            low = text.lower()
            if low not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
                raise CliError(f"Failed to parse parameter: expecting a boolean (true or false), got '{text}'")
            return low in ("true", "yes", "1", "on")
        if kind == "ref":
            if text == "" or text.startswith("OpaqueRef:"):
                return text or NULL_REF
            name = dm.CLASS_BY_LOWER.get(t.name.lower(), t.name)
            return await self.call(f"{name}.get_by_uuid", text)
        if kind == "set":
            return [await self.convert(t.elem, x.strip()) for x in text.split(",") if x.strip()]
        if kind == "map":
            out = {}
            for part in text.split(";"):
                if ":" in part:
                    k, v = part.split(":", 1)
                    out[k.strip()] = v.strip()
            return out
        return text

    async def do_param_set(self, prefix: str, c: dm.Class) -> None:
        ref = await self.by_uuid(c, self.args.get("uuid"))
        for k, v in self.args.items():
            if k == "uuid":
                continue
            if ":" in k:
                mname, key = k.split(":", 1)
                name = self.param_field(c, mname)
                if f"remove_from_{name}" not in c.messages or f"add_to_{name}" not in c.messages:
                    raise CliError(f"Parameter {mname} is read-only")
                await self.call(f"{c.name}.remove_from_{name}", ref, key)
                await self.call(f"{c.name}.add_to_{name}", ref, key, v)
                continue
            name = self.param_field(c, k)
            setter = f"set_{name}"
            if setter not in c.messages:
                raise CliError(f"Parameter {k} is read-only")
            await self.call(f"{c.name}.{setter}", ref, await self.convert(c.fields[name].type, v))

    async def do_param_add(self, prefix: str, c: dm.Class) -> None:
        ref = await self.by_uuid(c, self.args.get("uuid"))
        pname = self.args.get("param-name")
        if pname is None:
            raise ParamNotFound("param-name")
        name = self.param_field(c, pname)
        t = c.fields[name].type
        if t.kind == "map":
            if f"add_to_{name}" not in c.messages:
                raise CliError(f"Parameter {pname} is read-only")
            for k, v in self.args.items():
                if k in ("uuid", "param-name", "param-key"):
                    continue
                await self.call(f"{c.name}.add_to_{name}", ref, k, v)
        elif t.kind == "set":
            key = self.args.get("param-key")
            if key is None:
                raise ParamNotFound("param-key")
            if f"add_{name}" not in c.messages:
                raise CliError(f"Parameter {pname} is read-only")
            await self.call(f"{c.name}.add_{name}", ref, await self.convert(t.elem, key))
        else:
            raise CliError(f"Parameter {pname} is not a set or map")

    async def do_param_remove(self, prefix: str, c: dm.Class) -> None:
        ref = await self.by_uuid(c, self.args.get("uuid"))
        pname = self.args.get("param-name")
        key = self.args.get("param-key")
        if pname is None or key is None:
            raise ParamNotFound("param-name" if pname is None else "param-key")
        name = self.param_field(c, pname)
        t = c.fields[name].type
        if t.kind == "map" and f"remove_from_{name}" in c.messages:
            await self.call(f"{c.name}.remove_from_{name}", ref, key)
        elif t.kind == "set" and f"remove_{name}" in c.messages:
            await self.call(f"{c.name}.remove_{name}", ref, await self.convert(t.elem, key))
        else:
            raise CliError(f"Parameter {pname} is read-only or not a set or map")

    async def do_param_clear(self, prefix: str, c: dm.Class) -> None:
        ref = await self.by_uuid(c, self.args.get("uuid"))
        pname = self.args.get("param-name")
        if pname is None:
            raise ParamNotFound("param-name")
        name = self.param_field(c, pname)
        if f"set_{name}" not in c.messages:
            raise CliError(f"Parameter {pname} is read-only")
        t = c.fields[name].type
        empty = {} if t.kind == "map" else [] if t.kind == "set" else ""
        await self.call(f"{c.name}.set_{name}", ref, empty)

    # -- help --
    async def do_help(self) -> None:
        cmds = all_commands()
        topic = self.args.get("_topic")
        if topic:
            if topic not in cmds:
                raise Unknown(topic)
            reqd, optn, text = cmds[topic]
            await self.out("print", f"command name            : {topic}\n"
                                    f"        reqd params     : {', '.join(reqd)}\n"
                                    f"        optional params : {', '.join(optn)}\n"
                                    f"        description     : {text}")
            return
        show_all = self.flag("all")
        names = list(cmds) if show_all else [n for n in cmds if n in TABLE or n == "help" or n in COMMON_LISTS]
        if self.flag("minimal"):
            await self.out("print", ",".join(names))
            return
        await self.out("print", "Usage: xe <command> [-s server] [-pw passwd] [-p port] [-u user] "
                                "[-pwf password-file]\n  [command specific arguments]\n\n"
                                "To get help on a specific command: xe help <command>\n"
                                "To get a full listing of commands: xe help --all\n\n"
                                + ("All commands:" if show_all else "Common commands:") + "\n")
        line, lines = "    ", []
        for n in names:
            if len(line) + len(n) + 2 > 80 and line.strip():
                lines.append(line.rstrip())
                line = "    "
            line += n + ", "
        lines.append(line.rstrip().rstrip(","))
        await self.out("print", "\n".join(lines))

    async def run(self, cmd: str) -> None:
        if cmd == "help":
            return await self.do_help()
        spec = TABLE.get(cmd)
        if spec is not None:
            for name in spec.reqd:
                self.need(name)
            return await spec.fn(self)
        for suffix in GENERATED:
            if cmd.endswith("-" + suffix):
                prefix = cmd[:-len(suffix) - 1]
                c = CLASSES.get(prefix)
                if c is not None:
                    return await getattr(self, "do_" + suffix.replace("-", "_"))(prefix, c)
        raise Unknown(cmd)


COMMON_LISTS = {f"{p}-list" for p in ("vm", "host", "sr", "vdi", "pool", "network", "pif", "vif", "vbd", "task",
                                      "pbd", "message")}


def parse_size(text: str) -> int:
    t = text.strip().upper()
    mult = 1
    for suffix, m in (("KIB", 1 << 10), ("MIB", 1 << 20), ("GIB", 1 << 30), ("TIB", 1 << 40),
                      ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40)):
        if t.endswith(suffix):
            t, mult = t[:-len(suffix)], m
            break
    try:
        return int(float(t) * mult)
    except ValueError:
        raise CliError(f"Failed to parse size '{text}'") from None


def parse_args(lines: list[str]):
    """The request body's lines: command, key=value arguments, --flags; plus the credentials."""
    cmd = None
    args: dict[str, str] = {}
    flags: set[str] = set()
    extra: list[str] = []
    for line in lines:
        if line.endswith("\r"):     # xapi's zap_cr: a forwarding xapi joins its lines with \r\n
            line = line[:-1]
        if line == "":
            continue
        if cmd is None and "=" not in line and not line.startswith("--"):
            cmd = line
            continue
        if line.startswith("--"):
            name = line[2:]
            if "=" in name:
                k, v = name.split("=", 1)
                args[k] = v
            else:
                flags.add(name)
            continue
        if "=" in line:
            k, v = line.split("=", 1)
            args[k] = v
        else:
            extra.append(line)
    return cmd, args, flags, extra


def describe_error(e: XapiError, names: dict[str, str] | None = None) -> tuple[str | None, list[str]]:
    """xe's words for a XenAPI failure: (text for stderr, or None for a raw Error(code, params)).
    `names` turns references into `uuid (name-label)`, as xe shows them."""
    params = [str(p) for p in e.description[1:]]
    if names:
        params = [names.get(p, p) for p in params]
    text = cli_errors.lines(e.code, params)
    if text is None:
        return None, [e.code, *params]
    return "\n".join(text) + "\n", [e.code, *params]


def ref_names(app, values) -> dict[str, str]:
    """`uuid (name-label)` for each OpaqueRef among values that names a row of the database."""
    out = {}
    for v in values:
        if not isinstance(v, str) or not v.startswith("OpaqueRef:") or v == NULL_REF:
            continue
        for cls in CLASSES.values():
            try:
                table = app.db.table(cls.name)
            except (KeyError, ValueError):
                continue
            if v in table:
                row = table.get(v)
                label = row.get("name_label") if "name_label" in cls.fields else None
                out[v] = row.get("uuid", v) + (f" ({label})" if label is not None else "")
                break
    return out


# the hand-written commands register themselves in cmdtable.TABLE
from xapi.cli import ops_host, ops_misc, ops_network, ops_storage, ops_vm, transfer  # noqa: E402,F401
