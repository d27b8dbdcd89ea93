"""D2 db_footprint: the pool database at pool scale (64 hosts, 2,500 VMs, 25,000 VDIs,
25,000 VBDs, 65 SRs), every row complete with its datamodel fields and defaults.

* resident memory: RSS growth of a fresh subprocess per variant while it builds the pool
  from the same deterministic generator (so each variant holds its own values), mirror
  sets materialised; compiled core and pure reference against plain dicts of dicts
  (whose reverse sets are kept by hand); ratio = ours / dicts (lower is better, <=1.3);
* load: building the Database from records, and unpickling records + building, against
  ``pickle.loads`` and ``orjson.loads`` of the plain dicts (ratio = baseline / ours,
  >=0.5 means at most 2x); times are the best of 5;
* save: a snapshot of every table (``all_records``) pickled, against pickling the dicts;
* state.db: what the daemon does, flushing the pool to xapi's XML file (fsync, rename) and
  loading it back, against pickling and unpickling the dicts (best of 3).

Relations kept: VBD.VM <-> VM.VBDs, VBD.VDI <-> VDI.VBDs, VM.resident_on <->
host.resident_VMs, VDI.SR <-> SR.VDIs (one shared SR holds 60% of the VDIs),
VM.snapshot_of <-> VM.snapshots, VDI.snapshot_of <-> VDI.snapshots (mostly NULL, as in a
real pool).  Indexed: uuid, name_label and every relation's ref field.
"""
import gc
import json
import os
import pathlib
import pickle
import random
import subprocess
import sys
import tempfile
import time
import uuid as _uuid

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import pin, report  # noqa: E402
from xapi import datamodel as dm  # noqa: E402
from xapi import db_ref  # noqa: E402
from xapi.db import persist  # noqa: E402
from xapi.db.schema import new_database  # noqa: E402

try:
    from xapi import _fastdb
except ImportError as e:
    sys.exit(f"xapi._fastdb is not built ({e}); run `make build`")

HOSTS, VMS, VDIS, VBDS = 64, 2_500, 25_000, 25_000
SHARED_SR_SHARE = 0.6
TABLES = ("host", "SR", "VM", "VDI", "VBD")
RELATIONS = [("VBD", "VM", "VM", "VBDs"), ("VBD", "VDI", "VDI", "VBDs"),
             ("VM", "resident_on", "host", "resident_VMs"), ("VDI", "SR", "SR", "VDIs"),
             ("VM", "snapshot_of", "VM", "snapshots"), ("VDI", "snapshot_of", "VDI", "snapshots")]
MIRRORS = {t: [s for _, _, many, s in RELATIONS if many == t] for t in TABLES}
NULL = "OpaqueRef:NULL"


