"""state.db: xapi's XML format, value encodings, atomic writes and generations (xapi.db.persist)."""
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from xmlrpc.client import DateTime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from xapi import datamodel as dm
from xapi.datamodel import db_names
from xapi.datamodel.types import Type
from xapi.db import persist
from xapi.db.schema import insert, new_database
from xapi.fastdb import EventsLost

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROW_CLASSES = sorted(c for c in dm.CLASSES if dm.CLASSES[c].fields and c not in db_names.NOT_IN_DB
                     and c not in db_names.NOT_PERSISTED)


def roundtrip(db, tmp):
    path = os.path.join(tmp, "state.db")
    persist.save(db, path)
    return persist.load(path), path


def records(db, cls):
    return db.table(cls).all_records()


def kept(db, cls):
    """The records as a restart gives them back: ~persist:false fields at their defaults."""
    fields = dm.CLASSES[cls].fields
    return {ref: {k: fields[k].initial() if db_names.reset_on_load(cls, k) else v for k, v in rec.items()}
            for ref, rec in records(db, cls).items()}


# ---------------------------------------------------------------------------------- names
def test_db_column_names_follow_xapi_namespaces():
    col = db_names.db_column
    assert col("VM", "name_label") == "name__label"
    assert col("VM", "memory_static_max") == "memory__static_max"
    assert col("VM", "VCPUs_params") == "VCPUs__params"
    assert col("VM", "PV_bootloader") == "PV__bootloader"
    assert col("VM", "HVM_boot_policy") == "HVM__boot_policy"
    assert col("VM", "actions_after_crash") == "actions__after_crash"
    assert col("VM", "other_config") == "other_config"
    assert col("VM", "power_state") == "power_state"
    assert col("VM", "PCI_bus") == "PCI_bus"
    assert col("VM_metrics", "VCPUs_number") == "VCPUs__number"
    assert col("host", "API_version_major") == "API_version__major"
    assert col("host", "memory_overhead") == "memory__overhead"
    assert col("host_metrics", "memory_total") == "memory__total"
    assert col("VIF", "qos_algorithm_type") == "qos__algorithm_type"
    assert col("PIF_metrics", "io_read_kbs") == "io__read_kbs"
    assert col("SR", "name_description") == "name__description"
    # pool declares name_label as a plain field in xapi
    assert col("pool", "name_label") == "name_label"
    assert db_names.wire_field("VM", "memory__target") == "memory_target"


def test_every_namespaced_field_exists_and_columns_are_distinct():
    for cls, spaces in db_names.NAMESPACES.items():
        assert cls in dm.CLASSES, cls
        fields = dm.CLASSES[cls].fields
        for wire in db_names.columns(cls):
            assert wire in fields, (cls, wire)
        cols = [db_names.db_column(cls, f) for f in fields]
        assert len(set(cols)) == len(cols), cls
        assert all(db_names.wire_field(cls, db_names.db_column(cls, f)) == f for f in fields)
    for cls, names in db_names.NOT_PERSISTED_FIELDS.items():
        assert cls == "*" or names <= set(dm.CLASSES[cls].fields), cls
    # every class with a name_label either uses the name namespace or is known not to
    for cls, c in dm.CLASSES.items():
        if "name_label" in c.fields and cls not in ("pool", "sr_stat"):
            assert db_names.db_column(cls, "name_label") == "name__label", cls


# ---------------------------------------------------------------------------------- S-expressions
def test_sexpr_encoding_matches_xapi():
    assert persist.sexpr_set([]) == "()"
    assert persist.sexpr_set(["a", "b"]) == "('a' 'b')"
    assert persist.sexpr_map([("k", "v")]) == "(('k' 'v'))"
    assert persist.sexpr_map([("k", "v"), ("k2", "")]) == "(('k' 'v') ('k2' ''))"
    # backslash, single and double quotes are escaped with a backslash, nothing else is
    assert persist.sexpr_set(["it's"]) == r"('it\'s')"
    assert persist.sexpr_set(['a"b']) == r"('a\"b')"
    assert persist.sexpr_set(["c:\\x"]) == r"('c:\\x')"
    assert persist.sexpr_set(["a (b) ;c"]) == "('a (b) ;c')"


