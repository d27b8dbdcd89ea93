"""xapi's side of xenopsd: calls over its Unix socket (one JSON object per line, xapi.xenops.server).

    c = Client(path)
    await c.call("VM.stat", uuid)
    await c.run("VM.start", uuid, False, on_progress=...)   # starts the task, follows it to the end

`run` binds the caller to the xenopsd task: progress is reported through `on_progress`, and when the
caller is cancelled (task.cancel of the xapi task) the xenopsd task is cancelled and waited for.
"""
from __future__ import annotations

import asyncio
import itertools

import orjson

from xapi.xenops.server import XenopsError

_ids = itertools.count(1)


class Client:
    def __init__(self, path: str) -> None:
        self.path = path

    async def call(self, method: str, *params):
        reader, writer = await asyncio.open_unix_connection(self.path, limit=16 << 20)
        try:
            writer.write(orjson.dumps({"id": next(_ids), "method": method, "params": list(params)}) + b"\n")
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
        if not line:
            raise XenopsError("INTERNAL_ERROR", f"xenopsd closed the connection during {method}")
        reply = orjson.loads(line)
        if "error" in reply:
            raise XenopsError(*reply["error"])
        return reply.get("result")

    async def wait(self, tid: str, on_progress=None) -> dict:
        """Follows task `tid` to its end; cancelled, cancels it and waits that out first."""
        try:
            while True:
                st = await self._wait_once(tid, on_progress is not None)
                if on_progress is not None:
                    on_progress(st["progress"])
                if st["state"] != "pending":
                    return st
        except asyncio.CancelledError:
            await asyncio.shield(self._cancel_and_wait(tid))
            raise

    async def _wait_once(self, tid: str, want_progress: bool) -> dict:
        """The task's state once it has ended or a second has passed."""
        return await self.call("TASK.wait", tid, 1.0)

    async def _destroy(self, tid: str) -> None:
        await self.call("TASK.destroy", tid)

    async def _cancel_and_wait(self, tid: str) -> None:
        try:
            await self.call("TASK.cancel", tid)
            while (await self.call("TASK.wait", tid, 1.0))["state"] == "pending":
                pass
        except (OSError, XenopsError):
            pass

    async def run(self, method: str, *params, on_progress=None):
        tid = await self.call(method, *params)
        st = await self.wait(tid, on_progress)
        await self._destroy(tid)
        if st["state"] == "completed":
            return st["result"]
        raise XenopsError(*st["error"])
