"""The xe storage commands (xapi's cli_operations.ml sr_*/pbd_*/vdi_*/vbd_*): SRs, their host
connections, disks and the VMs' disk devices. New objects print their uuid, as xe does."""
from __future__ import annotations

from xapi.cli.commands import CliError, parse_size
from xapi.cli.cmdtable import command

NULL = "OpaqueRef:NULL"


def _bool(run, name: str, default: bool = False) -> bool:
    v = run.args.get(name)
    if v is None:
        return run.flag(name) or default
    low = v.lower()
    if low not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
        raise CliError(f"Failed to parse parameter '{name}': expecting a boolean (true or false), got '{v}'")
    return low in ("true", "yes", "1", "on")


async def _host(run) -> str:
    if "host-uuid" in run.args:
        return await run.call("host.get_by_uuid", run.args["host-uuid"])
    return run.app.host_ref          # the host this CLI request reached, as xapi's get_host_from_session


async def _print_uuid(run, cls: str, ref: str) -> None:
    await run.out("print", await run.uuid_of(cls, ref))


# -- SR ----------------------------------------------------------------------------------------------
@command("sr-create", reqd=("name-label", "type"),
         optn=("host-uuid", "device-config:", "shared", "physical-size", "content-type", "sm-config:",
               "name-description"),
         help="Creates an SR of the given type (ext, nfs, iso...) on the host, with device-config:key=value "
              "settings; prints its uuid.")
async def sr_create(run) -> None:
    ref = await run.call("SR.create", await _host(run), run.map_arg("device-config"),
                         str(parse_size(run.args.get("physical-size", "0"))), run.args["name-label"],
                         run.args.get("name-description", ""), run.args["type"],
                         run.args.get("content-type", ""), _bool(run, "shared"), run.map_arg("sm-config"))
    await _print_uuid(run, "SR", ref)


@command("sr-probe", reqd=("type",), optn=("host-uuid", "device-config:", "sm-config:"),
         help="Asks the SR type's driver what the device-config:key=value settings point at; prints its "
              "answer.")
async def sr_probe(run) -> None:
    result = await run.call("SR.probe", await _host(run), run.map_arg("device-config"), run.args["type"],
                            run.map_arg("sm-config"))
    await run.out("print", result)


@command("sr-scan", reqd=("uuid",), help="Rescans the SR: new disks appear, missing ones are forgotten.")
async def sr_scan(run) -> None:
    await run.call("SR.scan", await run.call("SR.get_by_uuid", run.args["uuid"]))


@command("sr-update", reqd=("uuid",), help="Refreshes the SR's sizes from its driver.")
async def sr_update(run) -> None:
    await run.call("SR.update", await run.call("SR.get_by_uuid", run.args["uuid"]))


@command("sr-forget", reqd=("uuid",), help="Removes the SR's records; the data stays on the storage.")
async def sr_forget(run) -> None:
    await run.call("SR.forget", await run.call("SR.get_by_uuid", run.args["uuid"]))


@command("sr-destroy", reqd=("uuid",), help="Destroys the SR and everything on it (its PBDs must be unplugged).")
async def sr_destroy(run) -> None:
    await run.call("SR.destroy", await run.call("SR.get_by_uuid", run.args["uuid"]))


# -- PBD ---------------------------------------------------------------------------------------------
@command("pbd-create", reqd=("host-uuid", "sr-uuid"), optn=("device-config:",),
         help="Creates a connection between a host and an SR; prints its uuid.")
async def pbd_create(run) -> None:
    ref = await run.call("PBD.create", {"host": await run.call("host.get_by_uuid", run.args["host-uuid"]),
                                        "SR": await run.call("SR.get_by_uuid", run.args["sr-uuid"]),
                                        "device_config": run.map_arg("device-config"), "other_config": {}})
    await _print_uuid(run, "PBD", ref)


@command("pbd-destroy", reqd=("uuid",), help="Removes an unplugged PBD.")
async def pbd_destroy(run) -> None:
    await run.call("PBD.destroy", await run.call("PBD.get_by_uuid", run.args["uuid"]))


@command("pbd-plug", reqd=("uuid",), help="Attaches the SR on the PBD's host.")
async def pbd_plug(run) -> None:
    await run.call("PBD.plug", await run.call("PBD.get_by_uuid", run.args["uuid"]))


@command("pbd-unplug", reqd=("uuid",), help="Detaches the SR from the PBD's host.")
async def pbd_unplug(run) -> None:
    await run.call("PBD.unplug", await run.call("PBD.get_by_uuid", run.args["uuid"]))


# -- VDI ---------------------------------------------------------------------------------------------
@command("vdi-create", reqd=("sr-uuid", "name-label", "virtual-size"),
         optn=("name-description", "type", "sharable", "read-only", "sm-config:", "other-config:", "tags:"),
         help="Creates a disk of virtual-size bytes (KiB/MiB/GiB/TiB suffixes allowed) on the SR; prints its "
              "uuid.")
