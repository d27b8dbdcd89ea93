"""The xe licensing commands (cli_operations.ml host_license_add/remove/view, host_apply_edition,
pool_apply_edition): a host's licence file, its parameters, and the edition of a host or of the pool."""
from __future__ import annotations

import base64

from xapi.cli.cmdtable import command
from xapi.cli.commands import ExitWithError
from xapi.cli.ops_auth import pool_of
from xapi.datamodel.errors import XapiError

MAX_LICENSE = 1 << 20       # a licence file is a few KiB


async def host_of(run) -> str:
    """host-uuid=, else the host the session was made on (cli_operations' get_host_from_session)."""
    if "host-uuid" in run.args:
        return await run.call("host.get_by_uuid", run.args["host-uuid"])
    return await run.call("session.get_this_host", run.session)


@command("host-license-add", reqd=("license-file",), optn=("host-uuid",),
         help="Applies the licence file (read on the client) to the host.")
async def host_license_add(run) -> None:
    host = await host_of(run)
    data = None if run.channel is None else await run.channel.load(run.args["license-file"], MAX_LICENSE)
    if data is None:
        await run.out("stderr", "Failed to read license file\n")
        raise ExitWithError(1)
    try:
        await run.call("host.license_add", host, base64.b64encode(data).decode("ascii"))
    except XapiError:
        await run.out("stderr", "Failed to apply license file\n")
        raise ExitWithError(1) from None
    await run.out("print", "License applied.")


@command("host-license-remove", optn=("host-uuid",), help="Removes the licence applied to the host.")
async def host_license_remove(run) -> None:
    await run.call("host.license_remove", await host_of(run))


@command("host-license-view", optn=("host-uuid",), help="Prints the host's licence parameters.")
async def host_license_view(run) -> None:
    params = await run.call("host.get_license_params", await host_of(run))
    hidden = {"sku_type"}                           # cli_operations keeps it out of the view
    await run.print_records([[(k, v) for k, v in params.items() if k not in hidden]])


def _with_server(current: dict, run) -> dict:
    server = dict(current)
    if "license-server-address" in run.args:
        server["address"] = run.args["license-server-address"]
    if "license-server-port" in run.args:
        server["port"] = run.args["license-server-port"]
    return server


async def _apply(run, hosts: list[str], apply) -> None:
    """Sets the hosts' licence server from license-server-address/-port, then applies the edition;
    on failure each host gets its licence server back; an unknown edition lists the valid ones."""
    before = {h: await run.call("host.get_license_server", h) for h in hosts}
    for h in hosts:
        server = _with_server(before[h], run)
        if server != before[h]:
            await run.call("host.set_license_server", h, server)
    try:
        await apply()
    except XapiError as e:
        for h in hosts:
            if await run.call("host.get_license_server", h) != before[h]:
                await run.call("host.set_license_server", h, before[h])
        if e.code != "INVALID_EDITION":
            raise
        # xapi's CLI asks the licensing daemon (V6_client.get_editions); here that is the host actions' list
        from xapi.actions.host_settings import EDITIONS
        await run.out("stderr", "Valid editions are: " + ", ".join(EDITIONS) + "\n")
        raise ExitWithError(1) from None


@command("host-apply-edition", reqd=("edition",), optn=("host-uuid", "license-server-address", "license-server-port"),
         help="Moves the host to another edition, or renews the current one, using the given licence server.")
async def host_apply_edition(run) -> None:
    host = await host_of(run)
    await _apply(run, [host], lambda: run.call("host.apply_edition", host, run.args["edition"], False))


@command("pool-apply-edition", reqd=("edition",), optn=("uuid", "license-server-address", "license-server-port"),
         help="Moves every host of the pool to the edition, using the given licence server.")
async def pool_apply_edition(run) -> None:
    pool = await pool_of(run)
    hosts = await run.call("host.get_all")
    await _apply(run, hosts, lambda: run.call("pool.apply_edition", pool, run.args["edition"]))
