"""The xe VM commands (xapi's cli_operations.ml vm_*): lifecycle, install, clone/copy/snapshot, disks
and CDs. Each picks its VMs with the vm selectors (vm=, uuid=, field filters; --multiple for more than
one) and calls the XenAPI with the CLI's session; failures come back as the XenAPI errors xe prints."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from xapi import datamodel as dm
from xapi.cli.commands import CliError, CliFailure, ExitWithError, ParamNotFound
from xapi.cli.cmdtable import VM_SELECTORS, command

VM = dm.CLASSES["VM"]
NULL = "OpaqueRef:NULL"
SEL = (VM_SELECTORS, "multiple")
PLUGIN_FILE_LIMIT = 16 << 20    # an args:key:file= value travels inside one API call
ANY_VM = {"include_templates": True, "include_control": True}     # the memory commands take these too


async def each_vm(run, own, op, **kw) -> None:
    await run.each(VM, "vm", own, op, **kw)


async def host_arg(run, value: str) -> str:
    try:
        return await run.lookup("host", value)
    except CliError:
        raise CliError(f"Host '{value}' not found") from None


@command("vm-start", optn=("force", "on", "paused", *SEL),
         help="Starts the selected VMs; on= names the host (name or uuid), paused=true leaves them paused.")
async def vm_start(run) -> None:
    paused, force = run.flag("paused"), run.flag("force")
    on = run.args.get("on")
    host = await host_arg(run, on) if on else None

    async def op(ref):
        if host is None:
            await run.call("VM.start", ref, paused, force)
        else:
            await run.call("VM.start_on", ref, host, paused, force)
    await each_vm(run, ("on", "paused"), op)


@command("vm-shutdown", optn=("force", *SEL),
         help="Shuts the selected VMs down: cleanly (the guest's co-operation), or at once with --force.")
async def vm_shutdown(run) -> None:
    method = "VM.hard_shutdown" if run.flag("force") else "VM.clean_shutdown"
    await each_vm(run, (), lambda ref: run.call(method, ref))


@command("vm-reboot", optn=("force", *SEL),
         help="Reboots the selected VMs: cleanly, or at once with --force.")
async def vm_reboot(run) -> None:
    method = "VM.hard_reboot" if run.flag("force") else "VM.clean_reboot"
    await each_vm(run, (), lambda ref: run.call(method, ref))


@command("vm-suspend", optn=SEL, help="Suspends the selected VMs (their memory goes to a suspend VDI).")
async def vm_suspend(run) -> None:
    await each_vm(run, (), lambda ref: run.call("VM.suspend", ref))


@command("vm-resume", optn=("force", "on", *SEL),
         help="Resumes the selected suspended VMs, on= naming the host.")
async def vm_resume(run) -> None:
    force = run.flag("force")
    on = run.args.get("on")
    host = await host_arg(run, on) if on else None

    async def op(ref):
        if host is None:
            await run.call("VM.resume", ref, False, force)
        else:
            await run.call("VM.resume_on", ref, host, False, force)
    await each_vm(run, ("on",), op)


@command("vm-pause", optn=SEL, help="Pauses the selected running VMs.")
async def vm_pause(run) -> None:
    await each_vm(run, (), lambda ref: run.call("VM.pause", ref))


@command("vm-unpause", optn=SEL, help="Unpauses the selected paused VMs.")
async def vm_unpause(run) -> None:
    await each_vm(run, (), lambda ref: run.call("VM.unpause", ref))


@command("vm-reset-powerstate", optn=("force", *SEL),
         help="Marks the selected VMs halted when their host is known to be down (needs --force).")
async def vm_reset_powerstate(run) -> None:
    if not run.flag("force"):
        raise CliError("This operation is dangerous and may cause data loss. This operation must be forced "
                       "(use --force).")
    await each_vm(run, (), lambda ref: run.call("VM.power_state_reset", ref))


@command("vm-migrate", optn=("host", "host-uuid", "live", *SEL),
         help="Moves the selected VMs to another host of the pool (host= name or uuid, or host-uuid=).")
async def vm_migrate(run) -> None:
    target = run.args.get("host-uuid") or run.args.get("host")
    if not target:
        raise ParamNotFound("host or host-uuid")
    host = await host_arg(run, target)
    options = {"live": "true" if run.flag("live") else "false"}
    await each_vm(run, ("host", "host-uuid", "live"), lambda ref: run.call("VM.pool_migrate", ref, host, options))


async def _new_vm(run, ref) -> None:
    desc = run.args.get("new-name-description")
    if desc is not None:
        await run.call("VM.set_name_description", ref, desc)
    await run.out("print", await run.uuid_of("VM", ref))


@command("vm-clone", reqd=("new-name-label",), optn=("new-name-description", *SEL),
         help="Clones the selected halted VM (fast, copy-on-write disks where the SR can); prints the new uuid.")
async def vm_clone(run) -> None:
    name = run.args["new-name-label"]

    async def op(ref):
        await _new_vm(run, await run.call("VM.clone", ref, name))
    await each_vm(run, ("new-name-label", "new-name-description"), op, include_templates=True)


@command("vm-copy", reqd=("new-name-label",), optn=("new-name-description", "sr-uuid", *SEL),
         help="Copies the selected halted VM with full copies of its disks (to sr-uuid if given); prints the "
              "new uuid.")
async def vm_copy(run) -> None:
    name = run.args["new-name-label"]
    sr = await run.call("SR.get_by_uuid", run.args["sr-uuid"]) if "sr-uuid" in run.args else NULL

    async def op(ref):
        await _new_vm(run, await run.call("VM.copy", ref, name, sr))
    await each_vm(run, ("new-name-label", "new-name-description", "sr-uuid"), op, include_templates=True)


@command("vm-snapshot", reqd=("new-name-label",), optn=("new-name-description", "ignore-vdi-uuids", *SEL),
         help="Snapshots the selected VM's disks; prints the snapshot's uuid.")
async def vm_snapshot(run) -> None:
    name = run.args["new-name-label"]
    ignore = [await run.call("VDI.get_by_uuid", u.strip())
              for u in run.args.get("ignore-vdi-uuids", "").split(",") if u.strip()]

    async def op(ref):
        await _new_vm(run, await run.call("VM.snapshot", ref, name, ignore))
    await each_vm(run, ("new-name-label", "new-name-description", "ignore-vdi-uuids"), op)


@command("vm-checkpoint", reqd=("new-name-label",), optn=("new-name-description", *SEL),
         help="Snapshots the selected VM with its memory; prints the checkpoint's uuid.")
async def vm_checkpoint(run) -> None:
    name = run.args["new-name-label"]

    async def op(ref):
        await _new_vm(run, await run.call("VM.checkpoint", ref, name))
    await each_vm(run, ("new-name-label", "new-name-description"), op)


@command("snapshot-revert", optn=("uuid", "snapshot-uuid"),
         help="Reverts the snapshot's VM to the snapshot (snapshot-uuid= or uuid=).")
async def snapshot_revert(run) -> None:
    uuid = run.args.get("snapshot-uuid") or run.args.get("uuid")
    if not uuid:
        raise ParamNotFound("snapshot-uuid")
    await run.call("VM.revert", await run.call("VM.get_by_uuid", uuid))


@command("vm-destroy", reqd=("uuid",), help="Removes the VM's record; its disks stay (see vm-uninstall).")
async def vm_destroy(run) -> None:
    from xapi.datamodel.errors import XapiError
    vm = await run.call("VM.get_by_uuid", run.args["uuid"])
    if await run.call("VM.get_is_control_domain", vm):
        raise XapiError("OPERATION_NOT_ALLOWED", "You cannot destroy a control domain via the CLI")
    await run.call("VM.destroy", vm)


async def _owned_vdis(run, vm: str) -> list[str]:
    """The disks vm-uninstall removes with the VM: those of its Disk VBDs, and its suspend image."""
    out = []
    for vbd in await run.call("VM.get_VBDs", vm):
        rec = await run.call("VBD.get_record", vbd)
        if rec["type"] == "Disk" and rec["VDI"] != NULL and rec["VDI"] not in out:
            out.append(rec["VDI"])
    suspend = await run.call("VM.get_suspend_VDI", vm)
    if suspend != NULL and suspend not in out:
        out.append(suspend)
    return out


async def _label(run, cls: str, ref: str) -> str:
    return f"{await run.uuid_of(cls, ref)} ({await run.call(f'{cls}.get_name_label', ref)})"


@command("vm-uninstall", optn=("force", *SEL),
         help="Destroys the selected VMs and their disks (asks first unless --force).")
async def vm_uninstall(run) -> None:
    vms = await run.select(VM, "vm", ())
    vms += [s for vm in vms for s in await run.call("VM.get_snapshots", vm)]   # cli_operations: and snapshots
    await uninstall(run, vms)


async def uninstall(run, vms: list[str]) -> None:
    """cli_operations' vm_uninstall_common: list the VMs and their disks, ask unless --force, then halt
    what runs and destroy them."""
    plan = [(vm, await _owned_vdis(run, vm)) for vm in vms]
    lines = ["The following items are about to be destroyed"]
    for vm, vdis in plan:
        lines.append(f"VM : {await _label(run, 'VM', vm)}")
        lines.extend([f"VDI: {await _label(run, 'VDI', v)}" for v in vdis])
    if run.flag("force"):           # the list is printed either way; --force only skips the question
        await run.out("print", "\n".join(lines))
    elif not await run.prompt_yes("\n".join(lines)):
        return
    for vm, vdis in plan:
        if await run.call("VM.get_power_state", vm) != "Halted":
            await run.call("VM.hard_shutdown", vm)
        vbds = await run.call("VM.get_VBDs", vm)
        await run.call("VM.destroy", vm)
        for vbd in vbds:        # xapi's VM.destroy takes the VM's VBDs with it; ours may leave them
            if vbd in await run.call("VBD.get_all"):
                await run.call("VBD.destroy", vbd)
        for vdi in vdis:
            await run.call("VDI.destroy", vdi)
    await run.out("print", "All objects destroyed")


@command("vm-install", reqd=("new-name-label",),
         optn=("template", "template-uuid", "template-name-label", "sr-uuid", "sr-name-label",
               "new-name-description"),
         help="Installs a VM from a template (template= name or uuid): clones it, creates its disks on the SR "
              "(sr-uuid=, sr-name-label= or the pool's default SR) and prints the new VM's uuid.")
async def vm_install(run) -> None:
    name = run.args["new-name-label"]
    key = run.args.get("template-uuid") or run.args.get("template") or run.args.get("template-name-label")
    if not key:
        raise ParamNotFound("template")
    recs = await run.call("VM.get_all_records")
    templates = [r for r, rec in recs.items() if rec["is_a_template"]
                 and (rec["uuid"] == key or rec["name_label"] == key)]
    if not templates:
        raise CliError(f"Template '{key}' not found")
    if len(templates) > 1:
        raise CliError(f"More than one template matches '{key}': use template-uuid=")
    template = templates[0]
    sr = NULL
    if "sr-uuid" in run.args:
        sr = await run.call("SR.get_by_uuid", run.args["sr-uuid"])
    elif "sr-name-label" in run.args:
        sr = await run.lookup("SR", run.args["sr-name-label"])
    else:
        pool = (await run.call("pool.get_all"))[0]
        sr = await run.call("pool.get_default_SR", pool)
        srs = await run.call("SR.get_all")
        if sr not in srs:
            sr = NULL
    disks = recs[template]["other_config"].get("disks")
    if disks and sr == NULL:
        raise CliFailure("No SR specified and Pool default SR is null")
    new = await run.call("VM.clone", template, name)
    if disks:
        await run.call("VM.remove_from_other_config", new, "disks")
        await run.call("VM.add_to_other_config", new, "disks",
                       rewrite_disks(disks, await run.call("SR.get_uuid", sr)))
    await run.call("VM.provision", new)
    await run.call("VM.set_is_a_template", new, False)
    await _new_vm(run, new)


def rewrite_disks(text: str, sr_uuid: str) -> str:
    """The template's provisioning XML (`<provision><disk ... sr=".."/></provision>`) with every disk
    on sr_uuid, as vm-install does before VM.provision."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return text
    if root.tag != "provision":
        return text
    for disk in root.iter("disk"):
        disk.set("sr", sr_uuid)
    return ET.tostring(root, encoding="unicode")


