"""The xe commands that add and remove a VM's disks and CDs (xapi's cli_operations.ml vm_disk_add,
vm_disk_remove, vm_cd_add, vm_cd_remove): new VBDs are plugged at once into a running VM."""
from __future__ import annotations

from xapi.cli.cmdtable import command
from xapi.cli.commands import CliFailure, parse_size
from xapi.cli.ops_vm import SEL, each_vm
from xapi.datamodel.errors import XapiError

NULL = "OpaqueRef:NULL"
CREATED_BY_XE = "Created by xe"


async def _vbd_and_plug(run, vm: str, vdi: str, device: str, mode: str, kind: str, other_config: dict) -> None:
    """cli_operations' create_vbd_and_plug: the VBD, then VBD.plug if the VM runs; a failed hot-plug
    leaves the VBD for the next boot, as there."""
    vbd = await run.call("VBD.create", {
        "VM": vm, "VDI": vdi, "userdevice": device, "bootable": False, "mode": mode, "type": kind,
        "unpluggable": True, "empty": False, "other_config": other_config, "qos_algorithm_type": "",
        "qos_algorithm_params": {}, "device": "", "currently_attached": False})
    if await run.call("VM.get_power_state", vm) == "Running":
        try:
            await run.call("VBD.plug", vbd)
        except XapiError:
            pass


async def _iso_vdis(run, name: str) -> list[str]:
    out = []
    for vdi in await run.call("VDI.get_by_name_label", name):
        if await run.call("SR.get_content_type", await run.call("VDI.get_SR", vdi)) == "iso":
            out.append(vdi)
    return out


@command("vm-disk-add", reqd=("disk-size", "device"), optn=("sr-uuid", *SEL),
         help="Adds a new disk of disk-size to the selected VMs at device (on sr-uuid, or the pool's default "
              "SR); it is plugged at once into a running VM.")
async def vm_disk_add(run) -> None:
    size = str(parse_size(run.args["disk-size"]))
    if "sr-uuid" in run.args:
        sr = await run.call("SR.get_by_uuid", run.args["sr-uuid"])
    else:
        sr = await run.call("pool.get_default_SR", (await run.call("pool.get_all"))[0])
        if sr not in await run.call("SR.get_all"):
            raise CliFailure("No default Pool SR set; you must specify an SR on the commandline")
    device = run.args["device"]

    async def op(vm):
        vdi = await run.call("VDI.create", {
            "name_label": CREATED_BY_XE, "name_description": CREATED_BY_XE, "SR": sr, "virtual_size": size,
            "type": "user", "sharable": False, "read_only": False, "other_config": {}, "xenstore_data": {},
            "sm_config": {"vmhint": await run.uuid_of("VM", vm)}, "tags": []})
        try:                        # an owner VBD: vm-uninstall removes its disk with the VM
            await _vbd_and_plug(run, vm, vdi, device, "RW", "Disk", {"owner": "true"})
        except Exception:
            await run.call("VDI.destroy", vdi)
            raise
    await each_vm(run, ("sr-uuid", "device", "disk-size"), op)


@command("vm-disk-remove", reqd=("device",), optn=SEL,
         help="Removes the disk at device from the selected VMs and destroys it.")
async def vm_disk_remove(run) -> None:
    device = run.args["device"]

    async def op(vm):
        for vbd in await run.call("VM.get_VBDs", vm):
            if await run.call("VBD.get_userdevice", vbd) == device:
                vdi = await run.call("VBD.get_VDI", vbd)
                await run.call("VBD.destroy", vbd)
                await run.call("VDI.destroy", vdi)
                return
        raise CliFailure("Disk not found")
    await each_vm(run, ("device",), op)


@command("vm-cd-add", reqd=("cd-name", "device"), optn=SEL,
         help="Adds a CD drive holding the ISO named cd-name to the selected VMs at device.")
async def vm_cd_add(run) -> None:
    name = run.args["cd-name"]
    isos = await _iso_vdis(run, name)
    if not isos:
        raise CliFailure(f"CD {name} not found!")

    async def op(vm):
        await _vbd_and_plug(run, vm, isos[0], run.args["device"], "RO", "CD", {})
    await each_vm(run, ("cd-name", "device", "cd-location"), op)


@command("vm-cd-remove", reqd=("cd-name",), optn=SEL,
         help="Removes the CD drive holding the ISO named cd-name (<EMPTY> for an empty drive) from the "
              "selected VMs.")
async def vm_cd_remove(run) -> None:
    name = run.args["cd-name"]

    async def op(vm):
        for vbd in await run.call("VM.get_VBDs", vm):
            vdi = await run.call("VBD.get_VDI", vbd)
            if vdi == NULL or vdi not in await run.call("VDI.get_all"):
                match = name == "<EMPTY>"
            else:
                sr = await run.call("VDI.get_SR", vdi)
                match = (await run.call("SR.get_content_type", sr) == "iso"
                         and await run.call("VDI.get_name_label", vdi) == name)
            if match:
                await run.call("VBD.destroy", vbd)
                return
        raise CliFailure("Disk not found")
    await each_vm(run, ("cd-name",), op)