async def vdi_create(run) -> None:
    sr = await run.call("SR.get_by_uuid", run.args["sr-uuid"])
    record = {"name_label": run.args["name-label"], "name_description": run.args.get("name-description", ""),
              "SR": sr, "virtual_size": str(parse_size(run.args["virtual-size"])),
              "type": run.args.get("type", "user"), "sharable": _bool(run, "sharable"),
              "read_only": _bool(run, "read-only"), "other_config": run.map_arg("other-config"),
              "xenstore_data": {}, "sm_config": run.map_arg("sm-config"),
              "tags": list(run.map_arg("tags").values())}
    await _print_uuid(run, "VDI", await run.call("VDI.create", record))


@command("vdi-destroy", reqd=("uuid",), help="Destroys the disk and its data.")
async def vdi_destroy(run) -> None:
    await run.call("VDI.destroy", await run.call("VDI.get_by_uuid", run.args["uuid"]))


@command("vdi-forget", reqd=("uuid",), help="Removes the disk's record; the data stays in the SR.")
async def vdi_forget(run) -> None:
    await run.call("VDI.forget", await run.call("VDI.get_by_uuid", run.args["uuid"]))


@command("vdi-resize", reqd=("uuid", "disk-size"), optn=("online",),
         help="Grows the disk to disk-size bytes (suffixes allowed); --online for a disk in use by a running VM.")
async def vdi_resize(run) -> None:
    vdi = await run.call("VDI.get_by_uuid", run.args["uuid"])
    method = "VDI.resize_online" if run.flag("online") else "VDI.resize"
    await run.call(method, vdi, str(parse_size(run.args["disk-size"])))


@command("vdi-snapshot", reqd=("uuid",), optn=("driver-params:",),
         help="Snapshots the disk (a read-only copy-on-write child); prints the snapshot's uuid.")
async def vdi_snapshot(run) -> None:
    vdi = await run.call("VDI.get_by_uuid", run.args["uuid"])
    await _print_uuid(run, "VDI", await run.call("VDI.snapshot", vdi, run.map_arg("driver-params")))


@command("vdi-clone", reqd=("uuid",), optn=("new-name-label", "new-name-description", "driver-params:"),
         help="Clones the disk (a writable copy-on-write child); prints the clone's uuid.")
async def vdi_clone(run) -> None:
    vdi = await run.call("VDI.get_by_uuid", run.args["uuid"])
    new = await run.call("VDI.clone", vdi, run.map_arg("driver-params"))
    if "new-name-label" in run.args:
        await run.call("VDI.set_name_label", new, run.args["new-name-label"])
    if "new-name-description" in run.args:
        await run.call("VDI.set_name_description", new, run.args["new-name-description"])
    await _print_uuid(run, "VDI", new)


@command("vdi-copy", reqd=("uuid", "sr-uuid"), help="Copies the disk into the SR; prints the copy's uuid.")
async def vdi_copy(run) -> None:
    vdi = await run.call("VDI.get_by_uuid", run.args["uuid"])
    sr = await run.call("SR.get_by_uuid", run.args["sr-uuid"])
    await _print_uuid(run, "VDI", await run.call("VDI.copy", vdi, sr, NULL, NULL))


# -- VBD ---------------------------------------------------------------------------------------------
@command("vbd-create", reqd=("vm-uuid", "device"),
         optn=("vdi-uuid", "bootable", "type", "mode", "unpluggable"),
         help="Connects a disk (vdi-uuid) or an empty CD drive (type=CD) to the VM at device (0, 1, ...); "
              "prints the VBD's uuid.")
async def vbd_create(run) -> None:
    vm = await run.call("VM.get_by_uuid", run.args["vm-uuid"])
    vdi = await run.call("VDI.get_by_uuid", run.args["vdi-uuid"]) if "vdi-uuid" in run.args else NULL
    kind = {"disk": "Disk", "cd": "CD", "floppy": "Floppy"}.get(run.args.get("type", "Disk").lower())
    mode = {"rw": "RW", "ro": "RO"}.get(run.args.get("mode", "RW").lower())
    if kind is None:
        raise CliError(f"Failed to parse parameter 'type': expecting Disk or CD, got '{run.args['type']}'")
    if mode is None:
        raise CliError(f"Failed to parse parameter 'mode': expecting RW or RO, got '{run.args['mode']}'")
    record = {"VM": vm, "VDI": vdi, "userdevice": run.args["device"], "bootable": _bool(run, "bootable"),
              "mode": mode, "type": kind, "unpluggable": _bool(run, "unpluggable", True),
              "empty": vdi == NULL, "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {},
              "device": "", "currently_attached": False}
    await _print_uuid(run, "VBD", await run.call("VBD.create", record))


@command("vbd-destroy", reqd=("uuid",), help="Removes an unplugged VBD.")
async def vbd_destroy(run) -> None:
    await run.call("VBD.destroy", await run.call("VBD.get_by_uuid", run.args["uuid"]))


