"""The sending half of live migration: a domain's memory image PUT over HTTP to the destination's
`/migrate` handler (xapi.pool.migration), which hands it to its xenopsd's VM.receive.

`send(url, data, on_progress, headers, fingerprint)` streams `data` (the image, xapi.xenops.image) with
a Content-Length, reporting the fraction sent, and returns once the destination answered: 200 means
the destination's domain is built and running (the source may go); any other answer raises the
XenopsError the destination gave (its body is a JSON [code, params...]). A TLS URL is checked
against `fingerprint` (sha256 of the destination's certificate, as pool members pin each other)
when one is given. Plain asyncio streams: no thread, and cancelling the caller closes the
connection, which the destination sees as a torn image.
"""
from __future__ import annotations

import asyncio
import hashlib
import ssl
from urllib.parse import urlsplit

import orjson

from xapi.xenops.server import XenopsError

CHUNK = 64 << 10
ANSWER_TIMEOUT = 120.0          # the destination builds the domain before it answers


def _tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE     # pinned below by fingerprint instead (self-signed hosts)
    return ctx


def _check_pin(writer, fingerprint: str | None) -> None:
    if not fingerprint:
        return
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    got = hashlib.sha256(der).hexdigest()
    if got.replace(":", "").lower() != fingerprint.replace(":", "").lower():
        raise XenopsError("INTERNAL_ERROR", "migration destination certificate does not match the pinned one")


async def send(url: str, data: bytes, on_progress=None, headers: dict | None = None,
               fingerprint: str | None = None, connect_timeout: float = 10.0) -> None:
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise XenopsError("INTERNAL_ERROR", f"bad migration URL {url!r}")
    tls = u.scheme == "https"
    port = u.port or (443 if tls else 80)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(u.hostname, port, ssl=_tls() if tls else None),
            connect_timeout)
    except (OSError, asyncio.TimeoutError) as e:
        raise XenopsError("VM_MIGRATE_FAILED", "", "", "",
                          f"cannot connect to the destination {u.hostname}:{port}: {e}") from None
    try:
        if tls:
            _check_pin(writer, fingerprint)
        target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        head = [f"PUT {target} HTTP/1.1", f"Host: {u.hostname}:{port}", f"Content-Length: {len(data)}",
                "Content-Type: application/octet-stream", "Connection: close"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        view = memoryview(data)
        for off in range(0, len(data), CHUNK):
            writer.write(view[off:off + CHUNK])
            await writer.drain()
            if on_progress is not None:
                on_progress(min(1.0, (off + CHUNK) / max(1, len(data))))
        status, body = await _settled(asyncio.wait_for(_answer(reader), ANSWER_TIMEOUT))
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
        raise XenopsError("VM_MIGRATE_FAILED", "", "", "",
                          f"transfer to the destination failed: {type(e).__name__}: {e}") from None
    finally:
        writer.close()
    if status == 200:
        return
    try:
        err = orjson.loads(body)
        if isinstance(err, list) and err:
            raise XenopsError(*[str(x) for x in err])
    except orjson.JSONDecodeError:
        pass
    raise XenopsError("VM_MIGRATE_FAILED", "", "", "",
                      f"the destination answered {status}: {body[:200].decode(errors='replace')}")


async def _settled(coro):
    """Once the whole image is out, the destination decides: a cancel arriving now waits for its
    answer (on success the VM has moved and the cancel comes too late, as in xenopsd)."""
    fut = asyncio.ensure_future(coro)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(fut)
            break
        except asyncio.CancelledError:
            if fut.done():
                raise
            cancelled = True
    if cancelled and result[0] != 200:
        raise asyncio.CancelledError()
    return result


async def _answer(reader) -> tuple[int, bytes]:
    line = await reader.readline()
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise asyncio.IncompleteReadError(line, None)
    status = int(parts[1])
    length = None
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    body = await (reader.readexactly(length) if length is not None else reader.read(1 << 16))
    return status, body
