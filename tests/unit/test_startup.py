"""What a fresh host's database holds, that it is consistent, and that populate() run again on the same
database (as after loading state.db) reuses every row and only refreshes live facts."""
import xml.dom.minidom

import pytest

from xapi import datamodel as dm, first_boot_data, startup
from xapi.datamodel.relations import RELATIONS
from xapi.db.schema import NULL_REF, new_database

INV = {"INSTALLATION_UUID": "11111111-1111-4111-8111-111111111111",
       "CONTROL_DOMAIN_UUID": "22222222-2222-4222-8222-222222222222",
       "POOL_UUID": "33333333-3333-4333-8333-333333333333"}


@pytest.fixture
def hv():
    with startup.open_hypervisor("sim", "memory_mib=8192,cpus=4") as h:
        yield h


@pytest.fixture
def fresh(hv):
    db = new_database()
    pool, host = startup.populate(db, INV, hv, "192.0.2.10")
    return db, pool, host


def records(db, cls):
    return db.table(cls).all_records()


def counts(db):
    return {t: len(db.table(t)) for t in db.tables()}


def test_pool_and_host(fresh):
    db, pool, host = fresh
    assert list(records(db, "pool")) == [pool]
    assert records(db, "pool")[pool]["master"] == host
    assert records(db, "pool")[pool]["uuid"] == INV["POOL_UUID"]
    h = records(db, "host")[host]
    assert h["uuid"] == INV["INSTALLATION_UUID"] and h["address"] == "192.0.2.10" and h["enabled"]
    assert {"product_version", "product_brand", "platform_version", "xapi", "build_number",
            "db_schema"} <= set(h["software_version"])
    m = records(db, "host_metrics")[h["metrics"]]
    assert m["memory_total"] == 8192 << 20 and 0 < m["memory_free"] <= m["memory_total"] and m["live"]
    cpus = records(db, "host_cpu")
    assert sorted(cpus) == sorted(h["host_CPUs"]) and len(cpus) == 4
    assert sorted(c["number"] for c in cpus.values()) == [0, 1, 2, 3]
    assert all(c["host"] == host for c in cpus.values())


def test_control_domain(fresh):
    db, pool, host = fresh
    h = records(db, "host")[host]
    dom0 = h["control_domain"]
    vm = records(db, "VM")[dom0]
    assert vm["uuid"] == INV["CONTROL_DOMAIN_UUID"] and vm["is_control_domain"] and not vm["is_a_template"]
    assert vm["power_state"] == "Running" and vm["resident_on"] == host and vm["domid"] == 0
    assert h["resident_VMs"] == [dom0]
    assert records(db, "VM_metrics")[vm["metrics"]]["memory_actual"] > 0
    consoles = records(db, "console")
    assert sorted(vm["consoles"]) == sorted(consoles)
    assert sorted(c["protocol"] for c in consoles.values()) == ["rfb", "vt100"]
    for c in consoles.values():
        assert c["VM"] == dom0 and c["location"] == f"https://192.0.2.10/console?ref={dom0}"


def management(db):
    (pif_ref, pif), = [(r, p) for r, p in records(db, "PIF").items() if p["management"]]
    return pif_ref, pif


def test_management_network_and_pif(fresh):
    db, pool, host = fresh
    pif_ref, pif = management(db)
    net_ref, net = pif["network"], records(db, "network")[pif["network"]]
    assert net["bridge"] == "xenbr0" and net["name_label"] == "Pool-wide network associated with eth0"
    assert net["MTU"] == 1500 and net["PIFs"] == [pif_ref]
    assert pif["device"] == "eth0" and pif["network"] == net_ref and pif["host"] == host
    assert pif["management"] and pif["physical"] and pif["currently_attached"]
    assert pif["VLAN"] == -1 and pif["IP"] == "192.0.2.10" and pif["ip_configuration_mode"] == "Static"
    assert len(pif["MAC"].split(":")) == 6 and int(pif["MAC"][:2], 16) & 3 == 2   # local, unicast
    assert pif["metrics"] in records(db, "PIF_metrics")
    assert pif_ref in records(db, "host")[host]["PIFs"]


