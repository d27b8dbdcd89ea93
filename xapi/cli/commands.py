"""The xe commands: generated from the datamodel for every class with uuids (`<class>-list`,
`-param-list`, `-param-get`, `-param-set`, `-param-add`, `-param-remove`, `-param-clear`), plus `help`
and a few hand-written operations. Every XenAPI call goes through the RPC layer's dispatch (arity,
types, session, RBAC, events, audit) with the CLI session.

Output follows xapi's cli_printer: a record is its fields one a line, `name ( RO): value`, the first
name padded on the right and the others on the left to the longest name plus four; maps print as
`k: v; k2: v2`, sets as `a; b`, references as the uuid they point to. `--minimal` prints one
comma-joined line (commas in values escaped).
"""
from __future__ import annotations

import inspect
from xmlrpc.client import DateTime

from xapi import datamodel as dm
from xapi.datamodel.errors import XapiError

NULL_REF = "OpaqueRef:NULL"

# the doc lines xe prints for the commonest errors (xen-api datamodel_errors.ml), then `param: value`
ERROR_DOCS = {
    "UUID_INVALID": ("The uuid you supplied was invalid.", ("type", "uuid")),
    "HANDLE_INVALID": ("You gave an invalid object reference.  The object may have recently been deleted.  "
                       "The class parameter gives the type of reference given, and the handle parameter "
                       "echoes the bad value given.", ("class", "handle")),
    "SESSION_AUTHENTICATION_FAILED": ("The credentials given by the user are incorrect, so access has been "
                                      "denied, and you have not been issued a session handle.", ("message",)),
    "RBAC_PERMISSION_DENIED": ("You do not have the required permissions to perform this operation.",
                               ("permission", "message")),
    "MAP_DUPLICATE_KEY": ("You tried to add a key-value pair to a map, but that key is already there.",
                          ("type", "param_name", "uuid", "key")),
}


class CliError(Exception):
    """A failure the CLI reports in its own words (xapi's Cli_failure)."""


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

DEFAULT_LIST = {
    "vm": ("uuid", "name_label", "power_state"),
    "host": ("uuid", "name_label", "name_description"),
    "sr": ("uuid", "name_label", "name_description", "host", "type", "content_type"),
    "vdi": ("uuid", "name_label", "name_description", "SR", "virtual_size", "sharable", "read_only"),
    "pbd": ("uuid", "host", "SR", "device_config", "currently_attached"),
    "task": ("uuid", "name_label", "name_description", "status", "progress"),
    "network": ("uuid", "name_label", "name_description", "bridge"),
    "pif": ("uuid", "device", "MAC", "currently_attached", "VLAN", "network", "host"),
    "vbd": ("uuid", "VM", "VDI", "device", "empty"),
    "vif": ("uuid", "VM", "device", "network", "MAC"),
    "pool": ("uuid", "name_label", "name_description", "master", "default_SR"),
}

# commands that aren't generated: name -> (help text, handler name)
SPECIAL = {
    "help": "Display help. [--all] [--minimal] [<command>]",
    "vm-start": "Start a VM. uuid=<uuid> | vm=<name or uuid> [--force] [paused=true]",
    "vm-shutdown": "Shut a VM down. uuid=<uuid> | vm=<name or uuid> [--force]",
    "vm-reboot": "Reboot a VM. uuid=<uuid> | vm=<name or uuid> [--force]",
    "vm-suspend": "Suspend a VM. uuid=<uuid> | vm=<name or uuid>",
    "vm-resume": "Resume a VM. uuid=<uuid> | vm=<name or uuid>",
    "vm-destroy": "Destroy a VM record. uuid=<uuid>",
    "sr-scan": "Scan an SR. uuid=<uuid>",
    "task-cancel": "Cancel a task. uuid=<uuid>",
    "vdi-destroy": "Destroy a VDI. uuid=<uuid>",
    "pbd-plug": "Plug a PBD. uuid=<uuid>",
    "pbd-unplug": "Unplug a PBD. uuid=<uuid>",
    "host-enable": "Enable a host. [uuid=<uuid>]",
    "host-disable": "Disable a host. [uuid=<uuid>]",
    "vdi-create": "Create a VDI. sr-uuid=<uuid> name-label=<name> virtual-size=<bytes> [type=user] "
                  "[sharable=false] [read-only=false]",
}

