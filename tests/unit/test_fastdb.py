"""The in-memory database core: compiled xapi._fastdb against the reference xapi.db_ref.

* a Hypothesis state machine runs one random sequence of operations on both and on a
  naive model of xapi's event rules, and asserts identical results and exception types;
* targeted tests of generation counting, the event rules, index upkeep and EventsLost,
  run on each implementation (the compiled one is skipped when it is not built).
"""
import importlib
import os

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from xapi import db_ref
from xapi.db_errors import Change, EventsLost

try:
    _fast = importlib.import_module("xapi._fastdb")
except ImportError:  # not built: the reference is still tested on its own
    _fast = None

IMPLS = [pytest.param(db_ref, id="ref"),
         pytest.param(_fast, id="fast",
                      marks=pytest.mark.skipif(_fast is None, reason="xapi._fastdb not built"))]


# --------------------------------------------------------------------------- model
TABLES = {
    "VM": (("uuid", "name_label", "power_state", "memory", "tags"), ("uuid", "name_label")),
    "host": (("uuid", "hostname", "enabled"), None),   # default: uuid indexed
    "task": (("status", "progress"), ()),              # no index at all
}
ALL_FIELDS = sorted({f for fields, _ in TABLES.values() for f in fields} | {"bogus"})
REFS = [f"OpaqueRef:{i}" for i in range(6)]


def _indexed(table):
    fields, idx = TABLES[table]
    return set(idx if idx is not None else (("uuid",) if "uuid" in fields else ()))


def _hashable(v):
    try:
        hash(v)
    except TypeError:
        return False
    return True


class Oracle:
    """The event rules written the obvious way: every row instance ever made, scanned."""

    def __init__(self, max_deleted):
        self.max_deleted = max_deleted
        self.generation = 0
        self.rows = {t: {} for t in TABLES}      # ref -> {"values", "created", "modified"}
        self.deleted = {t: [] for t in TABLES}   # (deleted, ref, created), all of them

    def _bump(self):
        self.generation += 1
        return self.generation

    def add(self, t, ref, row):
        fields = TABLES[t][0]
        if ref in self.rows[t]:
            return ValueError
        if any(f not in fields for f in row):
            return KeyError
        values = {f: row.get(f) for f in fields}
        if not all(_hashable(values[f]) for f in _indexed(t)):
            return TypeError
        g = self._bump()
        self.rows[t][ref] = {"values": values, "created": g, "modified": g}
        return None

    def remove(self, t, ref):
        if ref not in self.rows[t]:
            return KeyError
        row = self.rows[t].pop(ref)
        self.deleted[t].append((self._bump(), ref, row["created"]))
        return None

    def update(self, t, ref, values):
        if ref not in self.rows[t] or any(f not in TABLES[t][0] for f in values):
            return KeyError
        if not all(_hashable(v) for f, v in values.items() if f in _indexed(t)):
            return TypeError
        row = self.rows[t][ref]
        row["values"].update(values)
        row["modified"] = self._bump()
        return None

    def lost(self, t):
        dels = self.deleted[t]
        kept = len(dels) if self.max_deleted >= len(dels) else self.max_deleted
        forgotten = dels[:len(dels) - kept]
        return forgotten[-1][0] if forgotten else 0

    def changes_since(self, g, tables):
        names = list(TABLES) if tables is None else list(dict.fromkeys(tables))
        if any(n not in TABLES for n in names):
            return KeyError
        if any(self.lost(n) and g < self.lost(n) for n in names):
            return EventsLost
        out = []
        for n in names:
            for ref, row in self.rows[n].items():
                if row["modified"] > g:
                    out.append(Change(n, ref, "add" if row["created"] > g else "mod", row["modified"]))
            for deleted, ref, created in self.deleted[n]:
                if deleted > g and created <= g:
                    out.append(Change(n, ref, "del", deleted))
        return sorted(out, key=lambda c: c.generation)

    def find(self, t, field, value):
        return [ref for ref, row in self.rows[t].items()
                if (v := row["values"][field]) is value or v == value]


