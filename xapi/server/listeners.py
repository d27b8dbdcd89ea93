"""The daemon's TCP listeners (HTTP and HTTPS) and the management interface, as xapi_mgmt_iface.run:
with a management interface the daemon listens on its address; without one (host.management_disable,
an inventory whose MANAGEMENT_INTERFACE is "") only on the loopback, 127.0.0.1, on the same ports.
The local Unix socket is never touched, and connections already open stay (the caller of
management_disable gets its answer)."""
from __future__ import annotations

import asyncio
import errno
import logging

from xapi.datamodel.errors import XapiError
from xapi.server.http import HttpProtocol

log = logging.getLogger("xapi.listeners")

LOOPBACK = "127.0.0.1"


def management_enabled(inventory: dict[str, str]) -> bool:
    """xapi.ml: an inventory without a management interface starts without one (no key: first boot)."""
    return inventory.get("MANAGEMENT_INTERFACE", "x") != ""


def listening_address(app) -> str | None:
    return getattr(app, "tcp_address", None)


async def _bind(app, address: str) -> list:
    """HTTP and (when configured) HTTPS listening on `address`; all or none (OSError)."""
    cfg = app.config
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(lambda: HttpProtocol(app), address, cfg.http_port,
                                        reuse_address=True, backlog=1024)]
    if cfg.https_port:
        try:
            servers.append(await loop.create_server(lambda: HttpProtocol(app), address, cfg.https_port,
                                                    ssl=app.ssl_context, reuse_address=True, backlog=1024))
        except OSError:
            servers[0].close()
            raise
    return servers


async def _close(app, servers: list) -> None:
    for s in servers:
        s.close()
        if s in app.servers:
            app.servers.remove(s)
    await asyncio.sleep(0)          # the listening sockets closed (not their connections)


def _unix_error(e: OSError) -> XapiError:
    # what xapi answers when its bind fails: the Unix error as INTERNAL_ERROR
    name = errno.errorcode.get(e.errno, str(e.errno))
    return XapiError("INTERNAL_ERROR", f'Unix.Unix_error(Unix.{name}, "bind", "")')


async def listen(app, management: bool) -> None:
    """Listens on the daemon's address (management) or on the loopback only; nothing when already so.
    The new listeners are bound before the old ones close; when the old ones hold the port on an
    address that covers the new one (the wildcard), they close first and come back if the new address
    still cannot be bound. A failure is INTERNAL_ERROR with the Unix error, the old listeners kept."""
    address = app.config.address if management else LOOPBACK
    if listening_address(app) == address:
        return
    old = list(getattr(app, "tcp_servers", []))
    old_address = listening_address(app)
    try:
        new = await _bind(app, address)
    except OSError as e:
        if not old:
            raise                                   # at start: the daemon cannot serve at all
        await _close(app, old)
        try:
            new = await _bind(app, address)
        except OSError:
            try:
                restored = await _bind(app, old_address)
            except OSError as lost:
                log.error("cannot listen on %s again: %s; only the Unix socket is left", old_address, lost)
                app.tcp_servers, app.tcp_address = [], None
            else:
                app.tcp_servers = restored
                app.servers.extend(restored)
            log.warning("cannot listen on %s: %s; still on %s", address, e, listening_address(app))
            raise _unix_error(e) from None
    else:
        await _close(app, old)
    app.tcp_servers = new
    app.tcp_address = address
    app.servers.extend(new)
    log.info("listening on %s (management interface %s)", address, "enabled" if management else "disabled")
