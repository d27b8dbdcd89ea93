"""The pool database on disk: ``state.db`` in xapi's XML format, written atomically.

Format (xapi's ``ocaml/database/db_xml.ml``)::

    <?xml version='1.0' encoding='utf-8'?>
    <database><manifest><pair key="schema_major_vsn" value="5"/><pair key="schema_minor_vsn" value="..."/>
    <pair key="generation_count" value="N"/></manifest>
    <table name="VM"><row ref="OpaqueRef:..." __ctime="g" __mtime="g" _ref="OpaqueRef:..." name__label="..." .../></table>
    ...</database>

* one ``<table>`` per database class (``NOT_IN_DB`` classes are left out); the tables of classes
  xapi does not persist (``NOT_PERSISTED``: sessions, tasks...) are written empty;
* each row: ``ref``, ``__ctime``/``__mtime`` (the row's generation stamps), then every column
  in byte order, ``_ref`` included; namespaced fields use their database names
  (``xapi.datamodel.db_names``: ``name__label``, ``memory__static_max``...);
* values as xapi's database stores them: strings as they are, ints in decimal, floats as
  ``%.18g``, bools ``true``/``false``, datetimes as their ``YYYYMMDDTHH:MM:SSZ`` text, sets and
  maps as S-expressions of single-quoted strings (``('a' 'b')``, ``(('k' 'v'))``, with ``\\``,
  ``'`` and ``"`` escaped by a backslash; map keys and nested values are first turned into
  strings by their own type, so an ``(int -> string set) map`` holds sets inside strings);
* then whitespace is protected as xapi does (``Xml_spaces``): space ``%.``, tab ``%t``, newline
  ``%n``, carriage return ``%r``, ``%`` itself ``%%``;
* strings are cut at the first character XML cannot carry (as xapi's ``ensure_utf8_xml``).

Fields xapi declares ``~persist:false`` (``allowed_operations``, ``current_operations``, most of
``VM_metrics``...) are written but come back empty after a load, as in xapi: an operation that was
running when the daemon died is not left hanging on its object.

Writing: a snapshot of every table is taken on the event loop in one go (``all_records()`` and the
stamps: containers in the database are replaced, never changed in place, so sharing them is safe),
then the XML is built and written by a worker thread to ``state.db.tmp``, fsynced, renamed over
``state.db`` and the folder fsynced: a crash at any moment leaves the previous or the new file.

Compiled hot loops (``xapi.db._persist``, unless ``XAPI_PURE=1``): the rows are encoded, read
and restored in C, with the same results as the pure-Python code here, which is the reference
(``_write_reference``, byte for byte; ``read_reference``, to which the compiled reader hands any
file outside what xapi writes; ``restore_rows_reference``).

Loading and generations: as xapi, a load is not a write.  Rows come back with their saved
``__ctime``/``__mtime`` (``Table.restore``, in order of ``__mtime``) and the generation is the saved
``generation_count`` (``Database.end_restore``), so an ``event.from`` token keeps its meaning across
a restart: one taken at the saved generation gets just the changes made after the restart.
Deletions were not saved, so an older token gets ``EVENTS_LOST`` (the client re-reads everything)
rather than silently missing one.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from xmlrpc.client import DateTime

from lxml import etree

from xapi import atomic, datamodel as dm
from xapi.compiled import accelerator
from xapi.datamodel.db_names import NOT_IN_DB, NOT_PERSISTED, REF_COLUMN, db_column, reset_on_load
from xapi.datamodel.types import Type
from xapi.db.schema import new_database
from xapi.fastdb import Database

log = logging.getLogger("xapi.persist")

SCHEMA_MAJOR = 5
SCHEMA_MINOR = 602      # the same as host.software_version:db_schema (startup.py)

_MAJOR, _MINOR, _GENERATION = "schema_major_vsn", "schema_minor_vsn", "generation_count"


# ---------------------------------------------------------------------------------------------
# Xml_spaces: whitespace inside attribute values, protected with '%'
_PROTECT = str.maketrans({" ": "%.", "\t": "%t", "\n": "%n", "\r": "%r", "%": "%%"})
_NEEDS_PROTECT = re.compile(r"[ \t\n\r%]")
_UNPROTECTED = {"_": "  ", ".": " ", "t": "\t", "n": "\n", "r": "\r", "%": "%"}
_PROTECTED = re.compile(r"%([_.tnr%])")


def protect(s: str) -> str:
    return s.translate(_PROTECT) if _NEEDS_PROTECT.search(s) else s


def unprotect(s: str) -> str:
    # '%_' stands for two spaces (an old form xapi still reads); an unknown '%x' is left as it is.
    return _PROTECTED.sub(lambda m: _UNPROTECTED[m.group(1)], s) if "%" in s else s


# ---------------------------------------------------------------------------------------------
# Characters XML 1.0 can carry; a string is cut at the first one it can't (xapi's ensure_utf8_xml).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


_truncated: set = set()     # strings already reported, so each flush doesn't repeat them


def xml_safe(s: str) -> str:
    m = _NOT_XML.search(s)
    if m is None:
        return s
    if s not in _truncated and len(_truncated) < 1000:
        _truncated.add(s)
        log.warning("state.db: string truncated at a character XML cannot carry: %r", s[:m.start()])
    return s[:m.start()]


# ---------------------------------------------------------------------------------------------
# S-expressions, as xapi's SExpr writes and reads them
_ESCAPED = re.compile(r"""[\\'"]""")


def sexpr_string(s: str) -> str:
    """One quoted string: 'text', with backslash, single and double quote escaped by a backslash."""
    if _ESCAPED.search(s):
        s = s.replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'")
    return f"'{s}'"


def sexpr_set(items) -> str:
    return "(" + " ".join(map(sexpr_string, items)) + ")"


def sexpr_map(pairs) -> str:
    return "(" + " ".join(f"({sexpr_string(k)} {sexpr_string(v)})" for k, v in pairs) + ")"


_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\n]+|;[^\n]*\n)
  | (?P<open>\()
  | (?P<close>\))
  | '(?P<sq>[^'\\]*(?:\\.[^'\\]*)*)'
  | "(?P<dq>[^"\\]*(?:\\.[^"\\]*)*)"
  | (?P<sym>[^"'\ \t\r\n()]+)
""", re.VERBOSE | re.DOTALL)
_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)


def _unescape(s: str) -> str:
    return _UNESCAPE.sub(r"\1", s) if "\\" in s else s


def parse_sexpr(text: str):
    """An S-expression: nested lists of strings (symbols are read as strings too)."""
    stack: list[list] = [[]]
    pos, end = 0, len(text)
    match = _TOKEN.match
    while pos < end:
        m = match(text, pos)
        if m is None:
            raise ValueError(f"bad S-expression at {pos}: {text[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind == "ws":
            continue
        if kind == "open":
            stack.append([])
        elif kind == "close":
            if len(stack) == 1:
                raise ValueError("unbalanced ')' in S-expression")
            node = stack.pop()
            stack[-1].append(node)
        else:
            stack[-1].append(_unescape(m.group(kind)) if kind != "sym" else m.group(kind))
    if len(stack) != 1 or len(stack[0]) != 1:
        raise ValueError("S-expression is not exactly one value")
    return stack[0][0]


# Sets and maps of plain quoted strings (no escapes, no comments), the usual case, read by one regex
# each instead of the tokenizer: a pool's database is hundreds of thousands of them (load time).
_PLAIN = r"'[^'\\\"]*'"
_PLAIN_SET = re.compile(rf"\((?:[ \t\r\n]*{_PLAIN})*[ \t\r\n]*\)")
_PLAIN_MAP = re.compile(rf"\((?:[ \t\r\n]*\([ \t\r\n]*{_PLAIN}[ \t\r\n]+{_PLAIN}[ \t\r\n]*\))*[ \t\r\n]*\)")
_QUOTED = re.compile(r"'([^']*)'")


def parse_set(text: str) -> list[str]:
    if _PLAIN_SET.fullmatch(text):
        return _QUOTED.findall(text)
    node = parse_sexpr(text)
    if not isinstance(node, list) or not all(isinstance(x, str) for x in node):
        raise ValueError(f"not a set: {text[:60]!r}")
    return node


def parse_map(text: str) -> list[tuple[str, str]]:
    if _PLAIN_MAP.fullmatch(text):
        items = _QUOTED.findall(text)
        return list(zip(items[::2], items[1::2]))
    node = parse_sexpr(text)
    if not isinstance(node, list):
        raise ValueError(f"not a map: {text[:60]!r}")
    out = []
    for pair in node:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise ValueError(f"not a map: {text[:60]!r}")
        out.append((pair[0], pair[1]))
    return out


# ---------------------------------------------------------------------------------------------
# Values <-> the strings xapi's database holds (before whitespace protection)
@lru_cache(maxsize=None)
def encoder(t: Type):
    """A function: in-memory value of type t -> xapi database string."""
    k = t.kind
    if k in ("string", "ref", "enum"):
        return lambda v: xml_safe(v if type(v) is str else str(v))
    if k == "int":
        return lambda v: str(int(v))
    if k == "float":
        return lambda v: format(float(v), ".18g")
    if k == "bool":
        return lambda v: "true" if v else "false"
    if k == "datetime":
        return lambda v: xml_safe(v.value if isinstance(v, DateTime) else str(v))
    if k == "set":
        elem = encoder(t.elem)
        return lambda v: sexpr_set([elem(x) for x in v]) if v else "()"
    if k == "map":
        key, val = encoder(t.key), encoder(t.elem)
        return lambda v: sexpr_map([(key(a), val(b)) for a, b in v.items()]) if v else "()"
    if k == "option":
        elem = encoder(t.elem)
        return lambda v: "" if v is None else elem(v)
    return lambda v: xml_safe(str(v))


def _bool(s: str) -> bool:
    if s == "true":
        return True
    if s == "false":
        return False
    raise ValueError(f"not a bool: {s!r}")


@lru_cache(maxsize=None)
def decoder(t: Type):
    """A function: xapi database string -> in-memory value of type t (ValueError if it isn't one)."""
    k = t.kind
    if k in ("string", "ref", "enum"):
        return lambda s: s
    if k == "int":
        return int
    if k == "float":
        return float
    if k == "bool":
        return _bool
    if k == "datetime":
        return DateTime
    if k == "set":
        elem = decoder(t.elem)
        # most sets and maps of a pool are empty: skip the S-expression parser for them (load time)
        return lambda s: [] if s == "()" else [elem(x) for x in parse_set(s)]
    if k == "map":
        key, val = decoder(t.key), decoder(t.elem)
        return lambda s: {} if s == "()" else {key(a): val(b) for a, b in parse_map(s)}
    if k == "option":
        elem = decoder(t.elem)
        return lambda s: None if s == "" else elem(s)
    return lambda s: s


# ---------------------------------------------------------------------------------------------
# Per-class column plans
@lru_cache(maxsize=None)
def _write_plan(cls: str) -> tuple:
    """((column, wire field or None for _ref, encoder), ...) in column (byte) order."""
    cols = [(db_column(cls, f.name), f.name, encoder(f.type)) for f in dm.CLASSES[cls].fields.values()]
    cols.append((REF_COLUMN, None, None))
    return tuple(sorted(cols, key=lambda c: c[0]))


@lru_cache(maxsize=None)
def _read_plan(cls: str) -> dict:
    """column -> (wire field, decoder); None for the fields xapi resets at load (~persist:false)."""
    plan = {db_column(cls, f.name): None if reset_on_load(cls, f.name) else (f.name, decoder(f.type))
            for f in dm.CLASSES[cls].fields.values()}
    # the row's own attributes are read elsewhere (ref, stamps); skipped like unkept fields
    plan.update(dict.fromkeys(("ref", "__ctime", "__mtime", REF_COLUMN)))
    return plan


def persisted_tables(db: Database) -> list[str]:
    """The tables written to state.db, in byte order of their names."""
    return sorted(t for t in db.tables() if t not in NOT_IN_DB and t in dm.CLASSES)


# ---------------------------------------------------------------------------------------------
@dataclass
class Snapshot:
    """The database at one generation: (table, rows or None for a table written empty)."""
    generation: int
    tables: list


def snapshot(db: Database) -> Snapshot:
    """Copies every persisted row with its stamps; synchronous, so it is one point in time."""
    tables = []
    for name in persisted_tables(db):
        if name in NOT_PERSISTED:
            tables.append((name, None))
            continue
        table = db.table(name)
        stamps = table.stamps
        tables.append((name, [(ref, *stamps(ref), rec) for ref, rec in table.all_records().items()]))
    return Snapshot(db.generation, tables)


def _attr_value(cls: str, ref: str, field: str, enc, value) -> str:
    """The attribute text of `value` (field `field`), whitespace protected."""
    try:
        text = enc(value)
    except (TypeError, ValueError, AttributeError) as e:
        log.warning("state.db: %s %s.%s: cannot write %r (%s); writing its default",
                    cls, ref, field, value, e)
        text = enc(dm.CLASSES[cls].fields[field].initial())
    return protect(text)


def _row_attrs(cls: str, ref: str, created: int, modified: int, rec: dict) -> dict:
    attrs = {"ref": ref, "__ctime": str(created), "__mtime": str(modified)}
    for column, field, enc in _write_plan(cls):
        attrs[column] = ref if field is None else _attr_value(cls, ref, field, enc, rec.get(field))
    return attrs


def _write_compiled(f, snap: Snapshot) -> None:
    """What ``_write_reference`` writes, byte for byte; the rows by the compiled encoder."""
    f.write(b"<?xml version='1.0' encoding='utf-8'?>\n<database><manifest>")
    for key, value in ((_MAJOR, SCHEMA_MAJOR), (_MINOR, SCHEMA_MINOR), (_GENERATION, snap.generation)):
        f.write(f'<pair key="{key}" value="{value}"/>'.encode())
    f.write(b"</manifest>\n")
    for name, rows in snap.tables:          # class names: nothing to escape
        f.write(f'<table name="{name}">'.encode())
        # ~5 ms of rows per call: the event loop's thread gets the GIL back in between
        for start in range(0, len(rows or ()), 1000):
            f.write(_compiled.encode_rows(name, rows[start:start + 1000]))
        f.write(b"</table>\n")
    f.write(b"</database>")


def _write_reference(f, snap: Snapshot) -> None:
    with etree.xmlfile(f, encoding="utf-8") as xf:
        xf.write_declaration()
        with xf.element("database"):
            with xf.element("manifest"):
                for key, value in ((_MAJOR, SCHEMA_MAJOR), (_MINOR, SCHEMA_MINOR),
                                   (_GENERATION, snap.generation)):
                    xf.write(etree.Element("pair", {"key": key, "value": str(value)}))
            xf.write("\n")
            for name, rows in snap.tables:
                with xf.element("table", {"name": name}):
                    for ref, created, modified, rec in rows or ():
                        xf.write(etree.Element("row", _row_attrs(name, ref, created, modified, rec)))
                        xf.write("\n")
                xf.write("\n")


def write_snapshot(snap: Snapshot, path: str) -> None:
    """Writes `snap` to `path` atomically: path.tmp, fsync, rename, fsync of the folder."""
    writer = _write_reference if _compiled is None else _write_compiled
    atomic.write_with(path, lambda f: writer(f, snap), tmp=path + ".tmp", buffering=1 << 20)


def save(db: Database, path: str) -> int:
    """Writes `db` to `path` now (synchronously); returns the generation written."""
    snap = snapshot(db)
    write_snapshot(snap, path)
    return snap.generation


# ---------------------------------------------------------------------------------------------
def _decode_row(cls: str, ref: str, attrs, warned: set) -> dict:
    plan = _read_plan(cls)
    fields = dm.CLASSES[cls].fields
    row = {}
    for column, text in attrs:
        entry = plan.get(column, False)
        if entry is None:           # not kept across restarts: left to its default below
            continue
        if entry is False:
            if (cls, column) not in warned:
                warned.add((cls, column))
                log.info("state.db: ignoring column %s.%s, unknown to this schema", cls, column)
            continue
        field, dec = entry
        try:
            row[field] = dec(unprotect(text) if "%" in text else text)
        except (ValueError, TypeError) as e:
            log.warning("state.db: %s %s.%s: unreadable value %r (%s); using the default",
                        cls, ref, field, text[:80], e)
    for name, f in fields.items():
        if name not in row:
            row[name] = f.initial()
    return row


def read(path: str) -> tuple[dict, list]:
    """Parses `path`: (manifest pairs, [(table, ref, ctime, mtime, row values)] in file order).

    The compiled reader (``xapi.db._persist``) reads what xapi and this module write and hands
    anything else back (``Fallback``) to the reference, ``read_reference``."""
    if _compiled is not None:
        try:
            return _compiled.read(path)
        except _compiled.Fallback as e:
            log.info("state.db: %s: read by the reference reader (%s)", path, e)
    return read_reference(path)


def read_reference(path: str) -> tuple[dict, list]:
    """``read`` in pure Python, with lxml: the reference."""
    manifest: dict[str, str] = {}
    rows = []
    warned: set = set()
    table = None            # current table name; "" while inside an ignored table
    root_seen = False
    context = etree.iterparse(path, events=("start", "end"), huge_tree=True, resolve_entities=False,
                              no_network=True)
    for event, el in context:
        tag = el.tag
        if event == "start":
            if tag == "database":
                if root_seen:
                    raise ValueError("state.db: nested <database>")
                root_seen = True
            elif tag == "table":
                name = el.get("name")
                if name is None:
                    raise ValueError("state.db: <table> without a name")
                if name in dm.CLASSES and name not in NOT_IN_DB:
                    table = name
                else:
                    table = ""
                    log.info("state.db: ignoring table %s, unknown to this schema", name)
            elif tag not in ("manifest", "row", "pair"):
                raise ValueError(f"state.db: unexpected tag <{tag}>")
            continue
        if tag == "pair":
            manifest[el.get("key")] = el.get("value")
        elif tag == "row":
            if table is None:
                raise ValueError("state.db: <row> outside a <table>")
            ref = el.get("ref")
            if ref is None:
                raise ValueError(f"state.db: row without a ref in table {table}")
            if table:
                ctime, mtime = int(el.get("__ctime", "0")), int(el.get("__mtime", "0"))
                rows.append((table, ref, ctime, mtime, _decode_row(table, ref, el.items(), warned)))
        elif tag == "table":
            table = None
        el.clear()
        if tag in ("row", "table"):
            parent = el.getparent()
            while el.getprevious() is not None:
                del parent[0]
    if not root_seen:
        raise ValueError("state.db: no <database>")
    if _GENERATION not in manifest:
        raise ValueError("state.db: the manifest has no generation_count")
    return manifest, rows


def load(path: str) -> Database:
    """A database holding what `path` holds, rows with their saved stamps, at the saved generation
    (see the module doc)."""
    # Hundreds of thousands of new containers and no cycle among them: the collector, left on,
    # would rescan the growing heap again and again (~40% of a pool's load time).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _load(path)
    finally:
        if collecting:
            gc.enable()


def restore_rows_reference(db: Database, rows: list) -> None:
    """Adds `rows` (as ``read`` gives them) with their stamps, in order of last change (then of
    creation, then of the file); the compiled ``restore_rows`` does the same."""
    stamped = []
    for i, (table, ref, ctime, mtime, values) in enumerate(rows):
        created = max(ctime, 1)                 # a row without stamps counts as the oldest
        stamped.append((max(mtime, created), created, i, table, ref, values))
    stamped.sort(key=lambda r: r[:3])
    for modified, created, _i, table, ref, values in stamped:
        t = db.table(table)
        if ref in t:
            log.warning("state.db: duplicate row %s in table %s ignored", ref, table)
            continue
        t.restore(ref, values, created, modified)


def _load(path: str) -> Database:
    manifest, rows = read(path)
    generation = int(manifest[_GENERATION])
    major = manifest.get(_MAJOR)
    if major is not None and major != str(SCHEMA_MAJOR):
        log.warning("state.db: schema major version %s (this is %d); loading what is known",
                    major, SCHEMA_MAJOR)
    db = new_database()
    if _compiled is None or not _compiled.restore_rows(db, rows):
        restore_rows_reference(db, rows)
    if db.generation > generation:
        log.warning("state.db: rows stamped up to %d, after the saved generation %d; resuming from %d",
                    db.generation, generation, db.generation)
    db.end_restore(max(generation, db.generation))
    log.info("state.db: loaded %d rows from %s at generation %d", len(rows), path, db.generation)
    return db


_compiled = accelerator("xapi.db._persist")


# ---------------------------------------------------------------------------------------------
class Persister:
    """Flushes a database to `path` every `interval` seconds when it changed (interval <= 0: only
    when asked, and at close).  Snapshots are taken on the loop; XML and disk work happen in a
    worker thread of its own."""

    def __init__(self, db: Database, path: str, interval: float = 30.0) -> None:
        self.db = db
        self.path = path
        self.interval = interval
        self.saved_generation: int | None = None     # generation of the file on disk, if ours
        self.flushes = 0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="state.db")
        self._closed = False

    def start(self) -> None:
        if self.interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="state.db flush")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush_now()
            except Exception:
                log.exception("state.db: flush to %s failed; the previous file is kept", self.path)

    async def flush_now(self) -> bool:
        """Writes the database if it changed since the last flush; True if it wrote."""
        async with self._lock:
            if self.db.generation == self.saved_generation:
                return False
            started = time.monotonic()
            snap = snapshot(self.db)
            taken = time.monotonic()
            await asyncio.get_running_loop().run_in_executor(self._executor, write_snapshot, snap, self.path)
            self.saved_generation = snap.generation
            self.flushes += 1
            log.debug("state.db: generation %d written (snapshot %.1f ms, write %.1f ms)", snap.generation,
                      (taken - started) * 1e3, (time.monotonic() - taken) * 1e3)
            return True

    async def close(self) -> None:
        """Stops the timer and flushes one last time."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        try:
            await self.flush_now()
        finally:
            self._executor.shutdown(wait=True)
