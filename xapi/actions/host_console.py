"""host.dmesg and host.send_debug_keys: the hypervisor's console ring, as xenopsd's HOST.get_console_data
and HOST.send_debug_keys reach it, on the host named (an internal call to a pool member).

On a real Xen host (backend "xc") they are `xl dmesg` and `xl debug-keys KEYS`. The simulated
hypervisor keeps a ring of its own: its boot lines (version, CPUs, memory) and, for each debug key
sent, the line Xen prints for that key ("(XEN) 'q' pressed -> dumping domain info (now = ...)"), so
what send_debug_keys does shows in dmesg as on Xen. The ring keeps the last 16 KiB, like Xen's
default console ring.
"""
from __future__ import annotations

import asyncio
import time

from xapi.datamodel.errors import XapiError
from xapi.pool import internal

RING_BYTES = 16 << 10
# Xen's descriptions of its debug keys (xen/common/keyhandler.c)
_KEYS = {
    "0": "dump Dom0 registers", "a": "dump timer queues", "c": "dump ACPI Cx structures",
    "d": "dump registers", "e": "dump evtchn info", "g": "print grant table usage",
    "h": "show this message", "i": "dump interrupt bindings", "m": "memory info",
    "n": "NMI statistics", "q": "dump domain (and guest debug) info", "r": "dump run queues",
    "t": "display multi-cpu clock info", "u": "dump NUMA info", "v": "dump VT-x VMCSs",
    "z": "dump IOAPIC info", "H": "dump heap info", "R": "reboot machine",
}


def _ring(app) -> list[str]:
    ring = getattr(app, "xen_console_ring", None)
    if ring is None:
        info = app.hypervisor.physinfo()
        mem_mib = info["total_pages"] * 4096 >> 20
        ring = [" Xen 4.17.3-sim",
                "(XEN) Xen version 4.17.3-sim (pyxapi simulated hypervisor)",
                f"(XEN) Command line: dom0_mem={min(mem_mib, 4096)}M,max:{min(mem_mib, 4096)}M",
                f"(XEN) System RAM: {mem_mib}MB",
                f"(XEN) Brought up {info['nr_cpus']} CPUs",
                "(XEN) Scheduling granularity: cpu, 1 CPU per sched-resource",
                "(XEN) *** LOADING DOMAIN 0 ***",
                "(XEN) Freed 628kB init memory"]
        app.xen_console_ring = ring
    return ring


def _append(app, line: str) -> None:
    ring = _ring(app)
    ring.append(line)
    while sum(len(x) + 1 for x in ring) > RING_BYTES:
        ring.pop(0)


async def _xl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec("xl", *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise XapiError("INTERNAL_ERROR", f"xl {args[0]}: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


@internal.method("host_console.dmesg")
async def _dmesg(app) -> str:
    if app.config.backend != "sim":
        return await _xl("dmesg")
    return "\n".join(_ring(app)) + "\n"


@internal.method("host_console.debug_keys")
async def _debug_keys(app, keys: str) -> str:
    if app.config.backend != "sim":
        await _xl("debug-keys", keys)
        return ""
    now = time.monotonic_ns()
    for key in keys:
        what = _KEYS.get(key)
        if what is None:
            continue                              # Xen ignores keys without a handler
        _append(app, f"(XEN) '{key}' pressed -> {what} (now = {now})")
    return ""


def _check(ctx, host) -> None:
    if type(host) is not str or host not in ctx.app.db.table("host"):
        raise XapiError("HANDLE_INVALID", "host", host)


async def dmesg(ctx, session, host):
    _check(ctx, host)
    return await ctx.app.pool.call(host, "host_console.dmesg")


async def send_debug_keys(ctx, session, host, keys):
    _check(ctx, host)
    await ctx.app.pool.call(host, "host_console.debug_keys", str(keys))
    return ""


HOST_MESSAGES = {"dmesg": dmesg, "send_debug_keys": send_debug_keys}
