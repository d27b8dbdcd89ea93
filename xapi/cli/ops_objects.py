"""The xe commands that create and destroy standalone objects and manage who may log in (xapi's
cli_operations.ml secret_*, vm_appliance_*, message_create, subject_*, session_subject_*).
New objects print their uuid, as xe does."""
from __future__ import annotations

from xapi.cli.cmdtable import command
from xapi.cli.commands import CliFailure

NULL = "OpaqueRef:NULL"


@command("secret-create", reqd=("value",), help="Stores a secret; prints its uuid.")
async def secret_create(run) -> None:
    ref = await run.call("secret.create", {"value": run.args["value"], "other_config": run.map_arg("other-config")})
    await run.out("print", await run.uuid_of("secret", ref))


@command("secret-destroy", reqd=("uuid",), help="Destroys a secret.")
async def secret_destroy(run) -> None:
    await run.call("secret.destroy", await run.call("secret.get_by_uuid", run.args["uuid"]))


@command("appliance-create", reqd=("name-label",), optn=("name-description",),
         help="Creates a VM appliance (a group of VMs started and stopped together); prints its uuid.")
async def appliance_create(run) -> None:
    ref = await run.call("VM_appliance.create", {"name_label": run.args["name-label"],
                                                 "name_description": run.args.get("name-description", "")})
    await run.out("print", await run.uuid_of("VM_appliance", ref))


@command("appliance-destroy", reqd=("uuid",), help="Destroys a VM appliance.")
async def appliance_destroy(run) -> None:
    await run.call("VM_appliance.destroy", await run.call("VM_appliance.get_by_uuid", run.args["uuid"]))


@command("message-create", reqd=("name", "priority", "body"), optn=("vm-uuid", "host-uuid", "sr-uuid", "pool-uuid"),
         help="Creates a message about one object: exactly one of vm-uuid, host-uuid, sr-uuid, pool-uuid.")
async def message_create(run) -> None:
    try:
        priority = str(int(run.args["priority"]))
    except ValueError:
        raise CliFailure("Priority field should be an integer") from None
    for key, cls in (("vm-uuid", "VM"), ("pool-uuid", "Pool"), ("sr-uuid", "SR"), ("host-uuid", "Host")):
        if key in run.args:
            await run.call("message.create", run.args["name"], priority, cls, run.args[key], run.args["body"])
            return
    raise CliFailure("Need one of: vm-uuid, host-uuid, sr-uuid or pool-uuid")


@command("message-destroy", optn=("uuid", "uuids"), help="Destroys one message (uuid=) or many (uuids=a,b,...).")
async def message_destroy(run) -> None:
    uuid, uuids = run.args.get("uuid"), run.args.get("uuids")
    if uuid is not None and uuids is not None:
        raise CliFailure("Ambiguous arguments; need one of uuid, uuids")
    if uuid is None and uuids is None:
        raise CliFailure("Need one of uuid, uuids")
    wanted = [uuid] if uuid is not None else uuids.split(",")
    await run.call("message.destroy_many", [await run.call("message.get_by_uuid", u) for u in wanted])


@command("session-subject-identifier-list",
         help="Lists the subject identifiers of the users with externally authenticated sessions.")
async def session_subject_identifier_list(run) -> None:
    ids = await run.call("session.get_all_subject_identifiers")
    await run.print_records([[("subject-identifier ( RO)", i)] for i in ids])


@command("session-subject-identifier-logout", reqd=("subject-identifier",),
         help="Logs out every externally authenticated session of the user.")
async def session_subject_identifier_logout(run) -> None:
    await run.call("session.logout_subject_identifier", run.args["subject-identifier"])


@command("session-subject-identifier-logout-all", help="Logs out every externally authenticated session.")
async def session_subject_identifier_logout_all(run) -> None:
    for i in await run.call("session.get_all_subject_identifiers"):
        await run.call("session.logout_subject_identifier", i)


@command("subject-remove", reqd=("subject-uuid",), help="Removes a subject: it may no longer log in.")
async def subject_remove(run) -> None:
    await run.call("subject.destroy", await run.call("subject.get_by_uuid", run.args["subject-uuid"]))


async def _subject_role(run) -> tuple[str, str]:
    role_uuid, role_name = run.args.get("role-uuid", ""), run.args.get("role-name", "")
    if not role_uuid and not role_name:
        raise CliFailure("Required parameter not found: role-uuid or role-name")
    if role_uuid and role_name:
        raise CliFailure("Parameters role-uuid and role-name cannot be used together")
    if role_uuid:
        role = await run.call("role.get_by_uuid", role_uuid)
    else:
        roles = await run.call("role.get_by_name_label", role_name)
        role = roles[0] if roles else NULL
    return await run.call("subject.get_by_uuid", run.args["uuid"]), role


@command("subject-role-add", reqd=("uuid",), optn=("role-name", "role-uuid"), help="Gives the subject a role.")
async def subject_role_add(run) -> None:
    subject, role = await _subject_role(run)
    await run.call("subject.add_to_roles", subject, role)


@command("subject-role-remove", reqd=("uuid",), optn=("role-name", "role-uuid"),
         help="Takes a role from the subject.")
async def subject_role_remove(run) -> None:
    subject, role = await _subject_role(run)
    await run.call("subject.remove_from_roles", subject, role)


@command("vmss-create", reqd=("name-label", "type", "frequency"),
         optn=("name-description", "enabled", "schedule:", "retained-snapshots"),
         help="Create a VM snapshot schedule.")
async def vmss_create(run) -> None:
    from xapi.cli import records
    a = run.args
    ref = await run.call("VMSS.create", {
        "name_label": a["name-label"], "name_description": a.get("name-description", ""),
        "enabled": records.to_bool("enabled", a.get("enabled", "true")), "type": a["type"],
        "retained_snapshots": records.to_int("retained-snapshots", a.get("retained-snapshots", "7")),
        "frequency": a["frequency"], "schedule": run.map_arg("schedule")})
    await run.out("print", await run.uuid_of("VMSS", ref))


@command("vmss-destroy", reqd=("uuid",), help="Destroy a VM snapshot schedule.")
async def vmss_destroy(run) -> None:
    await run.call("VMSS.destroy", await run.call("VMSS.get_by_uuid", run.args["uuid"]))