def test_sexpr_parsing_reads_what_xapi_writes():
    assert persist.parse_set("()") == []
    assert persist.parse_set("('a' 'b')") == ["a", "b"]
    assert persist.parse_set(r"('it\'s' 'c:\\x' 'q\"')") == ["it's", "c:\\x", 'q"']
    assert persist.parse_set('("dq" \'sq\')') == ["dq", "sq"]
    assert persist.parse_map("(('k' 'v') ('a b' ''))") == [("k", "v"), ("a b", "")]
    assert persist.parse_map("( ( 'k'   'v' ) )") == [("k", "v")]
    # an (int -> string set) map: the sets travel as strings inside the map
    t = dm.CLASSES["VM_metrics"].fields["VCPUs_flags"].type
    enc = persist.encoder(t)({0: ["blocked", "online"], 1: []})
    assert enc == r"(('0' '(\'blocked\' \'online\')') ('1' '()'))"
    assert persist.decoder(t)(enc) == {0: ["blocked", "online"], 1: []}
    for bad in ("(", "('a'", "'a'", "(('k'))", "(('k' 'v' 'w'))", "('a') ('b')"):
        with pytest.raises(ValueError):
            persist.parse_map(bad) if bad.startswith("((") else persist.parse_set(bad)


_SEXPR_TEXT = st.text(alphabet=st.sampled_from(list("ab '\"\\()\t\n;")), max_size=8)


@settings(max_examples=300, deadline=None)
@given(items=st.lists(_SEXPR_TEXT, max_size=4), keys=st.lists(st.tuples(_SEXPR_TEXT, _SEXPR_TEXT), max_size=3),
       raw=st.text(alphabet=st.sampled_from(list("ab '\"\\() ")), max_size=16))
def test_plain_set_and_map_shortcut_agrees_with_the_tokenizer(items, keys, raw):
    """parse_set/parse_map read plain '...' lists by a regex; anything else goes to the tokenizer:
    both must give the same values, and the same refusal of malformed text."""
    def by_tokenizer(text, as_map):
        node = persist.parse_sexpr(text)
        if as_map:
            if not isinstance(node, list) or not all(isinstance(p, list) and len(p) == 2 and
                                                     all(isinstance(x, str) for x in p) for p in node):
                raise ValueError(text)
            return [tuple(p) for p in node]
        if not isinstance(node, list) or not all(isinstance(x, str) for x in node):
            raise ValueError(text)
        return node

    for text, as_map in ((persist.sexpr_set(items), False), (persist.sexpr_map(keys), True),
                         (raw, False), (raw, True)):
        parse = persist.parse_map if as_map else persist.parse_set
        try:
            expected = by_tokenizer(text, as_map)
        except ValueError:
            with pytest.raises(ValueError):
                parse(text)
            continue
        assert parse(text) == expected
    assert persist.parse_set(persist.sexpr_set(items)) == items
    assert persist.parse_map(persist.sexpr_map(keys)) == keys


def test_whitespace_protection_matches_xapi():
    assert persist.protect("Control domain on host") == "Control%.domain%.on%.host"
    assert persist.protect("a\tb\nc\rd%e") == "a%tb%nc%rd%%e"
    assert persist.unprotect("a%.b%tc%nd%re%%f") == "a b\tc\nd\re%f"
    assert persist.unprotect("%_") == "  "          # the old form, still read
    assert persist.unprotect("100%x%") == "100%x%"  # unknown escapes are left alone
    assert persist.unprotect("%%.") == "%."


def test_scalar_encodings():
    enc = lambda kind: persist.encoder(Type(kind))  # noqa: E731
    assert enc("int")(-(2 ** 63)) == "-9223372036854775808"
    assert enc("bool")(True) == "true" and enc("bool")(False) == "false"
    assert enc("float")(1.0) == "1" and enc("float")(0.1) == "0.100000000000000006"
    assert enc("datetime")(DateTime("20240102T03:04:05Z")) == "20240102T03:04:05Z"
    assert persist.decoder(Type("float"))("inf") == float("inf")