@command("vm-disk-list", optn=("vbd-params", "vdi-params", *SEL),
         help="Lists the disks of the selected VMs: each VBD, then its VDI (vbd-params=/vdi-params= pick "
              "the fields).")
async def vm_disk_list(run) -> None:
    # the VBD's and the VDI's xe records, with xe's default fields
    vbd_spec, vdi_spec = run.args.get("vbd-params"), run.args.get("vdi-params")
    run.flags.add("multiple")
    for vm in await run.select(VM, "vm", ("vbd-params", "vdi-params")):
        n = 0
        for vbd in await run.call("VM.get_VBDs", vm):
            rec = await run.call("VBD.get_record", vbd)
            if rec["type"] != "Disk":
                continue
            await _block(run, f"Disk {n} VBD:", await run.record_rows(
                "vbd", vbd, rec, vbd_spec, "uuid,vm-name-label,userdevice"))
            if rec["VDI"] != NULL:
                vdi = await run.call("VDI.get_record", rec["VDI"])
                await _block(run, f"Disk {n} VDI:", await run.record_rows(
                    "vdi", rec["VDI"], vdi, vdi_spec, "uuid,name-label,sr-name-label,virtual-size"))
            n += 1


async def _block(run, title: str, rows) -> None:
    if run.flag("minimal"):
        await run.out("print", rows[0][1] if rows else "")
        return
    await run.out("print", title)
    await run.print_records([rows])