def _outcome(fn):
    try:
        return ("ok", fn())
    except Exception as e:  # noqa: BLE001 - the type is what is compared
        return ("err", type(e))


values_st = st.one_of(
    st.none(), st.integers(-2, 2), st.booleans(), st.sampled_from(["a", "b", ""]),
    st.lists(st.integers(0, 1), max_size=1),  # unhashable: refused in indexed fields
)
PROBES = [None, -2, -1, 0, 1, 2, "a", "b", ""]   # every hashable value values_st makes (True == 1)
tables_st = st.sampled_from(sorted(TABLES))
refs_st = st.sampled_from(REFS)
fields_st = st.sampled_from(ALL_FIELDS)
row_st = st.dictionaries(fields_st, values_st, max_size=4)


def own_fields(t):
    """Mostly the table's own fields, now and then an unknown one."""
    return st.sampled_from(TABLES[t][0] * 5 + ("bogus",))


def own_row(t):
    return st.dictionaries(own_fields(t), values_st, max_size=4)


class DatabaseMachine(RuleBasedStateMachine):
    """Same operations on every implementation and on the oracle."""

    @initialize(max_deleted=st.sampled_from([0, 1, 3, 100_000]))
    def setup(self, max_deleted):
        self.impls = [db_ref] + ([_fast] if _fast is not None else [])
        self.dbs = [m.Database(max_deleted) for m in self.impls]
        self.oracle = Oracle(max_deleted)
        for name, (fields, idx) in TABLES.items():
            for db in self.dbs:
                if idx is None:
                    db.create_table(name, fields)
                else:
                    db.create_table(name, fields, idx)

    def same(self, fn):
        outs = [_outcome(lambda db=db: fn(db)) for db in self.dbs]
        for o in outs[1:]:
            assert o == outs[0], (outs[0], o)
        return outs[0]

    def write(self, fn, expected_error):
        out = self.same(fn)
        assert out == (("err", expected_error) if expected_error else ("ok", None)), out

    # -- writes ----------------------------------------------------------------
    @rule(t=tables_st, ref=refs_st, data=st.data())
    def add(self, t, ref, data):
        row = data.draw(own_row(t), label="row")
        expected = self.oracle.add(t, ref, row)
        self.write(lambda db: db.table(t).add(ref, row), expected)

    @rule(t=tables_st, ref=refs_st)
    def remove(self, t, ref):
        expected = self.oracle.remove(t, ref)
        self.write(lambda db: db.table(t).remove(ref), expected)

    @rule(t=tables_st, ref=refs_st, data=st.data(), value=values_st)
    def set_field(self, t, ref, data, value):
        field = data.draw(own_fields(t), label="field")
        expected = self.oracle.update(t, ref, {field: value})
        self.write(lambda db: db.table(t).set_field(ref, field, value), expected)

    @rule(t=tables_st, ref=refs_st, data=st.data())
    def update(self, t, ref, data):
        values = data.draw(st.one_of(own_row(t), row_st), label="values")
        expected = self.oracle.update(t, ref, values)
        self.write(lambda db: db.table(t).update(ref, values), expected)

    # -- reads -----------------------------------------------------------------
    @rule(data=st.data(),
          tables=st.one_of(st.none(), st.lists(st.sampled_from(sorted(TABLES) + ["nope"]), max_size=3)))
    def changes_since(self, data, tables):
        g = data.draw(st.integers(-1, self.oracle.generation + 1), label="since")
        out = self.same(lambda db: db.changes_since(g, tables))
        expected = self.oracle.changes_since(g, tables)
        if isinstance(expected, type):
            assert out == ("err", expected), (out, expected)
        else:
            assert out == ("ok", expected), (out, expected)

    @rule(t=tables_st, data=st.data(), value=values_st)
    def find(self, t, data, value):
        field = data.draw(own_fields(t), label="field")
        out = self.same(lambda db: db.table(t).find(field, value))
        if field not in TABLES[t][0]:
            assert out == ("err", KeyError)
        elif field in _indexed(t) and not _hashable(value):
            assert out == ("err", TypeError)
        else:
            assert out == ("ok", self.oracle.find(t, field, value))

    @rule(t=tables_st, ref=refs_st, data=st.data())
    def reads(self, t, ref, data):
        field = data.draw(own_fields(t), label="field")
        tab = lambda db: db.table(t)  # noqa: E731
        self.same(lambda db: tab(db).get(ref))
        self.same(lambda db: tab(db).get_field(ref, field))
        self.same(lambda db: tab(db).stamps(ref))
        self.same(lambda db: ref in tab(db))
        row = self.oracle.rows[t].get(ref)
        if row is not None:
            assert self.same(lambda db: tab(db).stamps(ref)) == ("ok", (row["created"], row["modified"]))

    # -- after every step ------------------------------------------------------
    @invariant()
    @precondition(lambda self: hasattr(self, "dbs"))
    def agree(self):
        assert self.same(lambda db: db.generation) == ("ok", self.oracle.generation)
        for t in TABLES:
            expected = {ref: row["values"] for ref, row in self.oracle.rows[t].items()}
            assert self.same(lambda db: db.table(t).all_records()) == ("ok", expected)
            assert self.same(lambda db: db.table(t).refs()) == ("ok", list(expected))
            assert self.same(lambda db: len(db.table(t))) == ("ok", len(expected))
            for field in TABLES[t][0]:          # every index, checked for stale and missing refs
                for value in PROBES:
                    assert self.same(lambda db: db.table(t).find(field, value)) == \
                        ("ok", self.oracle.find(t, field, value))


DatabaseMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("FASTDB_EXAMPLES", "300")), stateful_step_count=60,
    deadline=None, suppress_health_check=[HealthCheck.too_slow])
TestDatabaseMachine = DatabaseMachine.TestCase


# --------------------------------------------------------------------------- targeted
def _vm_db(m, **kw):
    db = m.Database(**kw)
    vm = db.create_table("VM", ("uuid", "name_label", "power_state"), ("uuid", "name_label"))
    return db, vm


@pytest.mark.parametrize("m", IMPLS)
def test_generation_counting(m):
    db, vm = _vm_db(m)
    assert db.generation == 0
    host = db.create_table("host", ("uuid", "hostname"))
    assert db.generation == 0, "creating a table is not a write"
    vm.add("r1", {"uuid": "u1"})
    assert db.generation == 1 and vm.stamps("r1") == (1, 1)
    vm.set_field("r1", "power_state", "Running")
    assert db.generation == 2 and vm.stamps("r1") == (1, 2)
    vm.update("r1", {"name_label": "a", "power_state": "Halted"})
    assert db.generation == 3 and vm.stamps("r1") == (1, 3), "update is one write"
    vm.update("r1", {})
    assert db.generation == 4 and vm.stamps("r1") == (1, 4), "an empty update still bumps"
    host.add("h1", {})
    assert db.generation == 5
    vm.remove("r1")
    assert db.generation == 6
    # failed writes don't bump
    for bad in (lambda: vm.remove("r1"), lambda: vm.set_field("nope", "uuid", 1),
                lambda: host.add("h1", {}), lambda: host.add("h2", {"bogus": 1}),
                lambda: host.update("h1", {"hostname": "x", "bogus": 1}),
                lambda: host.set_field("h1", "bogus", 1)):
        with pytest.raises((KeyError, ValueError)):
            bad()
    assert db.generation == 6
    assert host.get("h1") == {"uuid": None, "hostname": None}, "failed update changed nothing"
    with pytest.raises(AttributeError):
        db.generation = 10