# ---------------------------------------------------------------------------------- file format
def test_file_layout(tmp_path):
    db = new_database()
    vm = insert(db, "VM", name_label="web one", memory_static_max=1 << 30, other_config={"k": "v w"},
                tags=["a"], VCPUs_params={"weight": "256"}, PV_bootloader="pygrub")
    insert(db, "session", this_host="OpaqueRef:NULL")
    path = str(tmp_path / "state.db")
    persist.save(db, path)
    root = etree.parse(path).getroot()
    assert root.tag == "database"
    pairs = {p.get("key"): p.get("value") for p in root.find("manifest")}
    assert pairs == {"schema_major_vsn": "5", "schema_minor_vsn": str(persist.SCHEMA_MINOR),
                     "generation_count": str(db.generation)}
    tables = [t.get("name") for t in root.findall("table")]
    assert tables == sorted(tables) and "VM" in tables and "session" in tables
    assert not set(tables) & db_names.NOT_IN_DB
    assert root.find("table[@name='session']").findall("row") == []
    (row,) = root.find("table[@name='VM']").findall("row")
    keys = list(row.keys())
    assert keys[:3] == ["ref", "__ctime", "__mtime"] and keys[3:] == sorted(keys[3:])
    assert row.get("ref") == row.get("_ref") == vm
    assert (int(row.get("__ctime")), int(row.get("__mtime"))) == db.table("VM").stamps(vm)
    assert row.get("name__label") == "web%.one"
    assert row.get("memory__static_max") == str(1 << 30)
    assert row.get("other_config") == "(('k'%.'v%.w'))"
    assert row.get("VCPUs__params") == "(('weight'%.'256'))"
    assert row.get("PV__bootloader") == "pygrub"
    assert row.get("tags") == "('a')"
    assert row.get("is_a_template") == "false"
    assert "name_label" not in row.keys()


def test_loads_a_file_as_xapi_writes_it(tmp_path, caplog):
    """Hand-written in xapi's style: a newer schema's column and table, missing columns, _ref."""
    ref = "OpaqueRef:6b1e4d1e-0000-4000-8000-000000000001"
    text = textwrap.dedent(f"""\
        <?xml version="1.0" encoding="UTF-8"?>
        <database><manifest><pair key="schema_major_vsn" value="5"/><pair key="schema_minor_vsn" value="786"/><pair key="generation_count" value="4242"/></manifest><table name="VM"><row ref="{ref}" __ctime="17" __mtime="4000" _ref="{ref}" uuid="0a1b" name__label="Debian%.12%.(64-bit)" is_a_template="true" memory__static_max="2147483648" VCPUs__max="2" other_config="(('install-methods'%.'cdrom,nfs,http,ftp')%.('linux_template'%.'true')%.('default_template'%.'true'))" tags="()" blocked_operations="(('destroy'%.'protected'))" HVM__shadow_multiplier="1.000000" snapshot_time="20240102T03:04:05Z" some_future_field="x"/></table><table name="future_class"><row ref="OpaqueRef:x" a="b"/></table><table name="session"/></database>
        """)
    path = tmp_path / "state.db"
    path.write_text(text)
    with caplog.at_level("INFO", logger="xapi.persist"):
        db = persist.load(str(path))
    assert "some_future_field" in caplog.text and "future_class" in caplog.text
    rec = db.table("VM").get(ref)
    assert rec["uuid"] == "0a1b" and rec["name_label"] == "Debian 12 (64-bit)"
    assert rec["is_a_template"] is True and rec["memory_static_max"] == 2147483648 and rec["VCPUs_max"] == 2
    assert rec["other_config"] == {"install-methods": "cdrom,nfs,http,ftp", "linux_template": "true",
                                   "default_template": "true"}
    assert rec["blocked_operations"] == {"destroy": "protected"}
    assert rec["HVM_shadow_multiplier"] == 1.0
    assert rec["snapshot_time"] == DateTime("20240102T03:04:05Z")
    # missing columns take the datamodel default
    fields = dm.CLASSES["VM"].fields
    assert rec["actions_after_softreboot"] == fields["actions_after_softreboot"].initial()
    assert rec["power_state"] == fields["power_state"].initial()
    assert db.generation == 4242 and db.table("VM").stamps(ref) == (17, 4000), "xapi's stamps are kept"


