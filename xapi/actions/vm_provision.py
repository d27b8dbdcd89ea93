"""VM.provision: the disks a template's other_config:disks asks for (xapi_templates.ml, xapi_vm.ml).

    <provision><disk device="0" size="10737418240" sr="" bootable="true" type="system"/></provision>

The VM stops being a template first, as in xapi. Each disk becomes a VDI (name = the device, "Created by
template provisioner", sm_config vmhint=<vm uuid>) in the SR whose uuid `sr` gives (UUID_INVALID
[sr, uuid] when there is none) or, when `sr` is empty, in the pool's default SR (what xe vm-install
fills in), and an RW Disk VBD at that device with other_config:owner, unpluggable unless the disk is
a system disk. Then `disks` and `postinstall` leave other_config, so a second provision does nothing.
If anything fails, the VBDs and VDIs made so far are destroyed.
"""
from __future__ import annotations

import asyncio
import logging

from lxml import etree

from xapi.actions import vbd as vbd_actions
from xapi.actions import vdi as vdi_actions
from xapi.actions import vm as vm_mod
from xapi.datamodel.errors import XapiError
from xapi.db.schema import NULL_REF, insert

log = logging.getLogger("xapi.vm_provision")

_TYPES = ("system", "user", "ephemeral", "suspend", "crashdump")


def parse(text: str) -> list[dict]:
    """The disk requests of a `disks` value; INTERNAL_ERROR when it is not one."""
    try:
        root = etree.fromstring(text.encode())
        if root.tag != "provision" or root.attrib:
            raise ValueError("not a <provision> element")
        disks = []
        for d in root:
            if d.tag != "disk" or len(d):
                raise ValueError(f"unexpected <{d.tag}>")
            kind = d.get("type", "system")
            if kind not in _TYPES:
                raise XapiError("INTERNAL_ERROR", f'string2vdi_type: Unknown VDI type "{kind}"')
            disks.append({"device": d.attrib["device"], "size": int(d.attrib["size"]), "sr": d.attrib["sr"],
                          "bootable": d.attrib["bootable"] == "true", "type": kind})
        return disks
    except XapiError:
        raise
    except (etree.XMLSyntaxError, KeyError, ValueError) as e:
        raise XapiError("INTERNAL_ERROR", f"Xapi_templates.Parse_failure: {e}") from None


def _sr_for(db, disk: dict) -> str:
    srs = db.table("SR")
    if disk["sr"] == "":
        pool = db.table("pool").refs()[0]
        sr = db.table("pool").get_field(pool, "default_SR")
        if sr in srs:
            return sr
        raise XapiError("UUID_INVALID", "sr", "")
    refs = srs.find("uuid", disk["sr"])
    if not refs:
        raise XapiError("UUID_INVALID", "sr", disk["sr"])
    return refs[0]


async def provision(ctx, session, vm):
    db = ctx.app.db

    async def body(rec, progress):
        vms = db.table("VM")
        vms.set_field(vm, "is_a_template", False)
        other = rec["other_config"]
        if "disks" not in other and "postinstall" not in other:
            return
        disks = parse(other["disks"]) if "disks" in other else []
        progress(0.1)
        made: list[tuple[str, str]] = []
        try:
            for n, disk in enumerate(disks):
                sr = _sr_for(db, disk)
                vdi = await vdi_actions.create(ctx, session, {
                    "name_label": "", "name_description": "Created by template provisioner", "SR": sr,
                    "virtual_size": disk["size"], "type": disk["type"], "sharable": False, "read_only": False,
                    "other_config": {}, "xenstore_data": {}, "sm_config": {"vmhint": rec["uuid"]}, "tags": []})
                made.append((vdi, NULL_REF))
                metrics = insert(db, "VBD_metrics", io_read_kbs=0.0, io_write_kbs=0.0)
                vbd = insert(db, "VBD", VM=vm, VDI=vdi, userdevice=disk["device"], bootable=disk["bootable"],
                             mode="RW", type="Disk", unpluggable=disk["type"] != "system", empty=False,
                             other_config={"owner": ""}, currently_attached=False, metrics=metrics)
                made[-1] = (vdi, vbd)
                vbd_actions.refresh_allowed_operations(db, vbd)
                db.table("VDI").set_field(vdi, "name_label", disk["device"])
                progress(0.1 + 0.8 * (n + 1) / len(disks))
        except BaseException:
            await asyncio.shield(_undo(ctx, made))
            raise
        left = {k: v for k, v in vms.get_field(vm, "other_config").items() if k not in ("disks", "postinstall")}
        vms.set_field(vm, "other_config", left)
    await vm_mod._operation(ctx, vm, "provision", body)
    return ""


async def _undo(ctx, made) -> None:
    db = ctx.app.db
    for vdi, vbd in reversed(made):
        if vbd in db.table("VBD"):
            db.table("VBD").remove(vbd)
        if vdi in db.table("VDI"):
            try:
                await vdi_actions.destroy(ctx, None, vdi)
            except Exception as e:  # noqa: BLE001 - the original failure matters more
                log.warning("could not destroy the provisioned %s: %s", vdi, e)
