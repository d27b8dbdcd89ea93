"""D1 db_micro: the in-memory database core on 20k rows of 20 fields, one thread.

Side by side, in one process: the compiled core (xapi._fastdb), its pure-Python
reference (xapi.db_ref) and a plain dict-of-dicts holding the same data.  Every figure
is the median of 5 runs, in ns per operation (ratio = baseline / ours, >1 is faster).
"""
import pathlib
import random
import sys
import tracemalloc

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench.common import best_and_median, pin, report  # noqa: E402
from xapi import db_ref  # noqa: E402

try:
    from xapi import _fastdb
except ImportError as e:
    sys.exit(f"xapi._fastdb is not built ({e}); run `make build`")

ROWS = 20_000
FIELDS = ("uuid", "name_label", "name_description", "power_state", "user_version", "is_a_template",
          "resident_on", "affinity", "memory_static_max", "memory_dynamic_max", "VCPUs_max",
          "VCPUs_at_startup", "actions_after_shutdown", "actions_after_reboot", "PV_bootloader",
          "HVM_boot_policy", "other_config", "tags", "blocked_operations", "domid")


def make_rows(rnd):
    rows = {}
    for i in range(ROWS):
        rows[f"OpaqueRef:{i:08x}-0000-4000-8000-{rnd.getrandbits(48):012x}"] = {
            "uuid": f"{rnd.getrandbits(128):032x}", "name_label": f"vm-{i % 500}",
            "name_description": "", "power_state": "Halted", "user_version": 1,
            "is_a_template": False, "resident_on": "OpaqueRef:NULL", "affinity": "OpaqueRef:NULL",
            "memory_static_max": 1 << 30, "memory_dynamic_max": 1 << 30, "VCPUs_max": 2,
            "VCPUs_at_startup": 2, "actions_after_shutdown": "destroy",
            "actions_after_reboot": "restart", "PV_bootloader": "", "HVM_boot_policy": "BIOS order",
            "other_config": {}, "tags": [], "blocked_operations": {}, "domid": -1,
        }
    return rows


def load(module, rows):
    db = module.Database()
    table = db.create_table("VM", FIELDS, ("uuid", "name_label"))
    for ref, row in rows.items():
        table.add(ref, row)
    return db, table


def per_op(fn, n, runs=5):
    return best_and_median(fn, runs=runs)[1] / n * 1e9


def footprint(build):
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    keep = build()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del keep
    return (after - before) / 1024


