"""The xe licensing commands (cli_operations.ml host_license_add/remove/view, host_apply_edition,
pool_apply_edition): a host's licence file, its parameters, and the edition of a host or of the pool."""
from __future__ import annotations

import base64
import datetime
import time

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
        await run.out("stderr", "Failed to read license file.\n")
        raise ExitWithError(1)
    try:
        await run.call("host.license_add", host, base64.b64encode(data).decode("ascii"))
    except XapiError:
        await run.out("stderr", "Failed to apply license file.\n")
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


# the alerts a failed licence checkout leaves, printed (and dismissed) in place of the error
CHECKOUT_ALERTS = ("V6_REJECTED", "V6_COMM_ERROR", "V6_LICENSE_SERVER_VERSION_OBSOLETE")


async def _set_server_key(run, hosts: list[str], key: str, value: str) -> None:
    for h in hosts:
        await run.call("host.remove_from_license_server", h, key)
        await run.call("host.add_to_license_server", h, key, value)


async def _apply(run, hosts: list[str], apply) -> None:
    """cli_operations' with_license_server_changes: the hosts' licence server takes
    license-server-address/-port first; a failed checkout puts the old one back and prints the
    licensing alerts it raised; an unknown edition also lists the valid ones."""
    before = {h: await run.call("host.get_license_server", h) for h in hosts}
    if "license-server-address" in run.args:
        await _set_server_key(run, hosts, "address", run.args["license-server-address"])
    if "license-server-port" in run.args:
        port = run.args["license-server-port"]
        if not port.lstrip("-").isdigit() or not 0 <= int(port) <= 65535:
            await run.out("stderr", "NOTE: The given port number is invalid; reverting to the current value.\n")
        else:
            await _set_server_key(run, hosts, "port", port)
    since = time.time() - 1
    try:
        await apply()
    except XapiError as e:
        if e.code == "LICENSE_CHECKOUT_ERROR":
            for h, server in before.items():
                await run.call("host.set_license_server", h, server)
            stamp = datetime.datetime.fromtimestamp(since, datetime.timezone.utc).strftime("%Y%m%dT%H:%M:%SZ")
            alerts = await run.call("message.get_since", stamp)
            if not alerts:
                raise
            for ref, msg in alerts.items():
                if msg["name"] in CHECKOUT_ALERTS:
                    await run.call("message.destroy", ref)
                    await run.out("stderr", msg["body"] + "\n")
            raise ExitWithError(1) from None
        if e.code == "INVALID_EDITION":
            this = await run.call("session.get_this_host", run.session)
            editions = await run.call("host.get_editions", this)
            await run.out("stderr", "Valid editions are: " + ", ".join(editions) + "\n")
        raise


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


@command("host-all-editions", help="Lists the editions the host this command reaches can be moved to.")
async def host_all_editions(run) -> None:
    this = await run.call("session.get_this_host", run.session)
    await run.print_list(await run.call("host.get_editions", this))
