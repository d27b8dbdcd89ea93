"""The `xapi` command: `xapi serve` runs one host's daemon in the foreground; `xapi passwd` sets passwords;
`xapi sim` runs a pool of simulated hosts (xapi.sim.supervisor)."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from xapi.cli import passwd


def _serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="run the daemon in the foreground",
                       description="Run one host's XenAPI daemon in the foreground until SIGINT/SIGTERM.")
    p.add_argument("--data-dir", default=os.environ.get("XAPI_DATA_DIR", "var"),
                   help="folder for all state: certificate, root password, pid file, local socket "
                        "(default: $XAPI_DATA_DIR, else ./var)")
    p.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--http-port", type=int, default=80, help="XML-RPC / JSON-RPC over HTTP (default 80)")
    p.add_argument("--https-port", type=int, default=443, help="the same over TLS; 0 turns TLS off (default 443)")
    p.add_argument("--backend", choices=("sim", "xc"), default="sim",
                   help="hypervisor: the built-in simulator, or Xen through libxenctrl (default sim)")
    p.add_argument("--sim-config", default="",
                   help="simulated host, as key=value,...: memory_mib, cpus, cpu_mhz, dom0_memory_mib")
    p.add_argument("--auth", choices=("local", "pam"), default="local",
                   help="how passwords are checked: the users of <data>/passwd (see `xapi passwd`; root's "
                        "from $XAPI_ROOT_PASSWORD, else <data>/root-password), or PAM service 'xapi' "
                        "(default local)")
    p.add_argument("--auth-failure-delay", type=float, default=2.0,
                   help="seconds before a failed login is answered; doubles with each further recent failure "
                        "from the same address, up to 30 (default 2)")
    p.add_argument("--max-request-size", type=int, default=64 << 20,
                   help="largest request body accepted, in bytes (default 64 MiB)")
    p.add_argument("--request-timeout", type=float, default=60.0,
                   help="seconds a client may take to send one request (default 60)")
    p.add_argument("--idle-timeout", type=float, default=300.0,
                   help="seconds an idle keep-alive connection stays open (default 300)")
    p.add_argument("--db-flush-interval", type=float, default=30.0,
                   help="seconds between writes of the pool database to <data>/state.db when it changed; "
                        "0 writes only at shutdown (default 30)")
    p.add_argument("--session-timeout", type=float, default=86400.0,
                   help="seconds a session may stay idle before it is ended, as xapi (default 86400)")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xapi", description="pyxapi: the XenAPI toolstack daemon")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    passwd.add_parser(sub)
    from xapi.sim import supervisor as sim
    sim.add_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "passwd":
        return passwd.run(args)
    if args.command == "sim":
        return sim.run(args)
    if args.command == "serve":
        import uvloop

        from xapi.daemon import Config, serve

        config = Config(data_dir=os.path.abspath(args.data_dir), address=args.address, http_port=args.http_port,
                        https_port=args.https_port, backend=args.backend, sim_config=args.sim_config,
                        auth=args.auth, auth_failure_delay=args.auth_failure_delay,
                        max_request_size=args.max_request_size, request_timeout=args.request_timeout,
                        idle_timeout=args.idle_timeout, db_flush_interval=args.db_flush_interval,
                        session_timeout=args.session_timeout)
        try:
            uvloop.run(serve(config))
        except OSError as e:
            print(f"xapi: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