def main():
    pin(1)
    rnd = random.Random(42)
    data = make_rows(rnd)
    refs = list(data)
    sample = refs[:]
    rnd.shuffle(sample)
    uuids = [data[r]["uuid"] for r in sample]

    kib_fast = footprint(lambda: load(_fastdb, data))
    kib_ref = footprint(lambda: load(db_ref, data))
    kib_dict = footprint(lambda: {r: dict(row) for r, row in data.items()})
    report("D1", f"footprint of {ROWS // 1000}k rows (KiB) vs dict-of-dicts", kib_fast, kib_dict,
           "dicts", unit="KiB", higher_is_better=True)
    report("D1", f"footprint of {ROWS // 1000}k rows (KiB) vs reference", kib_fast, kib_ref,
           "ref", unit="KiB", higher_is_better=True)

    plain = {r: dict(row) for r, row in data.items()}
    mtime = dict.fromkeys(plain, 0)        # the baseline's own modified stamps, for the scan
    fdb, fast = load(_fastdb, data)
    rdb, ref = load(db_ref, data)

    # -- add (bulk load) ----------------------------------------------------------
    def add_fast():
        load(_fastdb, data)

    def add_ref():
        load(db_ref, data)

    def add_dict():
        d = {}
        for r, row in data.items():
            d[r] = dict(row)
    t_fast, t_ref, t_dict = (per_op(f, ROWS, runs=3) for f in (add_fast, add_ref, add_dict))
    report("D1", "add (ns/row) vs dict insert of a copy", t_fast, t_dict, "dicts", unit="ns")
    report("D1", "add (ns/row) vs reference", t_fast, t_ref, "ref", unit="ns")

    # -- get ---------------------------------------------------------------------
    def get_fast(get=fast.get):
        for r in sample:
            get(r)

    def get_ref(get=ref.get):
        for r in sample:
            get(r)

    def get_dict():
        for r in sample:
            plain[r].copy()
    t_fast, t_ref, t_dict = (per_op(f, ROWS) for f in (get_fast, get_ref, get_dict))
    report("D1", "get (ns/op) vs dict copy", t_fast, t_dict, "dicts", unit="ns", target="<=1,000 ns")
    report("D1", "get (ns/op) vs reference", t_fast, t_ref, "ref", unit="ns", target="<=1,000 ns")

    # -- set_field ---------------------------------------------------------------
    def set_fast(set_field=fast.set_field):
        for r in sample:
            set_field(r, "memory_dynamic_max", 1 << 29)

    def set_ref(set_field=ref.set_field):
        for r in sample:
            set_field(r, "memory_dynamic_max", 1 << 29)

    def set_dict():
        for r in sample:
            plain[r]["memory_dynamic_max"] = 1 << 29
    t_fast, t_ref, t_dict = (per_op(f, ROWS) for f in (set_fast, set_ref, set_dict))
    report("D1", "set_field (ns/op) vs dict set", t_fast, t_dict, "dicts", unit="ns", target="<=1,000 ns")
    report("D1", "set_field (ns/op) vs reference", t_fast, t_ref, "ref", unit="ns", target="<=1,000 ns")

    names = [f"vm-{i % 700}" for i in range(ROWS)]

    def set_ix_fast(set_field=fast.set_field):
        for r, n in zip(sample, names):
            set_field(r, "name_label", n)

    def set_ix_ref(set_field=ref.set_field):
        for r, n in zip(sample, names):
            set_field(r, "name_label", n)
    t_fast, t_ref = per_op(set_ix_fast, ROWS), per_op(set_ix_ref, ROWS)
    report("D1", "set_field of an indexed field vs reference", t_fast, t_ref, "ref", unit="ns")

    def update_fast(update=fast.update):
        for r in sample:
            update(r, {"power_state": "Running", "domid": 5, "resident_on": "OpaqueRef:h"})

    def update_ref(update=ref.update):
        for r in sample:
            update(r, {"power_state": "Running", "domid": 5, "resident_on": "OpaqueRef:h"})
    t_fast, t_ref = per_op(update_fast, ROWS), per_op(update_ref, ROWS)
    report("D1", "update of 3 fields vs reference", t_fast, t_ref, "ref", unit="ns")

    # -- find on uuid (indexed) ----------------------------------------------------
    def find_fast(find=fast.find):
        for u in uuids:
            find("uuid", u)

    def find_ref(find=ref.find):
        for u in uuids:
            find("uuid", u)
    scans = uuids[:20]

    def find_scan():
        for u in scans:
            [r for r, row in plain.items() if row["uuid"] == u]
    t_fast, t_ref = per_op(find_fast, ROWS), per_op(find_ref, ROWS)
    t_scan = per_op(find_scan, len(scans))
    report("D1", "find uuid (ns/op) vs dict scan", t_fast, t_scan, "scan", unit="ns",
           target="cost ~ results")
    report("D1", "find uuid (ns/op) vs reference", t_fast, t_ref, "ref", unit="ns")

    # -- changes_since with 10 changes among 20k rows --------------------------------
    for db, table in ((fdb, fast), (rdb, ref)):
        g = db.generation
        for r in sample[:10]:
            table.set_field(r, "power_state", "Paused")
        assert len(db.changes_since(g)) == 10
    g_fast, g_ref = fdb.generation - 10, rdb.generation - 10
    for r in sample[:10]:
        mtime[r] = 1

    def since_fast(changes_since=fdb.changes_since):
        for _ in range(1000):
            changes_since(g_fast)

    def since_ref(changes_since=rdb.changes_since):
        for _ in range(1000):
            changes_since(g_ref)

    def since_scan():   # xapi's event.from: fold over every row, keep modified > token
        [r for r, m in mtime.items() if m > 0]
    t_fast, t_ref = per_op(since_fast, 1000), per_op(since_ref, 1000)
    t_scan = per_op(since_scan, 1)
    report("D1", "changes_since, 10 of 20k changed vs scan", t_fast, t_scan, "scan", unit="ns",
           target="cost ~ changes")
    report("D1", "changes_since, 10 of 20k changed vs ref", t_fast, t_ref, "ref", unit="ns")

    # -- relations: repointing VBD.VM moves the VBD between two VMs' VBDs sets -------
    def vbd_db(module):
        db = module.Database()
        vms = db.create_table("VM", ("uuid", "name_label", "VBDs"), ("uuid", "name_label"))
        vbds = db.create_table("VBD", ("uuid", "VM", "device"))
        db.add_relation("VBD", "VM", "VM", "VBDs")
        for i in range(ROWS // 10):
            vms.add(f"vm{i}", {"uuid": f"u{i}", "name_label": f"vm-{i}"})
        for i in range(ROWS):
            vbds.add(f"vbd{i}", {"uuid": f"v{i}", "VM": f"vm{i // 10}", "device": "xvda"})
        return db, vms, vbds
    moves = [(f"vbd{i}", f"vm{rnd.randrange(ROWS // 10)}") for i in range(ROWS)]
    rnd.shuffle(moves)
    (_, fvms, fvbds), (_, rvms, rvbds) = vbd_db(_fastdb), vbd_db(db_ref)

    def repoint_fast(set_field=fvbds.set_field):
        for r, vm in moves:
            set_field(r, "VM", vm)
            set_field(r, "VM", "OpaqueRef:NULL")

    def repoint_ref(set_field=rvbds.set_field):
        for r, vm in moves:
            set_field(r, "VM", vm)
            set_field(r, "VM", "OpaqueRef:NULL")
    t_fast, t_ref = per_op(repoint_fast, 2 * ROWS), per_op(repoint_ref, 2 * ROWS)
    report("D1", "set_field VBD.VM (+2 VMs' VBDs) vs reference", t_fast, t_ref, "ref", unit="ns",
           target="<=1,000 ns")
    assert fvms.all_records() == rvms.all_records()

    # -- all_records (get_all_records of the whole table) ---------------------------
    t_fast = best_and_median(fast.all_records, runs=5)[1]
    t_ref = best_and_median(ref.all_records, runs=5)[1]
    t_dict = best_and_median(lambda: {r: row.copy() for r, row in plain.items()}, runs=5)[1]
    report("D1", "all_records of 20k rows vs dict copies", t_fast, t_dict, "dicts")
    report("D1", "all_records of 20k rows vs reference", t_fast, t_ref, "ref")


if __name__ == "__main__":
    main()