@command("vbd-plug", reqd=("uuid",), help="Hot-plugs the VBD into its running VM.")
async def vbd_plug(run) -> None:
    await run.call("VBD.plug", await run.call("VBD.get_by_uuid", run.args["uuid"]))


@command("vbd-unplug", reqd=("uuid",), help="Hot-unplugs the VBD from its running VM.")
async def vbd_unplug(run) -> None:
    await run.call("VBD.unplug", await run.call("VBD.get_by_uuid", run.args["uuid"]))


@command("vbd-insert", reqd=("uuid", "vdi-uuid"), help="Inserts the VDI into the empty CD drive.")
async def vbd_insert(run) -> None:
    await run.call("VBD.insert", await run.call("VBD.get_by_uuid", run.args["uuid"]),
                   await run.call("VDI.get_by_uuid", run.args["vdi-uuid"]))


@command("vbd-eject", reqd=("uuid",), help="Ejects the CD from the drive.")
async def vbd_eject(run) -> None:
    await run.call("VBD.eject", await run.call("VBD.get_by_uuid", run.args["uuid"]))


# -- changed block tracking and record refreshes (cli_operations.ml vdi_*_cbt, vdi_update...) --
async def _vdi(run) -> str:
    return await run.call("VDI.get_by_uuid", run.args["uuid"])


@command("vdi-enable-cbt", reqd=("uuid",), help="Enables changed block tracking on a VDI.")
async def vdi_enable_cbt(run) -> None:
    await run.call("VDI.enable_cbt", await _vdi(run))


@command("vdi-disable-cbt", reqd=("uuid",), help="Disables changed block tracking on a VDI.")
async def vdi_disable_cbt(run) -> None:
    await run.call("VDI.disable_cbt", await _vdi(run))


@command("vdi-data-destroy", reqd=("uuid",),
         help="Deletes the data of a VDI (a snapshot with CBT enabled), keeping its changed block tracking "
              "metadata.")
async def vdi_data_destroy(run) -> None:
    await run.call("VDI.data_destroy", await _vdi(run))


@command("vdi-list-changed-blocks", reqd=("vdi-from-uuid", "vdi-to-uuid"),
         help="Prints the blocks changed between the two VDIs as a base64-encoded bitmap.")
async def vdi_list_changed_blocks(run) -> None:
    vdi_from = await run.call("VDI.get_by_uuid", run.args["vdi-from-uuid"])
    vdi_to = await run.call("VDI.get_by_uuid", run.args["vdi-to-uuid"])
    await run.out("print", await run.call("VDI.list_changed_blocks", vdi_from, vdi_to))


@command("vdi-update", reqd=("uuid",), help="Refreshes the fields of the VDI's record from its storage.")
async def vdi_update(run) -> None:
    await run.call("VDI.update", await _vdi(run))


@command("vdi-pool-migrate", reqd=("uuid", "sr-uuid"),
         help="Moves a VDI attached to a running VM to another SR; prints the new VDI's uuid.")
async def vdi_pool_migrate(run) -> None:
    sr = await run.call("SR.get_by_uuid", run.args["sr-uuid"])
    new = await run.call("VDI.pool_migrate", await _vdi(run), sr, {})
    await run.out("print", await run.uuid_of("VDI", new))


@command("sr-introduce", reqd=("name-label", "type", "uuid"), optn=("shared", "content-type", "sm-config:"),
         help="Records an existing SR with this uuid (no PBD is made); prints its uuid.")
async def sr_introduce(run) -> None:
    uuid = run.args["uuid"]
    await run.call("SR.introduce", uuid, run.args["name-label"], "", run.args["type"],
                   run.args.get("content-type", ""), _bool(run, "shared"), run.map_arg("sm-config"))
    await run.out("print", uuid)


VDI_TYPES = ("system", "user", "suspend", "crashdump")


@command("vdi-introduce", reqd=("uuid", "sr-uuid", "type", "location"),
         optn=("name-description", "sharable", "read-only", "managed", "other-config:", "xenstore-data:",
               "sm-config:", "name-label"),
         help="Records an existing disk of the SR, at location, as a VDI with this uuid; prints its uuid.")
async def vdi_introduce(run) -> None:
    kind = run.args["type"]
    if kind not in VDI_TYPES:
        raise CliError(f"Unknown vdi type: {kind}")
    sr = await run.call("SR.get_by_uuid", run.args["sr-uuid"])
    vdi = await run.call("VDI.introduce", run.args["uuid"], run.args.get("name-label", ""),
                         run.args.get("name-description", ""), sr, kind, _bool(run, "sharable"),
                         _bool(run, "read-only"), run.map_arg("other-config"), run.args["location"],
                         run.map_arg("xenstore-data"), run.map_arg("sm-config"), _bool(run, "managed"),
                         "0", "0", NULL, False, "19700101T00:00:00Z", NULL)
    await run.out("print", await run.uuid_of("VDI", vdi))