def test_first_boot_scans_every_nic(fresh):
    """eth0 is the management PIF; eth1..eth3 have theirs too, unplugged, on the pool-wide network
    of their bridge, with the simulated NICs' MACs (what a later PIF.scan finds again)."""
    from xapi.actions import host_nics
    db, pool, host = fresh
    pifs = {p["device"]: p for p in records(db, "PIF").values()}
    nics = host_nics.local("sim", INV["INSTALLATION_UUID"])
    assert sorted(pifs) == sorted(nics) == ["eth0", "eth1", "eth2", "eth3"]
    nets = records(db, "network")
    for device, p in pifs.items():
        assert p["MAC"] == nics[device].MAC and p["physical"] and p["host"] == host and p["VLAN"] == -1
        assert nets[p["network"]]["bridge"] == "xenbr" + device[3:]
        assert p["management"] == p["currently_attached"] == (device == "eth0")
    assert len(nets) == 4
    assert records(db, "host")[host]["software_version"]["network_backend"] == "openvswitch"


def test_network_backend_from_network_conf(tmp_path):
    assert startup.network_backend("sim", str(tmp_path)) == "openvswitch"      # XCP-ng's default
    (tmp_path / "network.conf").write_text("bridge\n")
    assert startup.network_backend("sim", str(tmp_path)) == "bridge"
    (tmp_path / "network.conf").write_text("vswitch\n")
    assert startup.network_backend("sim", str(tmp_path)) == "openvswitch"


def test_default_templates(fresh):
    db, *_ = fresh
    templates = {r["name_label"]: r for r in records(db, "VM").values() if r["is_a_template"]}
    for name in ("Other install media", "Debian Bookworm 12", "Ubuntu Jammy Jellyfish 22.04", "CentOS Stream 9",
                 "Windows 10 (64-bit)", "Windows Server 2022 (64-bit)"):
        t = templates[name]
        assert t["is_default_template"] and t["power_state"] == "Halted" and not t["is_control_domain"]
        assert t["other_config"]["default_template"] == "true" and t["other_config"]["install-methods"]
        assert t["memory_static_min"] <= t["memory_dynamic_min"] <= t["memory_dynamic_max"] \
            <= t["memory_static_max"]
        assert t["VCPUs_at_startup"] <= t["VCPUs_max"]
        assert t["HVM_boot_policy"] == "BIOS order" and t["HVM_boot_params"]["order"]
        assert t["domain_type"] == "hvm" and t["platform"]["acpi"] == "1"
        assert t["resident_on"] == NULL_REF and t["reference_label"]
        restrictions = xml.dom.minidom.parseString(t["recommendations"]).documentElement
        assert restrictions.tagName == "restrictions"
        fields = {e.getAttribute("field") or e.getAttribute("property") for e in
                  restrictions.getElementsByTagName("restriction")}
        assert {"memory-static-max", "vcpus-max", "number-of-vbds", "number-of-vifs"} <= fields
    assert templates["Debian Bookworm 12"]["other_config"]["linux_template"] == "true"
    assert templates["Ubuntu Jammy Jellyfish 22.04"]["HVM_boot_params"]["firmware"] == "uefi"
    assert templates["Windows 10 (64-bit)"]["VCPUs_max"] == 2 and templates["Windows 10 (64-bit)"]["has_vendor_device"]
    disks = xml.dom.minidom.parseString(templates["Debian Bookworm 12"]["other_config"]["disks"])
    assert disks.documentElement.getElementsByTagName("disk")[0].getAttribute("size") == str(10 << 30)
    assert "disks" not in templates["Other install media"]["other_config"]


def test_storage_drivers(fresh):
    db, *_ = fresh
    sms = {r["type"]: r for r in records(db, "SM").values()}
    assert set(sms) == {"ext", "nfs", "iso", "udev"}
    for ty, sm in sms.items():
        assert sm["name_label"] and sm["vendor"] and sm["copyright"] and sm["version"] == "1.0"
        assert sm["required_api_version"] in ("1.0", "1.1")
        assert sm["driver_filename"].startswith("/opt/xensource/sm/") and sm["driver_filename"].endswith("SR")
        assert sm["capabilities"] == list(sm["features"]) and sm["configuration"]
    assert sms["ext"]["features"]["VDI_RESET_ON_BOOT"] == 2 and sms["ext"]["features"]["VDI_CREATE"] == 1
    assert "VDI_RESET_ON_BOOT" in sms["nfs"]["capabilities"]
    assert {"server", "serverpath"} <= set(sms["nfs"]["configuration"])
    assert sms["udev"]["required_api_version"] == "1.1" and sms["iso"]["name_label"] == "ISO"