GENERATED = ("list", "param-list", "param-get", "param-set", "param-add", "param-remove", "param-clear")


def all_commands() -> dict[str, str]:
    cmds = dict(SPECIAL)
    for prefix, c in CLASSES.items():
        cmds[f"{prefix}-list"] = f"List the {c.name}s. [params=<p1,p2,...>|all] [--minimal] [<field>=<value>]"
        cmds[f"{prefix}-param-list"] = f"List all the parameters of a {c.name}. uuid=<uuid>"
        cmds[f"{prefix}-param-get"] = f"Get a parameter of a {c.name}. uuid=<uuid> param-name=<p> [param-key=<k>]"
        cmds[f"{prefix}-param-set"] = f"Set parameters of a {c.name}. uuid=<uuid> <p>=<v> [<map>:<k>=<v>]"
        cmds[f"{prefix}-param-add"] = f"Add to a set or map of a {c.name}. uuid=<uuid> param-name=<p> " \
                                      "[param-key=<k>] [<k>=<v>]"
        cmds[f"{prefix}-param-remove"] = f"Remove a key from a set or map of a {c.name}. uuid=<uuid> " \
                                         "param-name=<p> param-key=<k>"
        cmds[f"{prefix}-param-clear"] = f"Clear a parameter of a {c.name}. uuid=<uuid> param-name=<p>"
    return dict(sorted(cmds.items()))


