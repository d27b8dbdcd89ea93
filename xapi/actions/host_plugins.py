"""host.call_plugin and host.call_extension: executables dropped into a host's plugin folders, run on
that host as Xapi_plugins / Xapi_extensions run them.

Folders: `<data>/plugins` then `/etc/xapi.d/plugins` (extensions: `<data>/extensions` then
`/etc/xapi.d/extensions`), or the colon-separated `$XAPI_PLUGIN_DIRS` / `$XAPI_EXTENSION_DIRS`.
Only a name listed in a folder runs (no paths): otherwise XENAPI_MISSING_PLUGIN [name] (an
extension: MESSAGE_METHOD_UNKNOWN [name]).

A plugin gets one argument, the XML-RPC methodCall fn(session ref, {args}) (the XenAPIPlugin
convention), and answers a methodResponse on stdout: {"Status": "Success", "Value": v} or a plain
value gives v; {"Status": "Failure", "ErrorDescription": [code, *params]} is raised as that error; an
XML-RPC fault is XENAPI_PLUGIN_FAILURE ["fault", code, reason]; a non-zero exit ["non-zero exit",
stdout, stderr]; a signal ["signal: NAME", stdout, stderr]; unparsable output ["failed to parse plugin
output", stdout, reason]. A plugin runs at most `$XAPI_PLUGIN_TIMEOUT` seconds (default 300; then it is
killed: ["timeout", stdout, stderr]) and at most 8 run at once per host, as subprocesses.
"""
from __future__ import annotations

import asyncio
import os
import signal
import xmlrpc.client
from xml.parsers.expat import ExpatError

from xapi.datamodel.errors import XapiError
from xapi.pool import internal

_MAX_RUNNING = 8
_running: asyncio.Semaphore | None = None


def folders(data_dir: str, kind: str) -> list[str]:
    """The host's plugin (kind "plugins") or extension folders, in search order."""
    given = os.environ.get("XAPI_PLUGIN_DIRS" if kind == "plugins" else "XAPI_EXTENSION_DIRS")
    if given:
        return [d for d in given.split(":") if d]
    return [os.path.join(data_dir, kind), f"/etc/xapi.d/{kind}"]


def find(app, kind: str, name: str) -> str | None:
    """The executable `name` in the host's plugin (kind "plugins") or extension folders, or None."""
    return find_in(folders(app.config.data_dir, kind), name)


def find_in(dirs: list[str], name: str) -> str | None:
    if not name or "/" in name or name in (".", ".."):
        return None
    for folder in dirs:
        try:
            if name in os.listdir(folder):
                path = os.path.join(folder, name)
                if os.path.isfile(path):
                    return path
        except OSError:
            continue
    return None


def _timeout() -> float:
    try:
        return max(0.1, float(os.environ.get("XAPI_PLUGIN_TIMEOUT", "300")))
    except ValueError:
        return 300.0


async def _run(path: str, argument: str) -> tuple[int | None, str, str]:
    """(exit status or -signal, stdout, stderr); None when it outlived the timeout (then killed)."""
    global _running
    if _running is None:
        _running = asyncio.Semaphore(_MAX_RUNNING)
    async with _running:
        try:
            proc = await asyncio.create_subprocess_exec(
                path, argument, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as e:
            raise XapiError("XENAPI_PLUGIN_FAILURE", "non-zero exit", "", str(e)) from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), _timeout())
        except asyncio.TimeoutError:
            _kill(proc)
            out, err = await proc.communicate()
            return None, out.decode(errors="replace"), err.decode(errors="replace")
        except asyncio.CancelledError:
            _kill(proc)
            raise
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def _kill(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)        # the plugin and whatever it started
    except ProcessLookupError:
        pass


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name.lower()
    except ValueError:
        return str(n)


