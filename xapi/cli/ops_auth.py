"""The xe commands of logins (cli_operations.ml user_password_change, pool_enable/disable_external_auth,
subject_add): root's password, the pool's external authentication and the subjects it lets in."""
from __future__ import annotations

from xapi.cli.cmdtable import command


async def pool_of(run) -> str:
    """cli_operations' get_pool_with_default: the pool named by uuid=, else the only one."""
    if "uuid" in run.args:
        return await run.call("pool.get_by_uuid", run.args["uuid"])
    return (await run.call("pool.get_all"))[0]


@command("user-password-change", reqd=("new",), optn=("old",),
         help="Changes the password root logs in with (the caller must be root).")
async def user_password_change(run) -> None:
    await run.call("session.change_password", run.args.get("old", ""), run.args["new"])


@command("pool-enable-external-auth", reqd=("auth-type", "service-name"), optn=("uuid", "config:"),
         help="Turns external authentication on for every host of the pool; some auth-types need "
              "config:key=value settings.")
async def pool_enable_external_auth(run) -> None:
    pool = await pool_of(run)
    await run.call("pool.enable_external_auth", pool, run.map_arg("config"), run.args["service-name"],
                   run.args["auth-type"])


@command("pool-disable-external-auth", optn=("uuid", "config:"),
         help="Turns external authentication off for every host of the pool.")
async def pool_disable_external_auth(run) -> None:
    await run.call("pool.disable_external_auth", await pool_of(run), run.map_arg("config"))


@command("subject-add", reqd=("subject-name",),
         help="Lets a user or group of the external directory log in (give it a role too); prints its uuid.")
async def subject_add(run) -> None:
    # as cli_operations: the name's identifier and information from the directory, then the subject
    sid = await run.call("auth.get_subject_identifier", run.args["subject-name"])
    info = await run.call("auth.get_subject_information_from_identifier", sid)
    subject = await run.call("subject.create", {"subject_identifier": sid, "other_config": info})
    await run.print_list([await run.uuid_of("subject", subject)])