def test_unreadable_file_is_an_error_not_an_empty_database(tmp_path):
    path = tmp_path / "state.db"
    for text in ("", "<database><manifest>", "<database/>", "<html><body/></html>",
                 "<database><manifest/><table name='VM'><row/></table></database>"):
        path.write_text(text)
        with pytest.raises((ValueError, etree.XMLSyntaxError)):
            persist.load(str(path))


def test_strings_xml_cannot_carry_are_cut_not_fatal(tmp_path):
    db = new_database()
    vm = insert(db, "VM", name_label="ok\x00lost", other_config={"k\x01": "v", "a": "b\ud800c"},
                tags=["x\x1fy"])
    db2, _ = roundtrip(db, str(tmp_path))
    rec = db2.table("VM").get(vm)
    assert rec["name_label"] == "ok" and rec["other_config"] == {"k": "v", "a": "b"} and rec["tags"] == ["x"]


# ---------------------------------------------------------------------------------- round trips
def test_every_class_default_row_round_trips(tmp_path):
    db = new_database()
    refs = {cls: insert(db, cls) for cls in ROW_CLASSES}
    for cls in db_names.NOT_PERSISTED:
        insert(db, cls)
    db2, _ = roundtrip(db, str(tmp_path))
    for cls, ref in refs.items():
        assert db2.table(cls).refs() == [ref], cls
        assert records(db2, cls) == kept(db, cls), cls
    for cls in db_names.NOT_PERSISTED:
        assert len(db2.table(cls)) == 0, cls


def test_fields_xapi_does_not_persist_come_back_empty(tmp_path):
    db = new_database()
    vm = insert(db, "VM", name_label="busy", current_operations={"OpaqueRef:task": "start"},
                allowed_operations=["start"])
    m = insert(db, "VM_metrics", VCPUs_number=2, VCPUs_CPU={0: 1}, memory_actual=5)
    path = str(tmp_path / "state.db")
    persist.save(db, path)
    (row,) = etree.parse(path).getroot().find("table[@name='VM']").findall("row")
    assert row.get("current_operations") == "(('OpaqueRef:task'%.'start'))"     # written, as xapi does
    db2 = persist.load(path)
    rec = db2.table("VM").get(vm)
    assert rec["name_label"] == "busy" and rec["current_operations"] == {} and rec["allowed_operations"] == []
    mrec = db2.table("VM_metrics").get(m)
    assert mrec["VCPUs_number"] == 2 and mrec["VCPUs_CPU"] == {} and mrec["memory_actual"] == 0


# Hypothesis: values of every type the datamodel's fields use
_BAD = [chr(c) for c in range(0x20) if c not in (9, 10, 13)] + ["\ufffe", "\uffff"]
_chars = st.characters(exclude_categories=("Cs",), exclude_characters=_BAD)
TEXT = st.text(st.one_of(st.sampled_from(list("<>&\"'\\%() \t\r\n;%._tnr")), _chars), max_size=24)
_datetimes = st.datetimes(min_value=__import__("datetime").datetime(1900, 1, 1)).map(
    lambda d: DateTime(d.strftime("%Y%m%dT%H:%M:%SZ")))
_refs = st.one_of(st.just("OpaqueRef:NULL"), st.uuids().map(lambda u: f"OpaqueRef:{u}"))


def values(t: Type):
    k = t.kind
    if k == "string":
        return TEXT
    if k == "int":
        return st.integers(-(2 ** 63), 2 ** 63 - 1)
    if k == "float":
        return st.floats(allow_nan=False)
    if k == "bool":
        return st.booleans()
    if k == "datetime":
        return _datetimes
    if k == "enum":
        return st.sampled_from(dm.ENUMS[t.name]) if dm.ENUMS.get(t.name) else TEXT
    if k == "ref":
        return _refs
    if k == "set":
        return st.lists(values(t.elem), max_size=4)
    if k == "map":
        return st.dictionaries(values(t.key), values(t.elem), max_size=4)
    raise AssertionError(t)


FIELD_TYPES = sorted({f.type for c in ROW_CLASSES for f in dm.CLASSES[c].fields.values()}, key=str)


