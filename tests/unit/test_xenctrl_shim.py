"""The xenctrl shim (csrc/xenctrl_shim.c through xapi._xenctrl_py) against its
pure-Python reference (xapi.xenctrl_ref).

Both implementations are tested whenever they can be imported; the compiled
one missing is a failure unless XAPI_PURE=1.
"""
import errno
import importlib
import os
import subprocess
import sys
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xapi import xenctrl_ref
from xapi.compiled import PURE
from xapi.xenctrl_errors import XenctrlError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

try:
    from xapi import _xenctrl_py as compiled
except ImportError:
    if not PURE:
        raise
    compiled = None

needs_compiled = pytest.mark.skipif(compiled is None, reason="xapi._xenctrl not built (XAPI_PURE=1)")
IMPLS = [
    pytest.param(xenctrl_ref, id="ref"),
    pytest.param(compiled, id="compiled", marks=needs_compiled),
]
PAGES_PER_MIB = 256
HYPERVISOR_PRESENT = os.path.exists("/dev/xen/privcmd") or os.path.exists("/proc/xen/privcmd")

DOMINFO_KEYS = {
    "domid", "handle", "dying", "shutdown", "paused", "blocked", "running", "hvm",
    "shutdown_reason", "tot_pages", "max_pages", "nr_online_vcpus", "max_vcpu_id", "cpu_time",
}
PHYSINFO_KEYS = {
    "nr_cpus", "threads_per_core", "cores_per_socket", "nr_nodes", "cpu_khz",
    "total_pages", "free_pages", "scrub_pages",
}


def without_cpu_time(domains):
    return [{k: v for k, v in d.items() if k != "cpu_time"} for d in domains]


def check_host(impl, cfg: str, memory_mib: int, cpus: int, mhz: int, dom0_mib: int, dom0_vcpus: int):
    with impl.open("sim", cfg) as xc:
        assert xc.backend == "sim"
        pi = xc.physinfo()
        doms = xc.domain_list()
    assert set(pi) == PHYSINFO_KEYS
    assert pi["nr_cpus"] == cpus
    assert pi["threads_per_core"] * pi["cores_per_socket"] * pi["nr_nodes"] == cpus
    assert pi["cpu_khz"] == mhz * 1000
    assert pi["total_pages"] == memory_mib * PAGES_PER_MIB
    assert pi["scrub_pages"] == 0
    assert doms[0]["domid"] == 0
    assert [d["domid"] for d in doms] == sorted(d["domid"] for d in doms)
    used = sum(d["tot_pages"] for d in doms)
    assert pi["free_pages"] == pi["total_pages"] - used
    dom0 = doms[0]
    assert set(dom0) == DOMINFO_KEYS
    assert dom0["tot_pages"] == dom0_mib * PAGES_PER_MIB
    assert dom0["max_pages"] >= dom0["tot_pages"]
    assert dom0["nr_online_vcpus"] == dom0_vcpus
    assert dom0["max_vcpu_id"] == dom0_vcpus - 1
    assert dom0["running"] and not (dom0["dying"] or dom0["shutdown"] or dom0["paused"] or dom0["hvm"])
    assert dom0["shutdown_reason"] == 0
    assert str(uuid.UUID(dom0["handle"])) == dom0["handle"]
    assert isinstance(dom0["cpu_time"], int) and dom0["cpu_time"] >= 0
    return pi, doms


@pytest.mark.parametrize("impl", IMPLS)
def test_defaults(impl):
    pi, doms = check_host(impl, "", 16384, 4, 2400, 1024, 4)
    assert len(doms) == 1
    assert doms[0]["handle"] == "00000000-0000-0000-0000-000000000000"
    with impl.open() as xc:  # backend defaults to "sim"
        assert xc.physinfo() == pi


sim_configs = st.fixed_dictionaries(
    {
        "memory_mib": st.integers(1, 1 << 30),
        "cpus": st.integers(1, 4096),
        "cpu_mhz": st.integers(1, 1000000),
    },
    optional={"dom0_fraction": st.floats(0, 1), "dom0_vcpu_fraction": st.floats(0, 1), "spaces": st.booleans()},
)


