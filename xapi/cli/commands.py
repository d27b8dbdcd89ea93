"""The xe commands: the `<class>-list`, `-param-list`, `-param-get`, `-param-set`, `-param-add`,
`-param-remove`, `-param-clear` families of every class with uuids (plus `template` and `snapshot`,
gen_cmds' views of VMs), made from the class's xe record (xapi.cli.records) as cli_operations'
make_param_funs does; `help`; and the hand-written commands of xapi.cli.ops_* and xapi.cli.transfer
(registered in xapi.cli.cmdtable). `Run` is one command's run: its arguments, the object selectors and
filters, the printer. Every XenAPI call goes through the RPC layer's dispatch (arity, types, session,
RBAC, events, audit) with the CLI session.

The generated families filter and select by the record's xe names (`vbd-list vm-uuid=...`,
`vm-list other-config:key=v`, `tags:contains=x`); the hand-written selectors also take a class's
datamodel fields and `<reference field>-uuid` / `-name-label`.

Output follows xapi's cli_printer: a record is its fields one a line, `name ( RO): value`, the first
name padded on the right and the others on the left to the longest name plus four; maps print as
`k: v; k2: v2`, sets as `a; b`, references as the uuid they point to. `--minimal` prints one
comma-joined line (commas in values escaped).
"""
from __future__ import annotations

import inspect

from xapi import datamodel as dm
from xapi.cli import errors as cli_errors
from xapi.cli import record_tables, records
from xapi.cli.cmdtable import specs
from xapi.datamodel.errors import XapiError

NULL_REF = "OpaqueRef:NULL"


class CliError(Exception):
    """A failure the CLI reports in its own words, printed as `Error: <message>`: cli_operations.ml
    makes its failwith raise Cli_util.Cli_failure, which xapi_cli prints that way."""


class CliFailure(CliError):
    """The same failure, named as xapi's Cli_util.Cli_failure."""


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


# gen_cmds' own prefixes where they are not the class name hyphenated (cli_operations.ml)
STOCK_PREFIX = {"pool_patch": "patch", "pool_update": "update", "VM_appliance": "appliance", "DR_task": "drtask"}

CLASSES: dict[str, dm.Class] = {}        # xe prefix (vm, host, sr...) -> class
for _c in dm.CLASSES.values():
    if "uuid" in _c.fields and "get_all_records" in _c.messages and "get_by_uuid" in _c.messages:
        CLASSES[STOCK_PREFIX.get(_c.name, cli_class(_c.name))] = _c
CLASSES["template"] = CLASSES["snapshot"] = dm.CLASSES["VM"]      # gen_cmds' other views of VMs

GENERATED = ("list", "param-list", "param-get", "param-set", "param-add", "param-remove", "param-clear")


def generated_commands() -> dict[str, tuple[tuple, tuple, str]]:
    """name -> (required params, optional params, description) of the <class>-list/-param-* families,
    as cli_operations.make_param_funs makes them from the class's record: -param-set only for a class
    with settable fields, -param-add/-remove with addable ones, -param-clear with clearable ones."""
    cmds = {}
    for prefix, c in CLASSES.items():
        shown = [f for f in records.fields(prefix, c) if not f.hidden]
        names = [f.name for f in shown]
        settable = [f.name for f in shown if f.set is not None]
        settable += [f.name + ":" for f in shown
                     if f.add_to_map is not None or f.set_in_map is not None or f.set_map is not None]
        addable = [f.name for f in shown if f.add_to_set is not None or f.add_to_map is not None]
        clearable = [f.name for f in shown if f.set is not None or f.get_set is not None or f.get_map is not None]
        contains = [f.name + ":contains" for f in shown if f.get_set is not None]
        plural = "patches" if prefix == "patch" else prefix + "s"
        cmds[f"{prefix}-list"] = ((), ("params", "database:", *names, *contains),
                                  f"Lists all the {plural}, filtering on the optional arguments. To filter on map "
                                  "parameters, use the syntax 'map-param:key=value'")
        cmds[f"{prefix}-param-list"] = (("uuid",), ("database:",),
                                        "Lists all the parameters of the object specified by the uuid.")
        cmds[f"{prefix}-param-get"] = (("uuid", "param-name"), ("param-key", "database:"),
                                       "Gets the parameter specified of the object. If the parameter is a map of "
                                       "key=value pairs, use 'param-key=<key>' to get the value associated with a "
                                       "particular key.")
        if settable:
            cmds[f"{prefix}-param-set"] = (("uuid",), tuple(settable),
                                           "Sets the parameter specified. If param-value is not given, the parameter "
                                           "is set to a null value. To set a (key,value) pair in a map parameter, use "
                                           "the syntax 'map-param:key=value'.")
        if addable:
            cmds[f"{prefix}-param-add"] = (("uuid", "param-name"), ("param-key",),
                                           "Adds to a set or map parameter. If the parameter is a set, use "
                                           "param-key=<key to add>. If the parameter is a map, pass the values to add "
                                           "as 'key=value' pairs.")
            cmds[f"{prefix}-param-remove"] = (("uuid", "param-name", "param-key"), (),
                                              "Removes a member or a key,value pair from a set/map respectively.")
        if clearable:
            cmds[f"{prefix}-param-clear"] = (("uuid", "param-name"), (),
                                             "Clears the specified parameter (param-name can be "
                                             + ",".join(clearable) + ").")
    return cmds


