"""The daemon's TCP listeners (HTTP and HTTPS) and the management interface, as xapi_mgmt_iface.run:
with a management interface the daemon listens on its address; without one (host.management_disable,
an inventory whose MANAGEMENT_INTERFACE is "") only on the loopback, 127.0.0.1, on the same ports.
The local Unix socket is never touched, and connections already open stay (the caller of
management_disable gets its answer)."""
from __future__ import annotations

import asyncio
import logging

from xapi.server.http import HttpProtocol

log = logging.getLogger("xapi.listeners")

LOOPBACK = "127.0.0.1"


def management_enabled(inventory: dict[str, str]) -> bool:
    """xapi.ml: an inventory without a management interface starts without one (no key: first boot)."""
    return inventory.get("MANAGEMENT_INTERFACE", "x") != ""


def listening_address(app) -> str | None:
    return getattr(app, "tcp_address", None)


async def listen(app, management: bool) -> None:
    """Listens on the daemon's address (management) or on the loopback only; nothing when already so."""
    cfg = app.config
    address = cfg.address if management else LOOPBACK
    if listening_address(app) == address:
        return
    loop = asyncio.get_running_loop()
    old = list(getattr(app, "tcp_servers", []))
    for s in old:
        s.close()
        if s in app.servers:
            app.servers.remove(s)
    await asyncio.sleep(0)          # the listening sockets closed (not their connections)
    new = [await loop.create_server(lambda: HttpProtocol(app), address, cfg.http_port,
                                    reuse_address=True, backlog=1024)]
    if cfg.https_port:
        new.append(await loop.create_server(lambda: HttpProtocol(app), address, cfg.https_port,
                                            ssl=app.ssl_context, reuse_address=True, backlog=1024))
    app.tcp_servers = new
    app.tcp_address = address
    app.servers.extend(new)
    log.info("listening on %s (management interface %s)", address, "enabled" if management else "disabled")