@needs_compiled
@settings(max_examples=60, deadline=None)
@given(sim_configs)
def test_compiled_matches_reference(c):
    mem, cpus, mhz = c["memory_mib"], c["cpus"], c["cpu_mhz"]
    items = {"memory_mib": mem, "cpus": cpus, "cpu_mhz": mhz}
    dom0_mib, dom0_vcpus = min(mem, 1024), cpus
    if "dom0_fraction" in c:
        dom0_mib = max(1, int(mem * c["dom0_fraction"]))
        items["dom0_memory_mib"] = dom0_mib
    if "dom0_vcpu_fraction" in c:
        dom0_vcpus = max(1, int(cpus * c["dom0_vcpu_fraction"]))
        items["dom0_vcpus"] = dom0_vcpus
    sep = " , " if c.get("spaces") else ","
    cfg = sep.join(f"{k}={v}" for k, v in items.items())
    pi_c, doms_c = check_host(compiled, cfg, mem, cpus, mhz, dom0_mib, dom0_vcpus)
    pi_r, doms_r = check_host(xenctrl_ref, cfg, mem, cpus, mhz, dom0_mib, dom0_vcpus)
    assert pi_c == pi_r
    assert without_cpu_time(doms_c) == without_cpu_time(doms_r)
    assert [type(v) for v in doms_c[0].values()] == [type(doms_r[0][k]) for k in doms_c[0]]


BAD_CONFIGS = [
    "foo=1",
    "cpus",
    "cpus=",
    "cpus=0",
    "cpus=4097",
    "cpus=-1",
    "cpus=+2",
    "cpus=2x",
    "cpus=0x10",
    "memory_mib=99999999999999999999999999",
    "memory_mib=1073741825",
    "cpu_mhz=1000001",
    "load_pct=101",
    "=3",
    "memory_mib=512,dom0_memory_mib=513",
    "cpus=2,dom0_vcpus=3",
    "dom0_vcpus=5",
    "dom0_memory_mib=0",
    "cpus=1,,cpus=2,  ,cpus = 3 x",
]


@pytest.mark.parametrize("cfg", BAD_CONFIGS)
def test_bad_configs_agree(cfg):
    impls = [xenctrl_ref] + ([compiled] if compiled is not None else [])
    outcomes = []
    for impl in impls:
        try:
            with impl.open("sim", cfg) as xc:
                outcomes.append(("ok", xc.physinfo()))
        except XenctrlError as e:
            outcomes.append(("error", e.errno, e.strerror))
    assert all(o == outcomes[0] for o in outcomes), outcomes
    assert outcomes[0][:2] == ("error", errno.EINVAL), outcomes[0]
    assert outcomes[0][2].startswith("sim config: ")


@pytest.mark.parametrize("impl", IMPLS)
def test_config_syntax(impl):
    # blanks around items, keys and values; empty items; the last duplicate wins
    with impl.open("sim", " cpus = 2 ,, memory_mib=\t4096 ,cpus=8,") as xc:
        pi = xc.physinfo()
    assert (pi["nr_cpus"], pi["total_pages"]) == (8, 4096 * PAGES_PER_MIB)


@pytest.mark.parametrize("impl", IMPLS)
def test_small_host_dom0_takes_everything(impl):
    with impl.open("sim", "memory_mib=100") as xc:
        pi = xc.physinfo()
        (dom0,) = xc.domain_list()
    assert dom0["tot_pages"] == pi["total_pages"] == 100 * PAGES_PER_MIB
    assert pi["free_pages"] == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_cpu_time_advances_with_wall_time(impl):
    with impl.open("sim", "cpus=2,load_pct=50") as xc:
        t0 = time.monotonic_ns()
        a = xc.domain_list()[0]["cpu_time"]
        time.sleep(0.05)
        b = xc.domain_list()[0]["cpu_time"]
        t1 = time.monotonic_ns()
    # 2 vCPUs at 50% burn about one wall-clock second per second
    assert b > a
    assert 0.04e9 <= b - a <= (t1 - t0) + 1e6
    assert b <= (t1 - t0) + 0.5e9  # started at open, i.e. just before t0


