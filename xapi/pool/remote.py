"""XenAPI calls from this host to another one's public endpoint (JSON-RPC over TLS), for pool.join:
the joining host logs in to the coordinator with the credentials it was given and learns the
coordinator's certificate fingerprint from the handshake (pinned from then on)."""
from __future__ import annotations

import asyncio
import ssl

import orjson

from xapi.datamodel.errors import XapiError
from xapi.pool.calls import _CONTEXT, _read_reply, fingerprint_of

TIMEOUT = 30.0


class Remote:
    """One keep-alive connection to address:port, opened on first use."""

    def __init__(self, address: str, port: int, fingerprint: str | None = None) -> None:
        self.address, self.port = address, port
        self.fingerprint = fingerprint       # learnt at connect when None
        self.conn = None
        self._ids = 0

    async def _open(self):
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.address, self.port, ssl=_CONTEXT, limit=16 << 20), TIMEOUT)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            raise XapiError("JOINING_HOST_CONNECTION_FAILED") from None
        fp = fingerprint_of(writer.get_extra_info("ssl_object").getpeercert(binary_form=True) or b"")
        if self.fingerprint is None:
            self.fingerprint = fp
        elif fp != self.fingerprint:
            writer.close()
            raise XapiError("SSL_VERIFY_ERROR", f"{self.address}: certificate fingerprint changed")
        return reader, writer

    async def request(self, method: str, path: str, body: bytes, headers: dict | None = None) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = await self._open()
        reader, writer = self.conn
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write((f"{method} {path} HTTP/1.1\r\nHost: {self.address}\r\nUser-Agent: xapi-pool\r\n"
                      f"Content-Type: application/json\r\n{extra}Content-Length: {len(body)}\r\n\r\n").encode()
                     + body)
        try:
            status, keep, data = await asyncio.wait_for(_read_reply(reader), TIMEOUT)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ssl.SSLError, ValueError):
            self.close()
            raise XapiError("JOINING_HOST_SERVICE_FAILED") from None
        if not keep:
            self.close()
        return status, data

    async def call(self, method: str, *params):
        """A XenAPI call; failures raise the XapiError the other host answered."""
        self._ids += 1
        body = orjson.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": self._ids})
        status, data = await self.request("POST", "/jsonrpc", body)
        try:
            reply = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise XapiError("JOINING_HOST_SERVICE_FAILED") from None
        error = reply.get("error") if isinstance(reply, dict) else None
        if error:
            if isinstance(error, dict):
                raise XapiError(str(error.get("message", "INTERNAL_ERROR")), *map(str, error.get("data") or []))
            raise XapiError(*map(str, error))
        if status != 200 or "result" not in reply:
            raise XapiError("JOINING_HOST_SERVICE_FAILED")
        return reply["result"]

    def close(self) -> None:
        if self.conn is not None:
            self.conn[1].close()
            self.conn = None