@pytest.mark.parametrize("t", FIELD_TYPES, ids=str)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_value_encoding_round_trips(t, data):
    v = data.draw(values(t))
    text = persist.encoder(t)(v)
    assert persist.decoder(t)(persist.unprotect(persist.protect(text))) == v


def row_of(cls):
    """Up to 12 fields of `cls` with random values (the others keep their defaults)."""
    fields = dm.CLASSES[cls].fields
    return st.lists(st.sampled_from(sorted(fields)), max_size=12, unique=True).flatmap(
        lambda names: st.fixed_dictionaries({n: values(fields[n].type) for n in names}))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_rows_round_trip_through_the_file(data):
    classes = data.draw(st.lists(st.sampled_from(ROW_CLASSES), min_size=1, max_size=4, unique=True))
    db = new_database()
    for cls in classes:
        for _ in range(data.draw(st.integers(1, 2))):
            insert(db, cls, **data.draw(row_of(cls)))
    with tempfile.TemporaryDirectory() as tmp:
        db2, _ = roundtrip(db, tmp)
    for cls in classes:
        assert records(db2, cls) == kept(db, cls), cls


# ---------------------------------------------------------------------------------- generations
def test_load_keeps_the_generation_and_every_stamp(tmp_path):
    db = new_database()
    vm = insert(db, "VM", name_label="a")
    host = insert(db, "host")
    vbd = insert(db, "VBD", VM=vm)          # stamps the VM too (VM.VBDs)
    gone = insert(db, "VM", name_label="gone")
    for i in range(5000):
        db.table("host").set_field(host, "name_label", f"n{i}")
    db.table("VM").remove(gone)
    stamps = {(c, r): db.table(c).stamps(r) for c, r in (("VM", vm), ("host", host), ("VBD", vbd))}
    saved = db.generation
    db2, path = roundtrip(db, str(tmp_path))
    # a load is not a write: the generation is the saved one, not bumped by the rows it holds
    assert db2.generation == saved
    assert {k: db2.table(k[0]).stamps(k[1]) for k in stamps} == stamps
    assert db2.table("VM").get_field(vm, "VBDs") == [vbd]
    assert [c.ref for c in db2.changes_since(0)] == [vm, vbd, host]     # in the order they last changed
    # a token taken at the saved generation gets only what changed after the restart
    assert db2.changes_since(saved) == []
    db2.table("VM").set_field(vm, "name_label", "after")
    assert [(c.ref, c.op, c.generation) for c in db2.changes_since(saved)] == [(vm, "mod", saved + 1)]
    # an older one cannot be answered (the deletion of `gone` was not saved): EVENTS_LOST, re-read
    with pytest.raises(EventsLost):
        db2.changes_since(saved - 1)
    # and repeated restarts give back exactly what was saved
    for _ in range(3):
        gen = persist.save(db2, path)
        before = {r: db2.table("VM").stamps(r) for r in db2.table("VM").refs()}
        db2 = persist.load(path)
        assert db2.generation == gen
        assert {r: db2.table("VM").stamps(r) for r in db2.table("VM").refs()} == before


def test_empty_database_keeps_its_generation(tmp_path):
    db = new_database()
    vm = insert(db, "session")              # not persisted: the file has no rows at all
    for _ in range(10):
        db.table("session").update(vm, {})
    db2, _ = roundtrip(db, str(tmp_path))
    assert db2.generation == db.generation
    assert sum(len(db2.table(t)) for t in db2.tables()) == 0


def test_rows_stamped_after_the_manifest_or_without_stamps_still_load(tmp_path, caplog):
    """Files not written by us: stamps past generation_count, or none at all."""
    path = tmp_path / "state.db"
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?><database><manifest>'
        '<pair key="generation_count" value="10"/></manifest><table name="host">'
        '<row ref="OpaqueRef:a" __ctime="3" __mtime="25" uuid="a"/><row ref="OpaqueRef:b" uuid="b"/>'
        '<row ref="OpaqueRef:c" __ctime="9" __mtime="4" uuid="c"/></table></database>')
    with caplog.at_level("WARNING", logger="xapi.persist"):
        db = persist.load(str(path))
    assert "after the saved generation" in caplog.text
    assert db.generation == 25, "never below a loaded stamp"
    t = db.table("host")
    assert [t.stamps(r) for r in ("OpaqueRef:b", "OpaqueRef:c", "OpaqueRef:a")] == [(1, 1), (9, 9), (3, 25)]
    t.set_field("OpaqueRef:b", "name_label", "x")
    assert t.stamps("OpaqueRef:b") == (1, 26)


