"""python -m xapi.xenstored --socket PATH [--dump FILE]

Serves xenstore on PATH until SIGTERM or SIGINT.  With --dump, the tree is
written to FILE (as ``path = "value"  (perms)`` lines) on SIGUSR1 and at exit.
"""
import argparse
import asyncio
import logging
import os
import signal
import sys

from xapi.xenstored.server import XenstoredServer, socket_path


def _write_dump(store, path):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(store.dump())
    os.replace(tmp, path)


async def _serve(args) -> int:
    server = await XenstoredServer.start(args.socket)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.dump:
        loop.add_signal_handler(signal.SIGUSR1, _write_dump, server.store, args.dump)
    print(f"xenstored: listening on {args.socket}", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        if args.dump:
            _write_dump(server.store, args.dump)
        await server.close()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xapi.xenstored", description="xenstored for the simulator")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", help="the Unix socket to listen on")
    where.add_argument("--data-dir", help="a host's data folder: listen on DIR/xenstored/socket")
    parser.add_argument("--dump", help="write the tree to this file on SIGUSR1 and at exit")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.data_dir:
        args.socket = socket_path(args.data_dir)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_serve(args))
    return uvloop.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