async def _cd_vbds(run, vm: str) -> list[tuple[str, dict]]:
    out = []
    for vbd in await run.call("VM.get_VBDs", vm):
        rec = await run.call("VBD.get_record", vbd)
        if rec["type"] == "CD":
            out.append((vbd, rec))
    return out


@command("vm-cd-insert", reqd=("cd-name",), optn=SEL,
         help="Inserts the ISO named cd-name into the empty CD drive of the selected VM.")
async def vm_cd_insert(run) -> None:
    from xapi.datamodel.errors import XapiError
    name = run.args["cd-name"]
    vdis = await run.call("VDI.get_by_name_label", name)
    if not vdis:
        raise CliError(f"CD '{name}' not found")
    if len(vdis) > 1:
        raise CliError(f"Multiple CDs named '{name}' found")

    async def op(vm):
        empty = [vbd for vbd, rec in await _cd_vbds(run, vm) if rec["empty"]]
        if not empty:
            raise XapiError("VM_NO_EMPTY_CD_VBD", vm)
        await run.call("VBD.insert", empty[0], vdis[0])
    await each_vm(run, ("cd-name",), op)


@command("vm-cd-eject", optn=SEL, help="Ejects the CD from the CD drives of the selected VM.")
async def vm_cd_eject(run) -> None:

    async def op(vm):
        full = [vbd for vbd, rec in await _cd_vbds(run, vm) if not rec["empty"]]
        if not full:
            raise CliError("No CDs found")
        for vbd in full:
            await run.call("VBD.eject", vbd)
    await each_vm(run, (), op)