@pytest.mark.parametrize("m", IMPLS)
def test_rows_and_errors(m):
    db, vm = _vm_db(m)
    vm.add("r1", {"uuid": "u1", "name_label": "one"})
    rec = vm.get("r1")
    assert rec == {"uuid": "u1", "name_label": "one", "power_state": None}
    rec["uuid"] = "changed"
    assert vm.get("r1")["uuid"] == "u1", "get returns a fresh dict"
    assert vm.get_field("r1", "name_label") == "one"
    assert "r1" in vm and "r2" not in vm and len(vm) == 1
    assert vm.name == "VM" and vm.fields == ("uuid", "name_label", "power_state")
    assert vm.indexed == ("uuid", "name_label")
    assert db.tables() == ["VM"] and db.table("VM") is vm
    tags = ["x"]
    vm.add("r2", {"power_state": tags})
    assert vm.get_field("r2", "power_state") is tags, "values are stored as given"
    with pytest.raises(KeyError):
        db.table("nope")
    with pytest.raises(KeyError):
        vm.get("nope")
    with pytest.raises(KeyError):
        vm.get_field("r1", "bogus")
    with pytest.raises(KeyError):
        vm.stamps("nope")
    with pytest.raises(ValueError):
        vm.add("r1", {})
    with pytest.raises(TypeError):
        vm.add(1, {})
    with pytest.raises(TypeError):
        vm.add("r3", {"uuid": []})      # indexed fields need hashable values
    assert "r3" not in vm
    with pytest.raises(TypeError):
        vm.update("r1", {"power_state": "x", "uuid": {}})
    assert vm.get("r1")["power_state"] is None, "update is all or nothing"
    with pytest.raises(ValueError):
        db.create_table("VM", ("uuid",))
    with pytest.raises(ValueError):
        db.create_table("T", ("a", "a"))
    with pytest.raises(KeyError):
        db.create_table("T", ("a",), ("b",))
    assert db.create_table("T", ("a",)).indexed == (), "no uuid, no default index"
    assert vm.refs() == ["r1", "r2"]
    assert list(vm.all_records()) == ["r1", "r2"]


@pytest.mark.parametrize("m", IMPLS)
def test_event_rules(m):
    db, vm = _vm_db(m)
    host = db.create_table("host", ("uuid",))
    vm.add("old", {"uuid": "u-old"})            # 1
    vm.add("gone", {"uuid": "u-gone"})          # 2
    vm.add("still", {"uuid": "u-still"})        # 3
    g = db.generation
    assert db.changes_since(g) == []
    vm.set_field("old", "power_state", "Running")   # 4: mod
    vm.add("new", {"uuid": "u-new"})                 # 5: add ...
    vm.set_field("new", "name_label", "n")           # 6: ... still one add, at 6
    vm.remove("gone")                                # 7: del
    vm.add("brief", {})                              # 8: created and ...
    vm.remove("brief")                               # 9: ... deleted inside: nothing
    host.add("h", {})                                # 10
    vm.set_field("old", "name_label", "x")           # 11: the mod moves to 11
    assert db.changes_since(g) == [
        Change("VM", "new", "add", 6),
        Change("VM", "gone", "del", 7),
        Change("host", "h", "add", 10),
        Change("VM", "old", "mod", 11),
    ]
    assert db.changes_since(g, ["host"]) == [Change("host", "h", "add", 10)]
    assert db.changes_since(g, ["VM", "VM"]) == db.changes_since(g, ["VM"]), "duplicates are ignored"
    assert db.changes_since(0) == [Change("VM", "still", "add", 3), Change("VM", "new", "add", 6),
                                   Change("host", "h", "add", 10), Change("VM", "old", "add", 11)]
    assert db.changes_since(db.generation) == []
    assert db.changes_since(db.generation + 5) == []
    assert db.changes_since(-3) == db.changes_since(0)
    # a ref removed and added again: the old row's del and the new row's add
    g2 = db.generation
    vm.remove("still")                               # 12
    vm.add("still", {"uuid": "u-still2"})            # 13
    assert db.changes_since(g2) == [Change("VM", "still", "del", 12), Change("VM", "still", "add", 13)]
    assert db.changes_since(g) == [                  # "still" was created before g
        Change("VM", "new", "add", 6), Change("VM", "gone", "del", 7), Change("host", "h", "add", 10),
        Change("VM", "old", "mod", 11), Change("VM", "still", "del", 12), Change("VM", "still", "add", 13),
    ]
    assert vm.stamps("still") == (13, 13)
    with pytest.raises(KeyError):
        db.changes_since(0, ["nope"])
    with pytest.raises(TypeError):
        db.changes_since(0, "VM")
    with pytest.raises(TypeError):
        db.changes_since(1.5)
    assert isinstance(db.changes_since(0)[0], Change)