_COMMANDS: dict | None = None


def all_commands() -> dict[str, tuple[tuple, tuple, str]]:
    """Every command with its parameters and description, by name."""
    global _COMMANDS
    if _COMMANDS is None:
        cmds = generated_commands()
        cmds["help"] = ((), ("all", "minimal"), "Shows help: the commands (--all: every one, --minimal: names "
                                                 "only, comma-separated) or one command's parameters.")
        for name, spec in specs().items():
            cmds[name] = (spec.reqd, spec.optn, spec.help)
        _COMMANDS = dict(sorted(cmds.items()))
    return _COMMANDS


STDPARAMS = {"server", "port", "username", "password", "minimal", "multiple", "force", "all", "params",
             "database", "progress", "_topic"}


# -- values ------------------------------------------------------------------------------------------
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
        row = self.row(name, ref)
        if row is not None and row.get("uuid"):     # as records.ml's Ref_index: no call per reference
            v = row["uuid"]
        elif c is None or "uuid" not in c.fields or "get_uuid" not in c.messages:
            v = ref
        else:
            try:
                v = await self.call(f"{name}.get_uuid", ref)
            except XapiError:
                v = "<not in database>"
        self._uuids[ref] = v
        return v

    def row(self, cls: str, ref: str) -> dict | None:
        """The database row of a reference, when this daemon holds the database (the coordinator,
        where xe's commands run), else None."""
        try:
            table = self.app.db.table(cls)
            return table.get(ref) if ref in table else None
        except Exception:  # noqa: BLE001 - no local table: the caller asks the API
            return None

    async def name_of(self, cls: str, ref) -> str:
        """records.ml's get_name_from_ref: the name-label of the object, <not in database> if none."""
        if not isinstance(ref, str) or ref == NULL_REF or not ref.startswith("OpaqueRef:"):
            return records.NID
        name = dm.CLASS_BY_LOWER.get(cls.lower(), cls)
        row = self.row(name, ref)
        if row is not None and "name_label" in row:
            return row["name_label"]
        try:
            return await self.call(f"{name}.get_name_label", ref)
        except XapiError:
            return records.NID

    async def fmt(self, t, v) -> str:
        """A datamodel-typed value as xe prints it (xapi.cli.records.text)."""
        return await records.text(self, t, v)

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
        # map:key=value and set:contains=x select on the xe record (select_vms: any stem not the command's)
        by_record = {k: v for k, v in self.args.items()
                     if ":" in k and k.split(":", 1)[0] not in own and k.split(":", 1)[0] not in STDPARAMS}
        if by_record:
            fs = records.fields(cli_class(c.name), c)
            views = [records.View(self, c.name, r, recs[r]) for r in refs]
            for k, v in by_record.items():
                views = await self.filter_views(fs, views, k, v)
            refs = [v.ref for v in views]
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
        """The refs whose printed fields equal the filters: a field of the class's xe record by its xe
        name (resident-on=, dom-id=, os-version... as select_vms filters vm_record), else a datamodel
        field, or `<reference field>-uuid` / `-name-label` matched against the object the field points at."""
        by_name = {f.name: f for f in records.fields(cli_class(c.name), c)}
        wanted = []
        for k, v in filters.items():
            if k in STDPARAMS or ":" in k:
                continue
            wanted.append((by_name[k], None, v) if k in by_name else (*self.filter_field(c, k), v))
        out = []
        for ref, rec in recs.items():
            ok = True
            for name, via, v in wanted:
                if isinstance(name, records.Field):
                    have = await self.value(name, records.View(self, c.name, ref, rec))
                    lenient = name.enum or name.case_insensitive
                    raw = have
                else:
                    t = c.fields[name].type
                    have = await self.fmt(t, rec.get(name)) if via is None else await self.via(t, rec.get(name), via)
                    lenient = t.kind == "enum"
                    raw = str(rec.get(name))
                if have != v and not (lenient and (have.lower() == v.lower() or raw.lower() == v.lower())):
                    ok = False
                    break
            if ok:
                out.append(ref)
        return out

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

    # -- generated commands: cli_operations.make_param_funs over xapi.cli.records --
    async def views(self, c: dm.Class) -> list[records.View]:
        recs = await self.call(f"{c.name}.get_all_records")
        return [records.View(self, c.name, r, rec) for r, rec in recs.items()]

    async def view(self, c: dm.Class) -> records.View:
        ref = await self.by_uuid(c, self.args.get("uuid"))
        return records.View(self, c.name, ref, await self.call(f"{c.name}.get_record", ref))

    @staticmethod
    async def value(f: records.Field, v: records.View) -> str:
        """records.ml's safe_get_field: a dangling reference reads as <invalid reference>."""
        try:
            return await f.get(v)
        except XapiError as e:
            if e.code == "HANDLE_INVALID":
                return "<invalid reference>"
            raise

    @staticmethod
    def lookup_field(fs: list[records.Field], name: str) -> records.Field:
        """records.ml's field_lookup: CLI_failed_to_find_param, shown as the raw `Missing parameter`."""
        for f in fs:
            if f.name == name:
                return f
        raise XapiError("Missing parameter", name)

    @staticmethod
    def field_type(fs: list[records.Field], key: str) -> tuple[str, records.Field | None]:
        """cli_operations.get_field_type: ("normal", f), ("map", f) or ("set", f) for `name:key` (or the
        old `name-key`, the longest map then set name first)."""
        by_name = {f.name: f for f in fs}
        if key in by_name:
            return "normal", by_name[key]
        if ":" in key:
            f = by_name.get(key.split(":", 1)[0])
            if f is None:
                raise CliFailure(f"Unknown field '{key}'")
            if f.get_set is not None:
                return "set", f
            if f.get_map is not None:
                return "map", f
            raise CliFailure(f"Field '{f.name}' is not a set or map")
        for kind, has in (("map", lambda f: f.get_map is not None), ("set", lambda f: f.get_set is not None)):
            for f in sorted((f for f in fs if has(f)), key=lambda f: -len(f.name)):
                if key.startswith(f.name + "-"):
                    return kind, f
        raise CliFailure(f"Unknown field '{key}'")

    async def filter_views(self, fs, views: list, key: str, want: str) -> list:
        """cli_operations.filter_records_on_fields: a field's printed value; `map:key=value`;
        `set:contains=member`. Enum values match in any case, as the datamodel's and xe's spellings
        differ (power-state=Halted)."""
        kind, f = self.field_type(fs, key)
        out = []
        for v in views:
            if kind == "normal":
                have = await self.value(f, v)
                if f.case_insensitive or f.enum:
                    ok = have.lower() == want.lower()
                else:
                    ok = have == want
            elif kind == "map":
                k = key[len(f.name) + 1:]
                try:
                    m = await f.get_map(v)
                except XapiError:
                    m = {}
                if f.case_insensitive:
                    m = {a.lower(): b.lower() for a, b in m.items()}
                    k, want_ = k.lower(), want.lower()
                else:
                    want_ = want
                ok = m.get(k) == want_ and k in m
            else:
                if key[len(f.name) + 1:] != "contains":
                    raise CliFailure("Invalid syntax for set filtering (should be set-param:contains=key)")
                try:
                    have_set = await f.get_set(v)
                except XapiError:
                    have_set = []
                ok = (want.lower() in [x.lower() for x in have_set]) if f.case_insensitive else want in have_set
            if ok:
                out.append(v)
        return out

    async def record_rows(self, prefix: str, ref: str, rec: dict, spec: str | None, default: str) -> list:
        """One object's `name (kind)`/value rows for the fields spec (or default) names, in the record's
        order, every field for `all` (cli_operations.select_fields, as vm-disk-list uses it)."""
        c = CLASSES[prefix]
        names = None if spec == "all" else set((spec or default).split(","))
        v = records.View(self, c.name, ref, rec)
        return [(f.label, await self.value(f, v)) for f in records.fields(prefix, c)
                if names is None or f.name in names]

    async def do_list(self, prefix: str, c: dm.Class) -> None:
        fs = records.fields(prefix, c)
        everything = await self.views(c)
        filters = list(record_tables.DEFAULT_FILTERS.get(prefix, {}).items()) + [
            (k, v) for k, v in self.args.items()
            if k not in STDPARAMS and k not in ("message-priority", "trace") and not k.startswith("database:")]
        shown = everything
        for k, v in filters:
            shown = await self.filter_views(fs, shown, k, v)
        if self.flag("all"):                    # cli_operations: --all prints every record, unfiltered
            shown = everything
        params = self.args.get("params")
        if params == "all":
            names = None
        elif params is not None:
            names = set(params.split(","))
        else:
            names = set(record_tables.DEFAULT_PARAMS.get(prefix, ("uuid", "name-label", "name-description"))) or None
        selected = [f for f in fs if not f.hidden and (names is None or f.name in names)]
        rows = []
        for v in shown:
            rows.append([(f.label, "<expensive field>" if f.expensive else await self.value(f, v))
                         for f in selected])
        await self.print_records(rows)

    async def do_param_list(self, prefix: str, c: dm.Class) -> None:
        v = await self.view(c)
        fs = records.fields(prefix, c)
        await self.print_records([[(f.label, await self.value(f, v)) for f in fs if not f.hidden]])

    async def do_param_get(self, prefix: str, c: dm.Class) -> None:
        v = await self.view(c)
        f = self.lookup_field(records.fields(prefix, c), self.need("param-name"))
        key = self.args.get("param-key")
        if key is not None and f.get_map is not None:       # on other fields xapi ignores param-key
            m = await f.get_map(v)
            if key not in m:
                raise CliFailure(f"Key {key} not found in map")
            await self.print_list([m[key]])
            return
        await self.print_list([await self.value(f, v)])

    async def do_param_set(self, prefix: str, c: dm.Class) -> None:
        v = await self.view(c)
        fs = records.fields(prefix, c)
        whole_maps: dict[str, tuple[records.Field, dict]] = {}     # fields set with set_map, at the end
        for k, value in self.args.items():
            if k == "uuid" or k in STDPARAMS:
                continue
            kind, f = self.field_type(fs, k)
            if kind == "map":
                key = k[len(f.name) + 1:]
                if f.set_in_map is not None:
                    await f.set_in_map(v, key, value)
                elif f.set_map is not None:
                    whole_maps.setdefault(f.name, (f, {}))[1][key] = value
                else:
                    if f.add_to_map is None:
                        raise CliFailure(f"Map field '{f.name}' is read-only.")
                    if key in await f.get_map(v):
                        await f.remove_from_map(v, key)
                    await f.add_to_map(v, key, value)
            elif kind == "set":
                raise CliFailure("Cannot param-set on set fields")
            else:
                if f.set is None:
                    if f.add_to_map is not None:
                        raise CliFailure(f"Field '{k}' is a map or set. use the 'name:key=value' syntax.")
                    raise CliFailure(f"Field '{k}' is read-only.")
                await f.set(v, value)
        for f, kv in whole_maps.values():
            await f.set_map(v, kv)

    async def do_param_add(self, prefix: str, c: dm.Class) -> None:
        v = await self.view(c)
        f = self.lookup_field(records.fields(prefix, c), self.need("param-name"))
        if f.add_to_set is not None:
            key = self.args.get("param-key")
            if key is None:
                raise CliFailure("When adding a key to a set, use the syntax: *-param-add param-name=<name> "
                                 "param-key=<key>")
            await f.add_to_set(v, key)
        elif f.add_to_map is not None:
            for k, value in self.args.items():
                if k not in ("uuid", "param-name", "param-key") and k not in STDPARAMS:
                    await f.add_to_map(v, k, value)
        elif f.get_set is not None or f.get_map is not None:
            raise CliFailure("Parameter is read-only")
        else:
            raise CliFailure("Can only add to parameters of type Set or Map")

    async def do_param_remove(self, prefix: str, c: dm.Class) -> None:
        v = await self.view(c)
        f = self.lookup_field(records.fields(prefix, c), self.need("param-name"))
        key = self.need("param-key")
        if f.get_set is not None and f.remove_from_set is not None:
            if key not in await f.get_set(v):
                raise CliFailure(f"Key {key} is not in the set")
            await f.remove_from_set(v, key)
        elif f.get_map is not None and f.remove_from_map is not None:
            if key not in await f.get_map(v):
                raise CliFailure(f"Key {key} is not in map")
            await f.remove_from_map(v, key)
        elif f.get_set is not None or f.get_map is not None:
            raise CliFailure("Cannot remove parameters from read-only map")
        else:
            raise CliFailure("Can only remove from parameters of type Set or Map")

    async def do_param_clear(self, prefix: str, c: dm.Class) -> None:
        v = await self.view(c)
        f = self.lookup_field(records.fields(prefix, c), self.need("param-name"))
        if f.get_set is not None and f.remove_from_set is not None:
            for member in await f.get_set(v):
                await f.remove_from_set(v, member)
        elif f.clear_map is not None:
            await f.clear_map(v)
        elif f.set_map is not None:
            await f.set_map(v, {})
        elif f.get_map is not None and f.remove_from_map is not None:
            for key in list(await f.get_map(v)):
                await f.remove_from_map(v, key)
        elif f.set is not None:
            try:
                await f.set(v, "")
            except (XapiError, records.RecordFailure):
                raise CliFailure("Cannot clear this parameter") from None
        else:
            raise CliFailure("Can only clear RW parameters")

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
        names = list(cmds) if show_all else [n for n in cmds if n in specs() or n == "help" or n in COMMON_LISTS]
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
        spec = specs().get(cmd)
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