@command("vm-cd-list", optn=("vbd-params", "vdi-params", *SEL), help="Lists the CD drives of the selected VMs.")
async def vm_cd_list(run) -> None:
    vbd_spec, vdi_spec = run.args.get("vbd-params"), run.args.get("vdi-params")
    run.flags.add("multiple")
    for vm in await run.select(VM, "vm", ("vbd-params", "vdi-params")):
        for n, (vbd, rec) in enumerate(await _cd_vbds(run, vm)):
            await _block(run, f"CD {n} VBD:", await run.record_rows(
                "vbd", vbd, rec, vbd_spec, "uuid,vm-name-label,vdi-name-label,userdevice,empty"))
            if rec["VDI"] != NULL:
                vdi = await run.call("VDI.get_record", rec["VDI"])
                await _block(run, f"CD {n} VDI:", await run.record_rows(
                    "vdi", rec["VDI"], vdi, vdi_spec, "uuid,name-label,sr-name-label,virtual-size"))


def _size_arg(run, name: str) -> str:
    from xapi.cli.commands import parse_size
    return str(parse_size(run.need(name)))


@command("vm-memory-limits-set", reqd=("static-min", "static-max", "dynamic-min", "dynamic-max"), optn=SEL,
         help="Sets the four memory limits of the selected halted VMs (bytes; KiB/MiB/GiB suffixes allowed).")