@pytest.mark.parametrize("impl", IMPLS)
def test_idle_dom0_burns_nothing(impl):
    with impl.open("sim", "load_pct=0") as xc:
        a = xc.domain_list()[0]["cpu_time"]
        time.sleep(0.01)
        assert xc.domain_list()[0]["cpu_time"] == a == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_errors_and_lifecycle(impl):
    with pytest.raises(XenctrlError) as e:
        impl.open("bogus")
    assert e.value.errno == errno.EINVAL and "unknown backend" in e.value.strerror
    with pytest.raises(XenctrlError) as e:
        impl.open("sim\0", "")
    assert e.value.errno == errno.EINVAL
    xc = impl.open("sim", "")
    assert isinstance(xc, impl.Interface)
    xc.close()
    xc.close()  # idempotent
    for call in (xc.physinfo, xc.domain_list):
        with pytest.raises(XenctrlError) as e:
            call()
        assert e.value.errno == errno.EBADF
    assert isinstance(e.value, OSError)


@pytest.mark.parametrize("impl", IMPLS)
def test_handles_are_independent(impl):
    with impl.open("sim", "cpus=2") as a, impl.open("sim", "cpus=6") as b:
        assert a.physinfo()["nr_cpus"] == 2
        assert b.physinfo()["nr_cpus"] == 6


@pytest.mark.skipif(HYPERVISOR_PRESENT, reason="a Xen hypervisor is present")
@pytest.mark.parametrize("impl", IMPLS)
def test_xc_backend_fails_cleanly(impl):
    with pytest.raises(XenctrlError) as e:
        impl.open("xc")
    assert e.value.errno > 0 and e.value.strerror
    if impl.HAVE_LIBXENCTRL:
        assert e.value.errno != errno.ENOSYS
        assert e.value.strerror.startswith("cannot open the hypervisor interface")
    else:
        assert e.value.errno == errno.ENOSYS
        assert "built without libxenctrl" in e.value.strerror


SUBPROCESS_XC = """
import sys
from xapi import {mod} as impl
from xapi.xenctrl_errors import XenctrlError
for _ in range(3):
    try:
        impl.open("xc")
    except XenctrlError as e:
        print(e.errno, e.strerror)
    else:
        sys.exit(3)
sys.exit(0)
"""


@pytest.mark.skipif(HYPERVISOR_PRESENT, reason="a Xen hypervisor is present")
@pytest.mark.parametrize("impl", IMPLS)
def test_xc_backend_fails_cleanly_in_subprocess(impl):
    mod = impl.__name__.rsplit(".", 1)[1]
    p = subprocess.run(
        [sys.executable, "-c", SUBPROCESS_XC.format(mod=mod)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    lines = p.stdout.splitlines()
    assert len(lines) == 3 and len(set(lines)) == 1
    assert int(lines[0].split()[0]) > 0


@pytest.mark.parametrize("pure", ["1", ""])
def test_facade_follows_xapi_pure(pure):
    if not pure and compiled is None:
        pytest.skip("xapi._xenctrl not built")
    env = dict(os.environ, XAPI_PURE=pure)
    code = (
        "from xapi import xenctrl\n"
        "with xenctrl.open('sim', 'cpus=3') as xc:\n"
        "    assert xc.physinfo()['nr_cpus'] == 3 and xc.domain_list()[0]['domid'] == 0\n"
        "print(xenctrl.IMPLEMENTATION)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == ("xapi.xenctrl_ref" if pure else "xapi._xenctrl_py")


def test_facade_exports():
    xenctrl = importlib.import_module("xapi.xenctrl")
    assert xenctrl.XenctrlError is XenctrlError
    assert xenctrl.PAGE_SIZE == 4096
    with xenctrl.open() as xc:
        assert xc.domain_list()[0]["domid"] == 0
