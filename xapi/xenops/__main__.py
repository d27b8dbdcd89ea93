"""python -m xapi.xenops --socket PATH [--backend sim] [--sim-config ...] [--workers 4]"""
import argparse
import asyncio
import signal

from xapi import xenctrl
from xapi.xenops.server import Xenopsd


async def _serve(args) -> int:
    hv = xenctrl.open(args.backend, args.sim_config)
    xenopsd = Xenopsd(hv, workers=args.workers, build_delay=args.build_delay)
    await xenopsd.start(args.socket)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await xenopsd.close()
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m xapi.xenops")
    p.add_argument("--socket", required=True)
    p.add_argument("--backend", default="sim")
    p.add_argument("--sim-config", default="")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--build-delay", type=float, default=0.0)
    return asyncio.run(_serve(p.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