async def vm_memory_limits_set(run) -> None:
    limits = [_size_arg(run, n) for n in ("static-min", "static-max", "dynamic-min", "dynamic-max")]
    await each_vm(run, ("static-min", "static-max", "dynamic-min", "dynamic-max"),
                  lambda ref: run.call("VM.set_memory_limits", ref, *limits), **ANY_VM)


@command("vm-memory-static-range-set", reqd=("min", "max"), optn=SEL,
         help="Sets the static memory range of the selected halted VMs.")
async def vm_memory_static_range_set(run) -> None:
    lo, hi = _size_arg(run, "min"), _size_arg(run, "max")
    await each_vm(run, ("min", "max"), lambda ref: run.call("VM.set_memory_static_range", ref, lo, hi),
                  **ANY_VM)


@command("vm-memory-dynamic-range-set", reqd=("min", "max"), optn=SEL,
         help="Sets the dynamic memory range of the selected VMs.")
async def vm_memory_dynamic_range_set(run) -> None:
    lo, hi = _size_arg(run, "min"), _size_arg(run, "max")
    await each_vm(run, ("min", "max"), lambda ref: run.call("VM.set_memory_dynamic_range", ref, lo, hi),
                  **ANY_VM)


@command("vm-memory-set", reqd=("memory",), optn=SEL,
         help="Gives the selected VMs this much memory: every limit but static-min set to it.")
async def vm_memory_set(run) -> None:
    value = _size_arg(run, "memory")
    await each_vm(run, ("memory",), lambda ref: run.call("VM.set_memory", ref, value), **ANY_VM)


@command("vm-vif-list", optn=("params", *SEL), help="Lists the network devices of the selected VMs.")
async def vm_vif_list(run) -> None:
    run.flags.add("multiple")
    rows = []
    for vm in await run.select(VM, "vm", ("params",)):
        for vif in await run.call("VM.get_VIFs", vm):
            rows.append(await run.record_rows("vif", vif, await run.call("VIF.get_record", vif),
                                              run.args.get("params"),
                                              "uuid,device,MAC,network-uuid,network-name-label,vm-name-label"))
    await run.print_records(rows)


@command("cd-list", optn=("params",), help="Lists the CDs: the disks of the ISO libraries (content-type iso).")
async def cd_list(run) -> None:
    rows = []
    for sr, rec in (await run.call("SR.get_all_records")).items():
        if rec["content_type"] == "iso":
            for vdi in rec["VDIs"]:
                rows.append(await run.record_rows("vdi", vdi, await run.call("VDI.get_record", vdi),
                                                  run.args.get("params"), "name-label,uuid"))
    await run.print_records(rows)


@command("vm-create", reqd=("name-label",), optn=("name-description",),
         help="Creates an empty halted VM (256 MiB, 128 MiB dynamic minimum, one vCPU, no disks); prints its "
              "uuid.")
async def vm_create(run) -> None:
    mib = 1 << 20
    hi, lo = str(256 * mib), str(128 * mib)
    ref = await run.call("VM.create", {
        "name_label": run.args["name-label"], "name_description": run.args.get("name-description", ""),
        "user_version": "0", "is_a_template": False, "affinity": NULL, "memory_static_max": hi,
        "memory_dynamic_max": hi, "memory_dynamic_min": lo, "memory_static_min": lo, "VCPUs_params": {},
        "VCPUs_max": "1", "VCPUs_at_startup": "1", "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart", "actions_after_crash": "destroy", "PV_bootloader": "", "PV_kernel": "",
        "PV_ramdisk": "", "PV_args": "", "PV_bootloader_args": "", "PV_legacy_args": "", "HVM_boot_policy": "",
        "HVM_boot_params": {}, "platform": {}, "PCI_bus": "", "other_config": {}, "recommendations": ""})
    await run.out("print", await run.uuid_of("VM", ref))


# -- live settings and per-VM computations (cli_operations.ml vm_vcpu_hotplug, vm_memory_target_set...) --
@command("vm-vcpu-hotplug", reqd=("new-vcpus",), optn=SEL,
         help="Changes the number of VCPUs of the selected running VMs (up to VCPUs-max).")