COMMANDS = all_commands()


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
    def __init__(self, ctx, session: str, out, args: dict, flags: set) -> None:
        self.ctx = ctx              # the request: app, local, peer
        self.app = ctx.app
        self.session = session
        self.out = out              # async callable(kind, text): kind "print" | "stderr"
        self.args = args
        self.flags = flags
        self._uuids: dict[str, str] = {}

    async def call(self, method: str, *params):
        _, result = self.app.endpoints._call(self.ctx, method, [self.session, *params])
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
            return v.lower()       # xe prints enums in lowercase (power-state: running)
        if isinstance(v, DateTime):
            return v.value
        if v is None:
            return ""
        return str(v)

    async def record_lines(self, c: dm.Class, rec: dict, fields) -> list[tuple[str, str]]:
        rows = []
        for name in fields:
            f = c.fields[name]
            rows.append((f"{hyphen(name)} {marker(f, c)}", await self.fmt(f.type, rec.get(name))))
        return rows

    async def print_records(self, records: list[list[tuple[str, str]]]) -> None:
        if "minimal" in self.flags:
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
            raise CliError("Required parameter not found: uuid")
        return await self.call(f"{c.name}.get_by_uuid", uuid)

    async def select(self, c: dm.Class, prefix: str) -> list[str]:
        """The objects a command names: uuid=, <class>=<name or uuid>, else field filters."""
        if "uuid" in self.args:
            return [await self.by_uuid(c, self.args["uuid"])]
        key = prefix
        if key in self.args:
            v = self.args[key]
            recs = await self.call(f"{c.name}.get_all_records")
            refs = [r for r, rec in recs.items() if rec.get("uuid") == v or rec.get("name_label") == v]
            if not refs:
                raise CliError(f"No matching {c.name}s found")
            return refs
        recs = await self.call(f"{c.name}.get_all_records")
        refs = await self.filter(c, recs, {k: v for k, v in self.args.items()})
        if not refs:
            raise CliError(f"No matching {c.name}s found")
        return refs

    async def filter(self, c: dm.Class, recs: dict, filters: dict) -> list[str]:
        wanted = []
        for k, v in filters.items():
            if k in ("params", "database", "minimal", "multiple", "force"):
                continue
            wanted.append((self.field_of(c, k), v))
        out = []
        for ref, rec in recs.items():
            ok = True
            for name, v in wanted:
                if await self.fmt(c.fields[name].type, rec.get(name)) != v:
                    ok = False
                    break
            if ok:
                out.append(ref)
        return out

    # -- generated commands --
    async def do_list(self, prefix: str, c: dm.Class) -> None:
        recs = await self.call(f"{c.name}.get_all_records")
        filters = dict(self.args)
        if prefix == "vm":
            filters.setdefault("is-a-template", "false")
            filters.setdefault("is-a-snapshot", "false")
        refs = await self.filter(c, recs, filters)
        params = self.args.get("params")
        if params == "all":
            fields = list(c.fields)
        elif params:
            fields = [self.field_of(c, p.strip()) for p in params.split(",") if p.strip()]
        else:
            fields = [f for f in DEFAULT_LIST.get(prefix, ("uuid", "name_label", "name_description"))
                      if f in c.fields]
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
            raise CliError("Required parameter not found: param-name")
        name = self.field_of(c, pname)
        rec = await self.call(f"{c.name}.get_record", ref)
        f = c.fields[name]
        value = rec.get(name)
        key = self.args.get("param-key")
        if key is not None:
            if not isinstance(value, dict):
                raise CliError(f"Parameter {pname} is not a map")
            if key not in value:
                raise CliError(f"Key {key} not found in map")
            await self.out("print", await self.fmt(f.type.elem, value[key]))
            return
        await self.out("print", await self.fmt(f.type, value))

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
                name = self.field_of(c, mname)
                if f"remove_from_{name}" not in c.messages or f"add_to_{name}" not in c.messages:
                    raise CliError(f"Parameter {mname} is read-only")
                await self.call(f"{c.name}.remove_from_{name}", ref, key)
                await self.call(f"{c.name}.add_to_{name}", ref, key, v)
                continue
            name = self.field_of(c, k)
            setter = f"set_{name}"
            if setter not in c.messages:
                raise CliError(f"Parameter {k} is read-only")
            await self.call(f"{c.name}.{setter}", ref, await self.convert(c.fields[name].type, v))

    async def do_param_add(self, prefix: str, c: dm.Class) -> None:
        ref = await self.by_uuid(c, self.args.get("uuid"))
        pname = self.args.get("param-name")
        if pname is None:
            raise CliError("Required parameter not found: param-name")
        name = self.field_of(c, pname)
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
                raise CliError("Required parameter not found: param-key")
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
            raise CliError("Required parameter not found: " + ("param-name" if pname is None else "param-key"))
        name = self.field_of(c, pname)
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
            raise CliError("Required parameter not found: param-name")
        name = self.field_of(c, pname)
        if f"set_{name}" not in c.messages:
            raise CliError(f"Parameter {pname} is read-only")
        t = c.fields[name].type
        empty = {} if t.kind == "map" else [] if t.kind == "set" else ""
        await self.call(f"{c.name}.set_{name}", ref, empty)

    # -- hand-written --
    async def do_help(self) -> None:
        topic = self.args.get("_topic")
        if topic:
            if topic not in COMMANDS:
                raise Unknown(topic)
            await self.out("print", f"command name            : {topic}\n"
                                    f"        description     : {COMMANDS[topic]}")
            return
        names = list(COMMANDS) if "all" in self.flags else \
            [n for n in COMMANDS if n in SPECIAL or n.split("-")[0] in ("vm", "host", "sr", "vdi", "pool",
                                                                       "network", "pif", "vif", "vbd", "task")]
        if "minimal" in self.flags:
            await self.out("print", ",".join(names))
            return
        await self.out("print", "Usage: xe <command> [-s server] [-pw passwd] [-p port] [-u user] "
                                "[-pwf password-file]\n  [command specific arguments]\n\n"
                                "To get help on a specific command: xe help <command>\n"
                                "To get a full listing of commands: xe help --all\n\n"
                                + ("All commands:" if "all" in self.flags else "Common commands:") + "\n")
        line, lines = "    ", []
        for n in names:
            if len(line) + len(n) + 2 > 80 and line.strip():
                lines.append(line.rstrip())
                line = "    "
            line += n + ", "
        lines.append(line.rstrip().rstrip(","))
        await self.out("print", "\n".join(lines))

    async def vm_op(self, cmd: str) -> None:
        c = dm.CLASSES["VM"]
        force = "force" in self.flags
        refs = await self.select(c, "vm")
        if len(refs) > 1 and "multiple" not in self.flags:
            raise CliError("Multiple matches VMs found. --multiple required to complete the operation")
        for ref in refs:
            if cmd == "vm-start":
                await self.call("VM.start", ref, self.args.get("paused", "false") == "true", force)
            elif cmd == "vm-shutdown":
                await self.call("VM.hard_shutdown" if force else "VM.clean_shutdown", ref)
            elif cmd == "vm-reboot":
                await self.call("VM.hard_reboot" if force else "VM.clean_reboot", ref)
            elif cmd == "vm-suspend":
                await self.call("VM.suspend", ref)
            elif cmd == "vm-resume":
                await self.call("VM.resume", ref, False, force)
            elif cmd == "vm-destroy":
                await self.call("VM.destroy", ref)

    async def simple_op(self, cmd: str) -> None:
        prefix, op = cmd.split("-", 1)
        c = CLASSES[prefix]
        if prefix == "host" and "uuid" not in self.args:
            refs = [self.app.host_ref]
        else:
            refs = [await self.by_uuid(c, self.args.get("uuid"))]
        method = {"scan": "scan", "cancel": "cancel", "destroy": "destroy", "plug": "plug",
                  "unplug": "unplug", "enable": "enable", "disable": "disable"}[op]
        for ref in refs:
            await self.call(f"{c.name}.{method}", ref)

    async def vdi_create(self) -> None:
        sr_uuid = self.args.get("sr-uuid")
        if sr_uuid is None:
            raise CliError("Required parameter not found: sr-uuid")
        size = self.args.get("virtual-size")
        if size is None:
            raise CliError("Required parameter not found: virtual-size")
        sr = await self.call("SR.get_by_uuid", sr_uuid)
        record = {"name_label": self.args.get("name-label", ""),
                  "name_description": self.args.get("name-description", ""),
                  "SR": sr, "virtual_size": str(parse_size(size)), "type": self.args.get("type", "user"),
                  "sharable": self.args.get("sharable", "false") == "true",
                  "read_only": self.args.get("read-only", "false") == "true",
                  "other_config": {}, "xenstore_data": {}, "sm_config": {}, "tags": []}
        ref = await self.call("VDI.create", record)
        await self.out("print", await self.uuid_of("VDI", ref))

    async def run(self, cmd: str) -> None:
        if cmd == "help":
            return await self.do_help()
        if cmd.startswith("vm-") and cmd in SPECIAL:
            return await self.vm_op(cmd)
        if cmd == "vdi-create":
            return await self.vdi_create()
        if cmd in SPECIAL:
            return await self.simple_op(cmd)
        for suffix in GENERATED:
            if cmd.endswith("-" + suffix):
                prefix = cmd[:-len(suffix) - 1]
                c = CLASSES.get(prefix)
                if c is not None:
                    return await getattr(self, "do_" + suffix.replace("-", "_"))(prefix, c)
        raise Unknown(cmd)


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


def describe_error(e: XapiError) -> tuple[str | None, list[str]]:
    """xe's words for a XenAPI failure: (text for stderr, or None for a raw Error(code, params))."""
    code = e.code
    params = [str(p) for p in e.description[1:]]
    doc = ERROR_DOCS.get(code)
    if doc is None:
        return None, [code, *params]
    text, names = doc
    lines = [text]
    if code == "SESSION_AUTHENTICATION_FAILED":
        params = params[1:]        # [user; message]: xapi shows the message
    for n, v in zip(names, params):
        lines.append(f"{n}: {v}")
    return "\n".join(lines) + "\n", [code, *params]