# ---------------------------------------------------------------------------------- Persister
def test_persister_flushes_on_change_only_and_at_close(tmp_path):
    path = str(tmp_path / "state.db")

    async def main():
        db = new_database()
        vm = insert(db, "VM", name_label="one")
        p = persist.Persister(db, path, interval=0.05)
        p.start()
        await asyncio.sleep(0.3)
        assert os.path.exists(path) and p.flushes == 1          # unchanged since: no second write
        mtime = os.stat(path).st_mtime_ns
        await asyncio.sleep(0.2)
        assert os.stat(path).st_mtime_ns == mtime and p.flushes == 1
        db.table("VM").set_field(vm, "name_label", "two")
        for _ in range(50):
            if p.flushes == 2:
                break
            await asyncio.sleep(0.02)
        assert p.flushes == 2
        assert await p.flush_now() is False
        db.table("VM").set_field(vm, "name_label", "three")
        await p.close()                                          # the last change is written at close
        return vm

    vm = asyncio.run(main())
    assert persist.load(path).table("VM").get_field(vm, "name_label") == "three"
    assert not os.path.exists(path + ".tmp")


def test_persister_without_timer_writes_at_close(tmp_path):
    path = str(tmp_path / "state.db")

    async def main():
        db = new_database()
        insert(db, "pool", name_label="p")
        p = persist.Persister(db, path, interval=0)
        p.start()
        await asyncio.sleep(0.1)
        assert not os.path.exists(path)
        await p.close()

    asyncio.run(main())
    assert persist.load(path).table("pool").all_records()


# ---------------------------------------------------------------------------------- crash safety
_WRITER = textwrap.dedent("""\
    import sys
    from xapi.db import persist
    from xapi.db.schema import insert, new_database
    path, n = sys.argv[1], int(sys.argv[2])
    db = new_database()
    for i in range(n):
        insert(db, "VM", name_label=f"vm {i}", other_config={"k": "v " * 20}, tags=["t1", "t2"])
    pool = insert(db, "pool", name_label="0")
    i = 0
    while True:
        i += 1
        db.table("pool").set_field(pool, "name_label", str(i))
        gen = persist.save(db, path)
        print(i, gen, flush=True)
""")


def test_sigkill_during_writes_leaves_the_old_or_the_new_file(tmp_path):
    """A writer saves a ~3 MB database in a loop; it is killed at random moments.  Each time, the
    file loads and holds the last save the writer reported, or the one it was finishing."""
    path = str(tmp_path / "state.db")
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    rng = random.Random(1234)
    env = dict(os.environ, PYTHONPATH=ROOT)
    last, mid_write = 0, 0
    for round_ in range(8):
        proc = subprocess.Popen([sys.executable, str(script), path, "1500"], stdout=subprocess.PIPE,
                                env=env, cwd=ROOT, text=True)
        try:
            first = proc.stdout.readline()              # one save completed: the writer is in its loop
            assert first, "writer died"
            time.sleep(rng.uniform(0.0, 0.4))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        mid_write += os.path.exists(path + ".tmp")       # killed between open and rename
        reported = [int(line.split()[0]) for line in [first, *proc.stdout.read().splitlines()] if line.strip()]
        proc.stdout.close()
        db = persist.load(path)
        (pool,) = db.table("pool").refs()
        counter = int(db.table("pool").get_field(pool, "name_label"))
        assert counter in (reported[-1], reported[-1] + 1), (round_, counter, reported[-3:])
        assert len(db.table("VM")) == 1500
        last = counter
    assert last > 0 and mid_write > 0


# ---------------------------------------------------------------------------------- compiled reader
_compiled = persist._compiled
needs_compiled = pytest.mark.skipif(_compiled is None, reason="XAPI_PURE=1: the reference reads alone")


def both_reads(path):
    """(the facade's read, the reference's), each a result or the exception's type."""
    out = []
    for fn in (persist.read, persist.read_reference):
        try:
            out.append(fn(path))
        except (ValueError, etree.XMLSyntaxError) as e:
            out.append(type(e).__name__)
    return out