@pytest.mark.parametrize("m", IMPLS)
def test_index_upkeep(m):
    db, vm = _vm_db(m)
    for i in range(5):
        vm.add(f"r{i}", {"uuid": f"u{i}", "name_label": "even" if i % 2 == 0 else "odd", "power_state": "Halted"})
    assert vm.find("uuid", "u3") == ["r3"]
    assert vm.find("uuid", "zz") == []
    assert vm.find("name_label", "even") == ["r0", "r2", "r4"]
    assert vm.find("power_state", "Halted") == ["r0", "r1", "r2", "r3", "r4"]   # scan
    vm.set_field("r3", "uuid", "u3b")
    assert vm.find("uuid", "u3") == [] and vm.find("uuid", "u3b") == ["r3"]
    vm.set_field("r1", "name_label", "even")         # joins an existing bucket: still table order
    assert vm.find("name_label", "even") == ["r0", "r1", "r2", "r4"]
    vm.update("r4", {"name_label": "odd", "uuid": "u4b"})
    assert vm.find("name_label", "even") == ["r0", "r1", "r2"]
    assert vm.find("name_label", "odd") == ["r3", "r4"]
    assert vm.find("uuid", "u4") == [] and vm.find("uuid", "u4b") == ["r4"]
    vm.remove("r2")
    assert vm.find("name_label", "even") == ["r0", "r1"] and vm.find("uuid", "u2") == []
    vm.add("r2", {"uuid": "u2", "name_label": "even"})
    assert vm.find("name_label", "even") == ["r0", "r1", "r2"]
    vm.remove("r0"), vm.remove("r1")
    assert vm.find("name_label", "even") == ["r2"]
    vm.set_field("r2", "name_label", None)
    assert vm.find("name_label", "even") == [] and vm.find("name_label", None) == ["r2"]
    assert vm.find("uuid", None) == []
    vm.set_field("r3", "uuid", 1)
    assert vm.find("uuid", True) == ["r3"], "equal values (1 == True) match, as in a scan"
    with pytest.raises(KeyError):
        vm.find("bogus", 1)
    with pytest.raises(TypeError):
        vm.find("uuid", [])
    assert vm.find("power_state", []) == []


@pytest.mark.parametrize("m", IMPLS)
def test_events_lost(m):
    db = m.Database(max_deleted=2)
    assert db.max_deleted == 2
    t = db.create_table("task", ("status",))
    other = db.create_table("VM", ("uuid",))
    for i in range(5):
        t.add(f"t{i}", {})                            # 1..5
    other.add("v", {})                                # 6
    g = db.generation
    t.remove("t0")                                    # 7
    assert db.changes_since(g) == [Change("task", "t0", "del", 7)]
    t.remove("t1")                                    # 8
    t.remove("t2")                                    # 9: forgets t0's tombstone (7)
    with pytest.raises(EventsLost) as info:
        db.changes_since(g)
    assert (info.value.table, info.value.generation, info.value.oldest) == ("task", g, 7)
    assert db.changes_since(g, ["VM"]) == [], "other tables are not lost"
    assert db.changes_since(7) == [Change("task", "t1", "del", 8), Change("task", "t2", "del", 9)]
    with pytest.raises(EventsLost):
        db.changes_since(-1)
    zero = m.Database(max_deleted=0)
    z = zero.create_table("x", ("a",))
    z.add("a", {})
    z.remove("a")
    assert zero.changes_since(2) == []
    with pytest.raises(EventsLost):
        zero.changes_since(1)
    assert m.Database().max_deleted == 100_000
    with pytest.raises(ValueError):
        m.Database(max_deleted=-1)


