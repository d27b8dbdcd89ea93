"""The xapi daemon: one host's state and its listeners (HTTP, TLS, the local Unix socket)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import time
from dataclasses import dataclass

from xapi import startup
from xapi.actions import blob as blob_actions
from xapi.actions import host as host_actions
from xapi.audit import AuditLog
from xapi.auth.passwords import open_auth
from xapi.auth.roles import ensure_roles
from xapi.auth.sessions import Sessions
from xapi.db import persist
from xapi.db.schema import new_database
from xapi.foreign_db import RoutingDispatcher
from xapi.events import Hub
from xapi.forwarding import resolve
from xapi.server import handlers, listeners, tls
from xapi.server.http import HttpProtocol
from xapi.server.rpc import Endpoints
from xapi.sm import internal as sm_internal, service as sm_service
from xapi.tasks import Tasks

log = logging.getLogger("xapi")


@dataclass
class Config:
    data_dir: str
    address: str = "127.0.0.1"
    http_port: int = 80
    https_port: int = 443
    backend: str = "sim"
    sim_config: str = ""
    auth: str = "local"
    auth_failure_delay: float = 2.0
    max_request_size: int = 64 << 20
    request_timeout: float = 60.0
    idle_timeout: float = 300.0
    db_flush_interval: float = 30.0     # seconds between state.db flushes (<= 0: at shutdown only)
    session_timeout: float = 86400.0    # idle seconds before a session is collected (xapi: 24 h)


class Daemon:
    """Everything one host serves. Connections see it as `ctx.app`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.app = self
        self.connections: set[HttpProtocol] = set()
        self.is_coordinator = True
        self.coordinator_address = config.address
        self.servers: list[asyncio.AbstractServer] = []
        self.generated_password: str | None = None

    # -- set-up ----------------------------------------------------------------------------------
    def prepare(self) -> None:
        cfg = self.config
        os.makedirs(cfg.data_dir, mode=0o700, exist_ok=True)
        self.auth, self.generated_password = open_auth(cfg.auth, cfg.data_dir, cfg.auth_failure_delay)
        self.cert_path = os.path.join(cfg.data_dir, "xapi-ssl.pem")
        if cfg.https_port:
            tls.ensure_certificate(self.cert_path, cfg.address)
        self.hypervisor = startup.open_hypervisor(cfg.backend, cfg.sim_config)
        # -- state.db: the pool database from the last run, if any (xapi.db.persist) --
        self.db_path = os.path.join(cfg.data_dir, "state.db")
        self.db = persist.load(self.db_path) if os.path.exists(self.db_path) else new_database()
        # --
        inventory = startup.read_inventory(cfg.data_dir)
        address = "127.0.0.1" if cfg.address in ("", "0.0.0.0", "::") else cfg.address
        self.pool_ref, self.host_ref = startup.populate(self.db, inventory, self.hypervisor, address,
                                                        cfg.backend, cfg.data_dir)
        ensure_roles(self.db)                    # the static roles and permissions (xapi.auth.roles)
        from xapi.actions import host_operations
        host_operations.configure(cfg.data_dir)  # power_on's plugin is looked for in this host's folders
        self.coordinator_address = address
        self.sessions = Sessions(self.db, self.host_ref)
        self.hub = Hub(self.db)
        self.tasks = Tasks(self)
        from xapi import messages
        messages.store(self)                     # saved messages are rows again before the first event.from
        self.event_registrations: dict = {}      # session ref -> legacy event.register state
        self.sessions.on_destroy.append(self.hub.session_gone)
        self.sessions.on_destroy.append(lambda ref: self.event_registrations.pop(ref, None))
        sm_internal.register()                  # the storage drivers' internal messages (xapi.sm)
        self.storage = sm_service.Storage(self)  # drivers, the access layer, PBDs (xapi.sm.service)
        # sessions of VDI.open_database read another database (xapi.foreign_db)
        self.dispatcher = RoutingDispatcher(resolve, self.db, self.sessions.by_ref)
        self.sessions.on_destroy.append(self.dispatcher.session_gone)
        self.audit = AuditLog(os.path.join(cfg.data_dir, "audit.log"))   # xapi.audit
        self.endpoints = Endpoints(self.dispatcher, self.hub, self.audit, durable=self._durable)
        # -- HTTP handlers (xapi.server.handlers) --
        self.handlers = handlers.Routes()
        blob_actions.register(self.handlers)
        from xapi.sm import transfer as sm_transfer
        sm_transfer.register(self.handlers)     # /import_raw_vdi, /export_raw_vdi
        from xapi.xva import handlers as xva_handlers
        xva_handlers.register(self.handlers)    # /export, /import: VMs as XVA archives (xapi.xva)
        from xapi.cli import server as cli_server
        cli_server.register(self.handlers)      # /cli: the xe CLI
        from xapi.actions import vm_migrate
        vm_migrate.register(self.handlers)      # /migrate: live migration's receiving end
        # --
        from xapi import pool as pool_setup
        pool_setup.prepare(self)                # pool secret, role, internal calls (xapi.pool)

    def _durable(self):
        """What a call's answer waits for: its writes in the redo-log, when there is one (xapi.pool.redolog)."""
        redo = getattr(self, "redo", None)
        return None if redo is None else redo.durable()

    @property
    def socket_path(self) -> str:
        return os.path.join(self.config.data_dir, "xapi")

    @property
    def pid_path(self) -> str:
        return os.path.join(self.config.data_dir, "xapi.pid")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        # VM calls need xenopsd: have it up before the first listener answers anyone
        await self._start_xenops()              # xenstored (simulator) and xenopsd (xapi.xenops)
        self.audit.start()
        if cfg.https_port:
            # kept: host.reset_server_certificate loads a new certificate into it (xapi.actions.host)
            self.ssl_context = tls.server_context(self.cert_path)
            host_actions.sync_certificate(self)
        # HTTP and HTTPS on the address, or the loopback only without a management interface
        await listeners.listen(self, listeners.management_enabled(startup.read_inventory(cfg.data_dir)))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        self.servers.append(await loop.create_unix_server(lambda: HttpProtocol(self, local=True),
                                                          self.socket_path))
        os.chmod(self.socket_path, 0o600)
        await self.storage.start()              # drivers call back on the local socket (xapi.sm)
        from xapi import pool as pool_setup
        await pool_setup.start(self)            # a member follows its coordinator (xapi.pool)
        from xapi.pool import db_replication, redolog
        if self.is_coordinator and self.redo is None:
            await redolog.switch(self, redolog.wanted(self))    # pool.enable_redo_log's, after a restart
        self.db_replication = db_replication.Replicator(self)   # metadata VDIs (SR.enable_database_replication)
        self.db_replication.start()
        with open(self.pid_path + ".tmp", "w") as f:
            f.write(f"{os.getpid()}\n")
        os.rename(self.pid_path + ".tmp", self.pid_path)
        self._sweeper = loop.create_task(self._sweep())
        self._collector = loop.create_task(self.tasks.collect())
        self.sessions.start_sweeper(cfg.session_timeout)     # idle and surplus sessions (xapi.auth.sessions)
        # -- state.db: periodic flush (xapi.db.persist) --
        self.persister = persist.Persister(self.db, self.db_path, cfg.db_flush_interval)
        self.persister.start()
        # --

    # -- xenopsd and xenstored (xapi.xenops, xapi.xenstored) --
    async def _start_xenops(self) -> None:
        from xapi.actions import vm as vm_actions
        from xapi.xenops.client import Client
        from xapi.xenops.server import Xenopsd
        from xapi.xenstored.server import XenstoredServer, socket_path as xenstored_socket
        loop = asyncio.get_running_loop()
        if getattr(self, "xenstored", None) is None and self.config.backend == "sim":
            self.xenstored = await XenstoredServer.start(xenstored_socket(self.config.data_dir))
        store = self.xenstored.store if getattr(self, "xenstored", None) is not None else None
        env = os.environ
        self.xenopsd = Xenopsd(self.hypervisor, store,
                               workers=int(env.get("XAPI_XENOPSD_WORKERS", "4")),
                               build_delay=float(env.get("XAPI_XENOPSD_BUILD_DELAY", "0")),
                               shutdown_delay=float(env.get("XAPI_XENOPSD_SHUTDOWN_DELAY", "0.1")))
        await self.xenopsd.start(os.path.join(self.config.data_dir, "xenopsd"))
        self.xenops = Client(self.xenopsd.path)
        self._xenops_watch = loop.create_task(vm_actions.watch(self))

    async def _stop_xenops(self) -> None:
        if getattr(self, "_xenops_watch", None) is not None:
            self._xenops_watch.cancel()
        if getattr(self, "xenopsd", None) is not None:
            await self.xenopsd.close()
        if getattr(self, "xenstored", None) is not None:
            await self.xenstored.close()
            self.xenstored = None
    # --

    def xenops_for(self, host_ref: str):
        """The xenopsd of a pool host: interface of xapi.xenops.client.Client (xapi.pool.calls)."""
        return self.pool.xenops(host_ref)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for conn in list(self.connections):
                conn.idle_check(now)

    async def stop(self) -> None:
        from xapi import pool as pool_setup
        if getattr(self, "db_replication", None) is not None:
            await self.db_replication.close()
        await pool_setup.stop(self)
        await self.storage.close()              # running drivers killed, the access state kept
        await self._stop_xenops()
        self._sweeper.cancel()
        self._collector.cancel()
        for s in self.servers:
            s.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        for s in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.wait_closed(), 2)
        # -- state.db: last flush, after the listeners are closed (xapi.db.persist) --
        try:
            await self.persister.close()
        except Exception:
            log.exception("state.db: final flush failed")
        # --
        for path in (self.socket_path, self.pid_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self.audit.stop()

    def banner(self) -> str:
        cfg = self.config
        host = "127.0.0.1" if cfg.address in ("", "0.0.0.0") else cfg.address
        lines = [f"xapi: XML-RPC  http://{host}:{cfg.http_port}/",
                 f"xapi: JSON-RPC http://{host}:{cfg.http_port}/jsonrpc"]
        if cfg.https_port:
            lines.append(f"xapi: TLS      https://{host}:{cfg.https_port}/")
        lines.append(f"xapi: local    {self.socket_path} (callers are root)")
        lines.append(f"xapi: data     {cfg.data_dir} (pid {os.getpid()}, backend {cfg.backend}, auth {cfg.auth})")
        if self.generated_password:
            lines.append(f"xapi: user root, password {self.generated_password} "
                         f"(kept in {os.path.join(cfg.data_dir, 'root-password')})")
        return "\n".join(lines)


def _raise_fd_limit() -> None:
    """Every client connection and long poll holds a descriptor: allow as many as the system lets us."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(config: Config) -> None:
    _raise_fd_limit()
    daemon = Daemon(config)
    daemon.prepare()
    await daemon.start()
    print(daemon.banner(), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await daemon.stop()
    if getattr(daemon, "restart_after_stop", False):      # host.reboot (xapi.actions.host_evacuate)
        import sys
        os.execv(sys.executable, [sys.executable, "-m", "xapi.cli.main", *sys.argv[1:]])