@needs_compiled
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_compiled_reader_reads_random_rows_as_the_reference(data):
    """Random rows of random classes (every value kind, XML-hostile and %-protected text): the
    compiled reader itself (no fallback) gives exactly the reference's rows."""
    classes = data.draw(st.lists(st.sampled_from(ROW_CLASSES), min_size=1, max_size=4, unique=True))
    db = new_database()
    for cls in classes:
        for _ in range(data.draw(st.integers(1, 3))):
            insert(db, cls, **data.draw(row_of(cls)))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "state.db")
        persist.save(db, path)
        assert _compiled.read(path) == persist.read_reference(path)


_ROW = ('<row ref="OpaqueRef:a" __ctime="3" __mtime="5" _ref="OpaqueRef:a" uuid="u&amp;&#37;.&#x263A;" '
        'name__label="a%.b%%c%_d%x" tags="(\'x\' \'y%.z\')" other_config="((\'k\' \'v\'))" '
        'is_a_template="true" memory__static_max="-42" VCPUs__max="+7" HVM__shadow_multiplier="1.5"/>')
_FILE = ('<?xml version="1.0" encoding="UTF-8"?>\n<database><manifest><pair key="schema_major_vsn" value="5"/>'
         '<pair key="generation_count" value="9"/></manifest>\n<table name="VM">' + _ROW + '</table>'
         '<table name="future"><row ref="x" a="b"/></table><table name="session"/></database>\n')


@needs_compiled
@pytest.mark.parametrize("text, compiled_reads_it", [
    (_FILE, True),
    (_FILE.replace('"u&amp;&#37;.&#x263A;"', "'u&amp;&#37;.&#x263A;'"), True),   # single-quoted
    (_FILE.replace('<row ', '<row\n  ').replace("/></table>", " ></row></table>"), True),
    (_FILE.replace(' encoding="UTF-8"', ""), True),
    (_FILE.replace("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", ""), True),
    (_FILE.replace('uuid="', 'bogus_column="1" uuid="'), True),       # unknown column
    (_FILE.replace("<table name=\"VM\">", "<table name=\"VM\"><!-- c -->"), False),
    (_FILE.replace("<database>", "<!DOCTYPE database><database>"), False),
    (_FILE.replace("UTF-8", "ISO-8859-1").replace("&#x263A;", "\xe9"), False),
    (_FILE.replace('uuid="', 'uuid="1" uuid="'), False),               # an attribute twice: malformed
    (_FILE.replace('__ctime="3"', '__ctime="x"'), False),              # bad stamp: the reference's error
    (_FILE.replace('ref="x" ', ""), False),                            # row without ref, ignored table
    (_FILE.replace('<pair key="generation_count" value="9"/>', ""), False),
    (_FILE.replace("&amp;", "&nbsp;"), False),                         # undefined entity
    (_FILE.replace("&#37;", "&#1;"), False),                           # not an XML character
    (_FILE.replace("&#37;", "\ufffe"), False),
    (_FILE.replace("</table>", "text</table>", 1), False),
    (_FILE.replace("</database>", ""), False),                         # truncated
    (_FILE.replace("</database>", "</database><database/>"), False),
    (_FILE.replace("<row ", "<manifest/><row "), False),
    (_FILE.replace('name__label="a', 'name__label="\ta'), False),      # a raw tab: normalised by XML
])
def test_compiled_reader_reads_its_subset_and_hands_back_the_rest(tmp_path, text, compiled_reads_it):
    path = str(tmp_path / "state.db")
    with open(path, "w", encoding="ISO-8859-1" if "ISO-8859-1" in text else "utf-8") as f:
        f.write(text)
    fast, ref = both_reads(path)
    assert fast == ref
    if compiled_reads_it:
        assert _compiled.read(path) == ref
        rec = ref[1][0][4]
        assert rec["uuid"] == "u& \u263a" and rec["name_label"] == "a b%c  d%x" and rec["VCPUs_max"] == 7
        assert rec["tags"] == ["x", "y z"] and rec["memory_static_max"] == -42
    else:
        with pytest.raises(_compiled.Fallback):
            _compiled.read(path)