@internal.method("host_plugins.call")
async def _call_plugin(app, plugin: str, fn: str, session: str, args: dict) -> str:
    path = find(app, "plugins", plugin)
    if path is None:
        raise XapiError("XENAPI_MISSING_PLUGIN", plugin)
    call = xmlrpc.client.dumps((session, {str(k): str(v) for k, v in args.items()}), fn, allow_none=False)
    status, out, err = await _run(path, call)
    if status is None:
        raise XapiError("XENAPI_PLUGIN_FAILURE", "timeout", out, err)
    if status < 0:
        raise XapiError("XENAPI_PLUGIN_FAILURE", f"signal: {_signal_name(-status)}", out, err)
    if status != 0:
        raise XapiError("XENAPI_PLUGIN_FAILURE", "non-zero exit", out, err)
    try:
        (value,), _ = xmlrpc.client.loads(out)
    except xmlrpc.client.Fault as f:
        raise XapiError("XENAPI_PLUGIN_FAILURE", "fault", str(f.faultCode), str(f.faultString)) from None
    except (ExpatError, ValueError, TypeError) as e:
        raise XapiError("XENAPI_PLUGIN_FAILURE", "failed to parse plugin output", out, str(e)) from None
    if isinstance(value, dict) and "Status" in value:
        if value["Status"] == "Success" and "Value" in value:
            value = value["Value"]
        elif value["Status"] == "Failure" and value.get("ErrorDescription"):
            desc = [str(x) for x in value["ErrorDescription"]]
            raise XapiError(desc[0], *desc[1:])
        else:
            raise XapiError("XENAPI_PLUGIN_FAILURE", "unexpected XMLRPC result", out)
    if not isinstance(value, str):
        raise XapiError("XENAPI_PLUGIN_FAILURE", "unexpected XMLRPC result", out)
    return value


def _check_host(app, host) -> None:
    if type(host) is not str or host not in app.db.table("host"):
        raise XapiError("HANDLE_INVALID", "host", host)


async def call_plugin(ctx, session, host, plugin, fn, args):
    """Runs on `host` (an internal call to a pool member), with the caller's session."""
    app = ctx.app
    _check_host(app, host)
    ref = getattr(session, "ref", session)
    return await app.pool.call(host, "host_plugins.call", plugin, fn, ref, dict(args), timeout=_timeout() + 30)


@internal.method("host_plugins.extension")
async def _call_extension(app, call: str) -> str:
    try:
        _, name = xmlrpc.client.loads(call)
    except (ExpatError, ValueError, TypeError, xmlrpc.client.Fault):
        raise XapiError("INTERNAL_ERROR", f"failed to parse extension call: {call}") from None
    path = find(app, "extensions", name or "")
    if path is None:
        raise XapiError("MESSAGE_METHOD_UNKNOWN", name or "")
    status, out, err = await _run(path, call)
    if status is None:
        raise XapiError("INTERNAL_ERROR", f"extension {name}: timeout")
    if status != 0:
        what = f"signal: {_signal_name(-status)}" if status < 0 else f"non-zero exit {status}"
        raise XapiError("INTERNAL_ERROR", f"extension {name}: {what}: {err.strip()}")
    try:
        xmlrpc.client.loads(out)
    except xmlrpc.client.Fault:
        pass                                     # a fault is a well-formed answer: the caller reads it
    except (ExpatError, ValueError, TypeError):
        raise XapiError("INTERNAL_ERROR", f"failed to parse extension output: {out}") from None
    return out


async def call_extension(ctx, session, host, call):
    """The extension named by the methodCall `call`, on `host`; answers its methodResponse text."""
    app = ctx.app
    _check_host(app, host)
    return await app.pool.call(host, "host_plugins.extension", call, timeout=_timeout() + 30)


@internal.method("host_plugins.has_extension")
def _has_extension(app, name: str) -> bool:
    path = find(app, "extensions", name)
    return path is not None and os.access(path, os.X_OK)


async def has_extension(ctx, session, host, name):
    app = ctx.app
    _check_host(app, host)
    return bool(await app.pool.call(host, "host_plugins.has_extension", name))


HOST_MESSAGES = {"call_plugin": call_plugin, "call_extension": call_extension, "has_extension": has_extension}