def generate(seed=42):
    """Yields (table, ref, row) for the whole pool: every datamodel field of the class,
    defaults as ``xapi.db.schema.insert`` makes them, realistic values where it matters."""
    rnd = random.Random(seed)

    def new_uuid():
        return str(_uuid.UUID(int=rnd.getrandbits(128), version=4))

    def new_ref():
        return "OpaqueRef:" + new_uuid()

    def row(cls, **values):
        r = {name: f.initial() for name, f in dm.CLASSES[cls].fields.items()}
        r.update(values)
        r["uuid"] = new_uuid()
        return r

    hosts = []
    for i in range(HOSTS):
        ref = new_ref()
        hosts.append(ref)
        yield "host", ref, row(
            "host", name_label=f"host-{i:02d}", hostname=f"host-{i:02d}", address=f"10.0.{i // 250}.{i % 250 + 1}",
            enabled=True, API_version_major=2, API_version_minor=21, API_version_vendor="XenSource",
            software_version={"product_brand": "pyxapi", "product_version": "1.0", "platform_version": "3.4.0",
                              "xapi": "1.0", "xen": "4.17.0", "build_number": "1", "hostname": f"host-{i:02d}",
                              "db_schema": "5.602"},
            cpu_info={"cpu_count": "32", "socket_count": "2", "speed": "2600.000", "vendor": "GenuineIntel",
                      "modelname": "Simulated CPU"},
            capabilities=["xen-3.0-x86_64", "hvm-3.0-x86_32", "hvm-3.0-x86_64"], sched_policy="credit",
            memory_overhead=0, edition="xcp-ng", other_config={"agent_start_time": "1700000000."})
    srs = []
    for i in range(HOSTS + 1):
        ref = new_ref()
        srs.append(ref)
        shared = i == HOSTS
        yield "SR", ref, row(
            "SR", name_label="NFS storage" if shared else f"Local storage on host-{i:02d}",
            type="nfs" if shared else "ext", content_type="user", shared=shared,
            physical_size=1 << 42, physical_utilisation=1 << 40, virtual_allocation=1 << 41,
            other_config={"i18n-key": "local-storage"} if not shared else {},
            sm_config={"devserial": "scsi-3600508b1001c"} if not shared else {})
    vms = []
    for i in range(VMS):
        ref = new_ref()
        vms.append(ref)
        running = rnd.random() < 0.8
        mem = rnd.choice((1, 2, 4, 8)) << 30
        yield "VM", ref, row(
            "VM", name_label=f"vm-{i:04d}", name_description="from template", user_version=1,
            power_state="Running" if running else "Halted", domid=i + 1 if running else -1,
            resident_on=rnd.choice(hosts) if running else NULL, affinity=rnd.choice(hosts),
            memory_static_max=mem, memory_dynamic_max=mem, memory_dynamic_min=mem // 2,
            memory_static_min=mem // 4, memory_target=mem, VCPUs_max=4, VCPUs_at_startup=2,
            actions_after_shutdown="destroy", actions_after_reboot="restart", actions_after_crash="restart",
            HVM_boot_policy="BIOS order", HVM_boot_params={"order": "cd"}, domain_type="hvm",
            platform={"timeoffset": "0", "device-model": "qemu-upstream-compat", "viridian": "true",
                      "acpi": "1", "apic": "true", "pae": "true", "nx": "true", "vga": "std",
                      "videoram": "8", "cores-per-socket": "2"},
            other_config={"base_template_name": "Debian Bookworm 12", "import_task": NULL,
                          "install-methods": "cdrom,nfs,http,ftp", "linux_template": "true",
                          "mac_seed": new_uuid()},
            allowed_operations=["changing_dynamic_range", "clean_reboot", "clean_shutdown", "pause",
                                "snapshot", "suspend", "hard_reboot", "hard_shutdown", "migrate_send"],
            tags=["prod"] if i % 3 == 0 else [], is_a_template=False, generation_id=f"0:{i}")
    vdis = []
    for i in range(VDIS):
        ref = new_ref()
        vdis.append(ref)
        sr = srs[-1] if rnd.random() < SHARED_SR_SHARE else rnd.choice(srs[:-1])
        size = rnd.choice((8, 16, 32, 64)) << 30
        yield "VDI", ref, row(
            "VDI", name_label=f"disk {i}", name_description="Created by template provisioner", SR=sr,
            virtual_size=size, physical_utilisation=size // rnd.randint(2, 8), type="user",
            sharable=False, read_only=False, location=new_uuid(), managed=True,
            sm_config={"vdi_type": "vhd", "host_OpaqueRef:" + new_uuid(): "RW"},
            other_config={"content_id": new_uuid()}, allowed_operations=["clone", "copy", "snapshot"])
    for i in range(VBDS):
        k = i % 10
        vm = vms[i // 10]
        yield "VBD", new_ref(), row(
            "VBD", VM=vm, VDI=vdis[i], device=f"xvd{'abcdefghij'[k]}", userdevice=str(k),
            bootable=k == 0, mode="RW", type="Disk", unpluggable=k > 0, currently_attached=True,
            other_config={"owner": ""} if k == 0 else {}, allowed_operations=["attach", "unplug"])


def build_db(module, items):
    db = module.Database()
    for name in TABLES:
        fields = list(dm.CLASSES[name].fields)
        db.create_table(name, fields, indexed=[f for f in ("uuid", "name_label") if f in fields])
    for rel in RELATIONS:
        db.add_relation(*rel)
    tables = {name: db.table(name) for name in TABLES}
    for table, ref, row in items:
        tables[table].add(ref, row)
    return db


def materialise(db):
    """Reads every mirror set once, as serving the pool would (the sets are built lazily)."""
    for name in TABLES:
        table = db.table(name)
        for field in MIRRORS[name]:
            for ref in table.refs():
                table.get_field(ref, field)


def build_dicts(items, copy):
    """The same pool as plain dicts of dicts, reverse sets kept by hand."""
    tables = {name: {} for name in TABLES}
    for table, ref, row in items:
        if copy:
            row = dict(row)
            for field in MIRRORS[table]:
                row[field] = []
        tables[table][ref] = row
        for one, field, many, set_field in RELATIONS:
            if one == table:
                target = tables[many].get(row[field])
                if target is not None:
                    target[set_field].append(ref)
    return tables


def timed(fn, runs=5):
    """Best of ``runs`` seconds of ``fn()`` (the machine may be shared; the best run is the
    one least disturbed); its result is freed outside the timed region, so that tearing
    down a large graph is not charged to whoever built it."""
    samples = []
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - t0)
        del result
    return min(samples)


