"""xenopsd's VM.save / VM.restore on the simulated hypervisor, straight through the service's own
socket client, with the image in a plain file: the domain goes and comes back, a cancelled save
leaves it running, a damaged or foreign image is refused."""
import asyncio
import os

import pytest

from xapi import xenctrl
from xapi.xenops import image
from xapi.xenops.client import Client
from xapi.xenops.server import XenopsError, Xenopsd

pytestmark = pytest.mark.skipif(not hasattr(xenctrl.Interface, "domain_create"),
                                reason="the xenctrl shim has no domain operations yet")
UUID_A = "0b0c7d1e-4a4f-4c1e-9d55-5f4c3a1e2b01"
UUID_B = "0b0c7d1e-4a4f-4c1e-9d55-5f4c3a1e2b02"


def _config(uuid):
    return {"id": uuid, "name": "t", "hvm": False, "memory_kib": 512 * 1024, "vcpus": 2, "vcpus_max": 2}


def run(tmp_path, scenario):
    async def main():
        with xenctrl.open("sim", "memory_mib=4096,cpus=2") as xc:
            x = Xenopsd(xc, guest_agent_delay=0)
            sock = str(tmp_path / "xenopsd")
            await x.start(sock)
            try:
                c = Client(sock)
                for u in (UUID_A, UUID_B):
                    await c.call("VM.add", _config(u))
                await scenario(x, c)
            finally:
                await x.close()
    asyncio.run(main())


def test_save_then_restore(tmp_path):
    path = str(tmp_path / "image")

    async def scenario(x, c):
        await c.run("VM.start", UUID_A, False)
        seen = []
        result = await c.run("VM.save", UUID_A, path, on_progress=seen.append)
        assert (await c.call("VM.stat", UUID_A))["power_state"] == "Halted"
        assert result["size"] == os.path.getsize(path) and seen and seen[-1] == 1.0
        with open(path, "rb") as f:
            info = image.read(f)
        assert (info.vm_uuid, info.memory, info.vcpus) == (UUID_A, 512 << 20, 2)
        await c.run("VM.restore", UUID_A, path, True)
        st = await c.call("VM.stat", UUID_A)
        assert st["power_state"] == "Paused" and st["vcpus"] == 2
        with pytest.raises(XenopsError) as e:
            await c.run("VM.restore", UUID_A, path, False)
        assert e.value.code == "VM_BAD_POWER_STATE"
    run(tmp_path, scenario)


def test_cancelled_save_keeps_the_domain_running(tmp_path):
    path = str(tmp_path / "image")

    async def scenario(x, c):
        await c.run("VM.start", UUID_A, False)
        x.build_delay = 2.0                       # paces the image writing
        tid = await c.call("VM.save", UUID_A, path)
        await asyncio.sleep(0.3)
        await c.call("TASK.cancel", tid)
        st = await c.wait(tid)
        assert st["state"] == "cancelled"
        assert (await c.call("VM.stat", UUID_A))["power_state"] == "Running"
    run(tmp_path, scenario)


def test_damaged_and_foreign_images_are_refused(tmp_path):
    path = str(tmp_path / "image")

    async def scenario(x, c):
        await c.run("VM.start", UUID_A, False)
        await c.run("VM.save", UUID_A, path)
        with pytest.raises(XenopsError) as e:            # A's image is not B's
            await c.run("VM.restore", UUID_B, path, False)
        assert e.value.code == "INTERNAL_ERROR" and UUID_A in e.value.params[0]
        with open(path, "r+b") as f:
            f.seek(image.HEADER_SIZE + 4096)
            b = f.read(1)
            f.seek(image.HEADER_SIZE + 4096)
            f.write(bytes([b[0] ^ 1]))
        with pytest.raises(XenopsError) as e:
            await c.run("VM.restore", UUID_A, path, False)
        assert "checksum" in e.value.params[0]
        assert (await c.call("VM.stat", UUID_A))["power_state"] == "Halted"
    run(tmp_path, scenario)
