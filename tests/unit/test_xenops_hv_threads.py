"""With a hypervisor whose calls may block (the xc backend), xenopsd makes every hypervisor call in
its bounded pool of threads, never on the event loop: the whole lifecycle (start, pause, unpause,
save, restore, localhost migration, clean and hard reboot and shutdown, a guest's own shutdown,
VM.remove, stats) is driven over xenopsd's socket against the simulated hypervisor, seen through a
recorder that notes the thread of each call and marks itself as the xc backend."""
import asyncio
import threading

import pytest

from xapi import xenctrl
from xapi.xenops.client import Client
from xapi.xenops.server import Xenopsd

pytestmark = pytest.mark.skipif(not hasattr(xenctrl.Interface, "domain_create"),
                                reason="the xenctrl shim has no domain operations yet")
UUID = "5a1d7c3e-2b4f-4d6e-8a9b-0c1d2e3f4a5b"


class Recorder:
    """The simulated hypervisor's calls, each noted with the thread it ran on."""
    backend = "xc"

    def __init__(self, hv):
        self._hv = hv
        self.calls: list[tuple[str, int]] = []

    def __getattr__(self, name):
        fn = getattr(self._hv, name)
        if not callable(fn):
            return fn

        def call(*args, **kw):
            self.calls.append((name, threading.get_ident()))
            return fn(*args, **kw)
        return call


def test_every_hypervisor_call_runs_in_the_pool(tmp_path):
    async def main():
        with xenctrl.open("sim", "memory_mib=4096,cpus=2") as xc:
            hv = Recorder(xc)
            x = Xenopsd(hv, workers=2, shutdown_delay=0.05, poll_interval=0.05, guest_agent_delay=0)
            assert x._hv_pool is not None
            sock = str(tmp_path / "xenopsd")
            await x.start(sock)
            loop_thread = threading.get_ident()
            try:
                c = Client(sock)
                await c.call("VM.add", {"id": UUID, "name": "t", "hvm": False, "memory_kib": 262144,
                                        "vcpus": 1, "vcpus_max": 1, "on_shutdown": "destroy",
                                        "on_reboot": "restart", "on_crash": "destroy"})
                await c.run("VM.start", UUID, False)
                await c.run("VM.pause", UUID)
                await c.run("VM.unpause", UUID)
                await c.run("VM.save", UUID, str(tmp_path / "image"))
                await c.run("VM.restore", UUID, str(tmp_path / "image"), False)
                await c.run("VM.migrate_local", UUID)
                await c.run("VM.reboot", UUID, 10.0)
                await c.run("VM.hard_reboot", UUID)
                assert (await c.call("VM.stat", UUID))["power_state"] == "Running"
                await c.call("HOST.stats")
                await c.call("DEBUG.trigger", UUID, "poweroff")     # the guest halts itself
                for _ in range(100):
                    if (await c.call("VM.stat", UUID))["power_state"] == "Halted":
                        break
                    await asyncio.sleep(0.05)
                assert (await c.call("VM.stat", UUID))["power_state"] == "Halted"
                await c.run("VM.start", UUID, False)
                await c.run("VM.shutdown", UUID, 10.0)
                await c.run("VM.start", UUID, True)
                await c.run("VM.hard_shutdown", UUID)
                await c.call("VM.remove", UUID)
            finally:
                await x.close()
            names = {n for n, _ in hv.calls}
            assert {"domain_create", "domain_destroy", "domain_pause", "domain_unpause", "domain_shutdown",
                    "domain_getinfo", "domain_list", "physinfo"} <= names
            on_loop = sorted({n for n, t in hv.calls if t == loop_thread})
            assert on_loop == [], f"hypervisor calls on the event loop: {on_loop}"
    asyncio.run(main())