def test_every_reference_is_valid_and_every_relation_consistent(fresh):
    db, *_ = fresh
    for cname in db.tables():
        for ref, row in records(db, cname).items():
            assert row.get("uuid", "x"), (cname, ref)
            for fname, f in dm.CLASSES[cname].fields.items():
                v = row[fname]
                if f.type.kind == "ref" and v != NULL_REF:
                    assert v in db.table(f.type.name), (cname, fname)
                if f.type.kind == "set" and f.type.elem.kind == "ref":
                    assert all(x in db.table(f.type.elem.name) for x in v), (cname, fname)
    for (cls, field), (other, many) in RELATIONS.items():
        for ref, row in records(db, other).items():
            assert sorted(row[many]) == sorted(db.table(cls).find(field, ref)), (other, many)
    uuids = [r["uuid"] for t in db.tables() for r in records(db, t).values() if "uuid" in r]
    assert len(uuids) == len(set(uuids))


def test_populate_again_reuses_every_row(fresh, hv):
    db, pool, host = fresh
    before = {t: records(db, t) for t in db.tables()}
    generation = db.generation
    assert startup.populate(db, INV, hv, "192.0.2.10") == (pool, host)
    assert {t: set(records(db, t)) for t in db.tables()} == {t: set(before[t]) for t in before}
    # nothing but timestamps changed
    for t in before:
        for ref, row in records(db, t).items():
            changed = {k for k in row if row[k] != before[t][ref][k]}
            assert changed <= {"last_updated"}, (t, changed)
    assert db.generation - generation <= 3


def test_populate_refreshes_live_facts(fresh, hv):
    db, pool, host = fresh
    refs = {t: set(records(db, t)) for t in db.tables()}
    h = db.table("host")
    h.set_field(host, "name_label", "renamed by the user")
    h.set_field(host, "software_version", {"product_version": "0.0.0"})
    db.table("host_metrics").set_field(h.get_field(host, "metrics"), "memory_total", 1)
    (tpl,) = db.table("VM").find("name_label", "Debian Bookworm 12")
    db.table("VM").set_field(tpl, "name_description", "edited")
    assert startup.populate(db, INV, hv, "198.51.100.7") == (pool, host)
    assert {t: set(records(db, t)) for t in db.tables()} == refs
    row = h.get(host)
    assert row["address"] == "198.51.100.7" and row["name_label"] == "renamed by the user"
    assert row["software_version"]["product_version"] != "0.0.0"
    assert db.table("host_metrics").get_field(row["metrics"], "memory_total") == 8192 << 20
    assert management(db)[1]["IP"] == "198.51.100.7"
    for c in records(db, "console").values():
        assert c["location"].startswith("https://198.51.100.7/console?ref=")
    assert db.table("VM").get_field(tpl, "name_description") == "edited"   # templates are left alone


def test_populate_repairs_what_is_missing(fresh, hv):
    db, pool, host = fresh
    dom0 = db.table("host").get_field(host, "control_domain")
    # a console and a template lost, a metrics row gone
    consoles = db.table("VM").get_field(dom0, "consoles")
    db.table("console").remove(consoles[0])
    (tpl,) = db.table("VM").find("name_label", "CentOS Stream 9")
    db.table("VM").remove(tpl)
    db.table("VM_metrics").remove(db.table("VM").get_field(dom0, "metrics"))
    n = counts(db)
    startup.populate(db, INV, hv, "192.0.2.10")
    after = counts(db)
    assert after["console"] == n["console"] + 1 and after["VM"] == n["VM"] + 1
    assert after["VM_metrics"] == n["VM_metrics"] + 1
    assert len(db.table("VM").get_field(dom0, "consoles")) == 2
    assert db.table("VM").get_field(dom0, "metrics") in db.table("VM_metrics")
    assert db.table("VM").find("name_label", "CentOS Stream 9")


def test_host_cpus_follow_the_hardware(fresh):
    db, pool, host = fresh
    with startup.open_hypervisor("sim", "memory_mib=8192,cpus=2") as smaller:
        startup.populate(db, INV, smaller, "192.0.2.10")
    cpus = db.table("host").get_field(host, "host_CPUs")
    assert len(cpus) == 2 and sorted(cpus) == sorted(db.table("host_cpu").refs())


def test_another_host_identity_is_another_host(fresh, hv):
    db, pool, host = fresh
    other = dict(INV, INSTALLATION_UUID="44444444-4444-4444-8444-444444444444")
    pool2, host2 = startup.populate(db, other, hv, "192.0.2.11")
    assert pool2 == pool and host2 != host
    assert db.table("pool").get_field(pool, "master") == host2
    # templates and drivers are pool-wide: not duplicated
    assert len([r for r in records(db, "VM").values() if r["is_default_template"]]) == \
        len(first_boot_data.TEMPLATES)
    assert len(db.table("SM")) == len(first_boot_data.SM_DRIVERS)