async def vm_vcpu_hotplug(run) -> None:
    try:
        n = str(int(run.args["new-vcpus"]))
    except ValueError:
        raise CliError("Failed to parse parameter 'new-vcpus': expecting an integer") from None
    await each_vm(run, ("new-vcpus",), lambda ref: run.call("VM.set_VCPUs_number_live", ref, n))


@command("vm-memory-shadow-multiplier-set", reqd=("multiplier",), optn=SEL,
         help="Sets the shadow memory multiplier of the selected VMs, which may be running.")
async def vm_memory_shadow_multiplier_set(run) -> None:
    try:
        multiplier = float(run.args["multiplier"])
    except ValueError:
        raise CliError("Failed to parse parameter 'multiplier': expecting a float") from None
    await each_vm(run, ("multiplier",), lambda ref: run.call("VM.set_shadow_multiplier_live", ref, multiplier))


@command("vm-memory-target-set", reqd=("target",), optn=SEL,
         help="Sets the memory target of the selected VMs: both ends of the dynamic range set to it.")
async def vm_memory_target_set(run) -> None:
    target = _size_arg(run, "target")
    await each_vm(run, ("target",), lambda ref: run.call("VM.set_memory_dynamic_range", ref, target, target),
                  include_control=True)


@command("vm-memory-target-wait", optn=SEL, help="Waits until the selected running VMs reach their memory target.")
async def vm_memory_target_wait(run) -> None:
    await each_vm(run, (), lambda ref: run.call("VM.wait_memory_target_live", ref), include_control=True)


@command("vm-compute-memory-overhead", optn=SEL, help="Prints the virtualization memory overhead of the VMs.")
async def vm_compute_memory_overhead(run) -> None:
    async def op(ref):
        await run.out("print", str(await run.call("VM.compute_memory_overhead", ref)))
    await each_vm(run, (), op, include_control=True)


@command("vm-copy-bios-strings", reqd=("host-uuid",), optn=SEL,
         help="Copies the BIOS strings of the given host to the selected halted VMs.")
async def vm_copy_bios_strings(run) -> None:
    host = await run.call("host.get_by_uuid", run.args["host-uuid"])
    await each_vm(run, ("host-uuid",), lambda ref: run.call("VM.copy_bios_strings", ref, host))


@command("vm-is-bios-customized", optn=SEL,
         help="Tells whether the BIOS strings of the selected VMs are set, and if so generic or a host's.")
async def vm_is_bios_customized(run) -> None:
    from xapi.actions.vm_settings import GENERIC_BIOS_STRINGS    # what set_bios_strings fills in

    async def tell(ref) -> None:
        strings = await run.call("VM.get_bios_strings", ref)
        if not strings:
            text = "The BIOS strings of this VM have not yet been set."
        elif strings == GENERIC_BIOS_STRINGS:
            text = "This VM is BIOS-generic."
        else:
            text = "This VM is BIOS-customized."
        await run.out("print", text)
    await each_vm(run, (), tell)


@command("vm-call-plugin", reqd=("vm-uuid", "plugin", "fn"), optn=("args:",),
         help="Calls the function fn of the plugin in the VM's guest agent with args:key=value arguments; "
              "prints its result.")
async def vm_call_plugin(run) -> None:
    vm = await run.call("VM.get_by_uuid", run.args["vm-uuid"])
    args = {}
    for key, value in run.map_arg("args").items():
        name, sep, kind = key.rpartition(":")
        if sep and kind == "file":          # args:key:file=path: the key's value is that client file
            data = None if run.channel is None else await run.channel.load(value, PLUGIN_FILE_LIMIT)
            if data is None:
                await run.out("stderr", f"Failed to read file {value}\n")
                raise ExitWithError(1)
            args[name] = data.decode("utf-8", "replace")
        else:
            args[key] = value
    await run.out("print", await run.call("VM.call_plugin", vm, run.args["plugin"], run.args["fn"], args))


@command("vm-compute-maximum-memory", reqd=("total",), optn=("approximate", *SEL),
         help="Prints the largest memory the selected VMs could have within total bytes (approximate=true "
              "allows some slack).")
async def vm_compute_maximum_memory(run) -> None:
    total = _size_arg(run, "total")
    approximate = run.flag("approximate")

    async def op(ref):
        await run.out("print", str(await run.call("VM.maximise_memory", ref, total, approximate)))
    await each_vm(run, ("total", "approximate"), op)