def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def child(variant):
    """Runs in a fresh interpreter: RSS growth while building one variant."""
    gc.collect()
    before = rss_kib()
    if variant == "dicts":
        keep = build_dicts(generate(), copy=False)
    else:
        keep = build_db(_fastdb if variant == "fast" else db_ref, generate())
        materialise(keep)
    gc.collect()
    print(json.dumps({"rss_kib": rss_kib() - before}))
    del keep


def measure_rss(variant):
    out = subprocess.run([sys.executable, __file__, "--rss", variant], check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    return json.loads(out.stdout)["rss_kib"]


def main():
    rss = {v: measure_rss(v) for v in ("fast", "ref", "dicts")}
    rows = HOSTS + (HOSTS + 1) + VMS + VDIS + VBDS
    report("D2", f"RSS of the pool ({rows:,} rows) vs plain dicts", rss["fast"], rss["dicts"], "dicts",
           unit="KiB", higher_is_better=True, target="ratio <=1.3")
    report("D2", "RSS of the pool, reference vs plain dicts", rss["ref"], rss["dicts"], "dicts",
           unit="KiB", higher_is_better=True)

    pin(1)
    import orjson
    items = list(generate())
    plain = build_dicts(items, copy=True)
    blob = pickle.dumps(plain, protocol=pickle.HIGHEST_PROTOCOL)
    jblob = orjson.dumps(plain, default=lambda o: o.value)     # xmlrpc DateTime -> its string
    # The inputs above stay for the whole run: keep the collector from rescanning them in
    # every timed region, as if each load ran in a fresh process.
    gc.collect()
    gc.freeze()
    t_pickle_loads = timed(lambda: pickle.loads(blob))
    t_orjson_loads = timed(lambda: orjson.loads(jblob))
    t_build = timed(lambda: build_db(_fastdb, items))
    t_build_ref = timed(lambda: build_db(db_ref, items))
    t_build_dicts = timed(lambda: build_dicts(items, copy=True))

    def unpickle_and_build():
        loaded = pickle.loads(blob)
        return build_db(_fastdb, ((t, ref, row) for t in TABLES for ref, row in loaded[t].items()))
    t_full = timed(unpickle_and_build)
    report("D2", "load: build from records vs pickle.loads", t_build, t_pickle_loads, "pickle",
           target="ratio >=0.5 (<=2x pickle)")
    report("D2", "load: unpickle + build vs pickle.loads", t_full, t_pickle_loads, "pickle",
           target="ratio >=0.5 (<=2x pickle)")
    report("D2", "load: build from records vs orjson.loads", t_build, t_orjson_loads, "orjson")
    report("D2", "load: build from records vs plain dicts", t_build, t_build_dicts, "dicts")
    report("D2", "load: build from records vs reference", t_build, t_build_ref, "ref")

    db = build_db(_fastdb, items)
    materialise(db)
    assert db.table("SR").get_field(db.table("SR").refs()[-1], "VDIs") == \
        plain["SR"][list(plain["SR"])[-1]]["VDIs"], "mirror sets match the hand-kept ones"

    def save():
        return pickle.dumps({name: db.table(name).all_records() for name in TABLES},
                            protocol=pickle.HIGHEST_PROTOCOL)
    t_save = timed(save)
    t_pickle_dumps = timed(lambda: pickle.dumps(plain, protocol=pickle.HIGHEST_PROTOCOL))
    t_orjson_dumps = timed(lambda: orjson.dumps(plain, default=lambda o: o.value))
    report("D2", "save: all_records + pickle vs pickle.dumps", t_save, t_pickle_dumps, "pickle")
    report("D2", "save: all_records + pickle vs orjson.dumps", t_save, t_orjson_dumps, "orjson")

    # What the daemon itself does: flush to state.db (xapi's XML, fsync, rename) and load it at start.
    full = new_database()
    for table, ref, row in items:
        full.table(table).add(ref, row)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "state.db")
        t_flush = timed(lambda: persist.save(full, path), runs=3)
        t_load = timed(lambda: persist.load(path), runs=3)
        size = os.path.getsize(path)
    report("D2", f"flush: state.db ({size / 2**20:.0f} MiB) vs pickle.dumps", t_flush, t_pickle_dumps, "pickle")
    report("D2", "load: state.db vs pickle.loads", t_load, t_pickle_loads, "pickle",
           target="ratio >=0.5 (<=2x pickle)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--rss":
        child(sys.argv[2])
    else:
        main()