@pytest.mark.parametrize("m", IMPLS)
def test_many_deletions_and_compaction(m):
    """Thousands of tombstones past max_deleted (the compiled list compacts itself)."""
    db = m.Database(max_deleted=10)
    t = db.create_table("VBD", ("uuid", "VM"), ("uuid", "VM"))
    for i in range(3000):
        t.add(f"r{i}", {"uuid": f"u{i}", "VM": "vm"})
    g = db.generation
    for i in range(2500):
        t.remove(f"r{i}")
    assert len(t) == 500 and len(t.find("VM", "vm")) == 500
    assert t.find("VM", "vm")[:2] == ["r2500", "r2501"]
    with pytest.raises(EventsLost):
        db.changes_since(g)
    last = db.changes_since(db.generation - 10)
    assert [c.ref for c in last] == [f"r{i}" for i in range(2490, 2500)]
    assert all(c.op == "del" for c in last)
    t.set_field("r2999", "uuid", "x")
    assert db.changes_since(db.generation - 1) == [Change("VBD", "r2999", "mod", db.generation)]


@pytest.mark.skipif(_fast is None, reason="xapi._fastdb not built")
def test_compiled_matches_reference_in_bulk():
    """Bigger, deterministic workload than the state machine: same answers throughout."""
    import random
    rnd = random.Random(7)
    dbs = [db_ref.Database(max_deleted=50), _fast.Database(max_deleted=50)]
    for db in dbs:
        db.create_table("VM", ("uuid", "name_label", "x"), ("uuid", "name_label"))
    marks = []
    ops = []
    for i in range(4000):
        ref = f"r{rnd.randrange(300)}"
        op = rnd.choice(["add", "add", "set", "update", "remove"])
        ops.append((op, ref, rnd.randrange(5), rnd.randrange(10**6)))
    for op, ref, label, x in ops:
        outs = []
        for db in dbs:
            t = db.table("VM")
            outs.append(_outcome(lambda: {
                "add": lambda: t.add(ref, {"uuid": f"u{x}", "name_label": label}),
                "set": lambda: t.set_field(ref, "name_label", label),
                "update": lambda: t.update(ref, {"x": x, "uuid": f"u{x}"}),
                "remove": lambda: t.remove(ref),
            }[op]()))
        assert outs[0] == outs[1]
        if rnd.random() < 0.05:
            marks.append(dbs[0].generation)
    for g in marks + [0, dbs[0].generation - 3]:
        assert _outcome(lambda: dbs[0].changes_since(g)) == _outcome(lambda: dbs[1].changes_since(g))
    for label in range(5):
        assert dbs[0].table("VM").find("name_label", label) == dbs[1].table("VM").find("name_label", label)
    assert dbs[0].table("VM").all_records() == dbs[1].table("VM").all_records()


def test_facade_selects_by_environment():
    from xapi import fastdb
    expected = "xapi.db_ref" if os.environ.get("XAPI_PURE", "") not in ("", "0") else "xapi._fastdb"
    assert fastdb._impl.__name__ == expected
    db = fastdb.Database()
    t = db.create_table("pool", ("uuid", "name_label"))
    t.add("OpaqueRef:p", {"uuid": "p"})
    assert db.changes_since(0) == [fastdb.Change("pool", "OpaqueRef:p", "add", 1)]
    assert fastdb.EventsLost is EventsLost