@needs_compiled
@settings(max_examples=200, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, len(_FILE.encode()) - 1),
                                st.sampled_from([b"", b"<", b">", b"&", b"'", b'"', b"%", b" ", b"\xff",
                                                 b"\xc3", b"=", b"/", b"a", b"0", b"(", b")", b"\\"])),
                      min_size=1, max_size=3))
def test_corrupted_files_read_as_the_reference_reads_them(edits, tmp_path_factory):
    """Bytes replaced anywhere in a file: the facade (compiled reader or its fallback) and the
    reference agree, rows or error."""
    data = bytearray(_FILE.encode())
    for pos, new in edits:
        data[pos:pos + 1] = new
    path = str(tmp_path_factory.mktemp("c") / "state.db")
    with open(path, "wb") as f:
        f.write(data)
    fast, ref = both_reads(path)
    assert fast == ref


def both_writes(db):
    import io
    snap = persist.snapshot(db)
    out = []
    for write in (persist._write_compiled, persist._write_reference):
        f = io.BytesIO()
        write(f, snap)
        out.append(f.getvalue())
    return out


@needs_compiled
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_compiled_writer_writes_the_reference_bytes(data):
    """Random rows (every value kind, XML-hostile, non-ASCII and %-protected text, strings XML
    cannot carry): the compiled encoder writes exactly the reference's file."""
    classes = data.draw(st.lists(st.sampled_from(ROW_CLASSES), min_size=1, max_size=4, unique=True))
    db = new_database()
    for cls in classes:
        for _ in range(data.draw(st.integers(1, 3))):
            insert(db, cls, **data.draw(row_of(cls)))
    fast, ref = both_writes(db)
    assert fast == ref


@needs_compiled
def test_compiled_writer_handles_odd_values_as_the_reference(caplog):
    """Values of the wrong type (written by the reference's encoder, or its default with a
    warning), control characters, a huge int, and every class's default row."""
    db = new_database()
    for cls in ROW_CLASSES:
        insert(db, cls)
    vm = insert(db, "VM", name_label="a\x01b", tags=["x y", "q'\"\\", "\u263a"], VCPUs_max=1 << 70,
                other_config={"k": "v\x02", "\u00e9": "<&>"}, is_a_template=1)
    db.table("VM").set_field(vm, "memory_static_max", "not a number")
    with caplog.at_level("WARNING", logger="xapi.persist"):
        fast, ref = both_writes(db)
    assert fast == ref
    assert "cannot write 'not a number'" in caplog.text


@needs_compiled
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stamps=st.lists(st.tuples(st.sampled_from(["VM", "host"]), st.integers(0, 5), st.integers(-1, 6),
                                 st.integers(-1, 6)), max_size=12))
def test_compiled_restore_orders_rows_as_the_reference(stamps, caplog):
    """Rows with equal, missing (0) or inverted stamps and duplicate refs: the same tables, stamps,
    order of change and warnings as the reference's restore."""
    rows = [(cls, f"OpaqueRef:{n}", c, m, {"name_label": f"{i}"}) for i, (cls, n, c, m) in enumerate(stamps)]
    dbs, logs = [], []
    for restore in (_compiled.restore_rows, persist.restore_rows_reference):
        caplog.clear()
        db = new_database()
        assert restore(db, rows) in (True, None)
        dbs.append(db)
        logs.append(caplog.messages[:])
    assert logs[0] == logs[1]
    assert dbs[0].generation == dbs[1].generation
    assert dbs[0].changes_since(0) == dbs[1].changes_since(0)
    for cls in ("VM", "host"):
        a, b = dbs[0].table(cls), dbs[1].table(cls)
        assert a.all_records() == b.all_records()
        assert [a.stamps(r) for r in a.refs()] == [b.stamps(r) for r in b.refs()]


@needs_compiled
def test_compiled_writer_across_its_chunks():
    """A table written in several calls of the encoder (1,000 rows each) is still one table."""
    db = new_database()
    for i in range(2345):
        insert(db, "VBD", userdevice=str(i % 10), other_config={"n": str(i)})
    fast, ref = both_writes(db)
    assert fast == ref and fast.count(b"<row ") == 2345
