"""Runs SMAPIv1 drivers: one subprocess per operation, as xapi's sm_exec does.

A driver is an executable named ``<Type>SR`` in the drivers folder (``xapi/sm/drivers``, or
``XAPI_SM_DIR``); its SR type is the prefix in lower case. It gets the whole XML-RPC request as its
single argument and answers on stdout. Python scripts are run with this interpreter (the venv's), so
they import the package whatever their ``#!`` line says; anything else is executed as it is.

Failures, as xapi maps them:

* a fault 38 is "not implemented" (:class:`NotImplementedInBackend`), 39 ``SR_NOT_EMPTY``,
  24 ``VDI_IN_USE``, 16 ``SR_DEVICE_IN_USE``, 144 ``VDI_MISSING [sr, vdi]``, any other n
  ``SR_BACKEND_FAILURE_<n> ["", reason, stderr]``;
* a driver killed by a signal, exiting non-zero, answering something that is not an XML-RPC
  response, or running past the timeout gives ``SR_BACKEND_FAILURE [status, stdout, stderr]``.

Drivers run without blocking the event loop, at most ``concurrency`` at a time, each in its own
process group (killed whole on timeout or cancellation). Python drivers are forked from a warm
interpreter that has the drivers' modules imported (xapi.sm.forkserver): still one process per
operation with the request as its argument, without paying for an interpreter start and the
imports each time (``XAPI_SM_FORK=0``, or a fork server that died: started afresh). ``scan()`` asks every driver for its
``sr_get_driver_info``, which fills the SM table.
"""
from __future__ import annotations

import array
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
import xmlrpc.client
from dataclasses import dataclass, field

from xapi.datamodel.errors import XapiError

log = logging.getLogger("xapi.sm")

DRIVERS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "drivers")
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NULL_REF = "OpaqueRef:NULL"


class NotImplementedInBackend(Exception):
    """The driver answered fault 38: the command is not implemented."""


@dataclass
class DriverInfo:
    type: str                      # "ext": the file name's prefix, lower case
    path: str                      # the executable
    name: str
    description: str
    vendor: str
    copyright: str
    version: str
    required_api_version: str
    capabilities: list[str]        # as the driver lists them ("VDI_RESET_ON_BOOT/2")
    configuration: dict[str, str]
    mtime: float = 0.0

    @property
    def features(self) -> dict[str, int]:
        """capability name -> version (1 when unversioned), as xapi's SM.features."""
        out: dict[str, int] = {}
        for cap in self.capabilities:
            name, _, version = cap.partition("/")
            try:
                out[name] = int(version) if version else 1
            except ValueError:
                out[name] = 1
        return out

    def has(self, capability: str) -> bool:
        return capability in self.features

    def sm_row(self) -> dict:
        """The SM table's fields for this driver."""
        return {"name_label": self.name, "name_description": self.description, "type": self.type,
                "vendor": self.vendor, "copyright": self.copyright, "version": self.version,
                "required_api_version": self.required_api_version,
                "capabilities": list(self.features), "features": self.features,
                "configuration": dict(self.configuration), "driver_filename": self.path,
                "required_cluster_stack": []}


@dataclass
class Call:
    """One SMAPIv1 request (xapi's Sm_exec.call)."""
    command: str
    args: list[str] = field(default_factory=list)
    device_config: dict[str, str] = field(default_factory=dict)
    host_ref: str = NULL_REF
    sr_ref: str | None = None
    sr_uuid: str | None = None
    sr_sm_config: dict | None = None
    vdi_ref: str | None = None
    vdi_uuid: str | None = None
    vdi_location: str | None = None
    vdi_type: str | None = None
    vdi_sm_config: dict | None = None
    vdi_on_boot: str | None = None
    vdi_allow_caching: str | None = None
    driver_params: dict | None = None
    new_uuid: str | None = None
    subtask_of: str | None = None
    local_cache_sr: str | None = None
    session_ref: str | None = None

    def request(self) -> str:
        s: dict = {"host_ref": self.host_ref, "command": self.command, "args": [str(a) for a in self.args],
                   "device_config": {str(k): str(v) for k, v in self.device_config.items()}}
        for name in ("session_ref", "sr_sm_config", "sr_ref", "vdi_type", "sr_uuid", "vdi_ref", "vdi_location",
                     "vdi_uuid", "driver_params", "vdi_sm_config", "new_uuid", "subtask_of", "vdi_on_boot",
                     "vdi_allow_caching", "local_cache_sr"):
            v = getattr(self, name)
            if v is not None:
                s[name] = {str(k): str(x) for k, x in v.items()} if isinstance(v, dict) else str(v)
        return xmlrpc.client.dumps((s,), self.command)


def backend_failure(status: str, stdout: str, stderr: str) -> XapiError:
    return XapiError("SR_BACKEND_FAILURE", status, stdout, stderr)


def map_fault(call: Call, code: int, reason: str, stderr: str) -> Exception:
    if code == 38:
        return NotImplementedInBackend(call.command)
    if code == 39:
        return XapiError("SR_NOT_EMPTY")
    if code == 24:
        return XapiError("VDI_IN_USE")
    if code == 16:
        return XapiError("SR_DEVICE_IN_USE")
    if code == 144:
        return XapiError("VDI_MISSING", call.sr_ref or "", call.vdi_ref or "")
    return XapiError(f"SR_BACKEND_FAILURE_{code}", "", reason, stderr)


def parse_response(call: Call, stdout: str, stderr: str):
    """The value of a driver's methodResponse, or the API error its fault maps to."""
    try:
        params, _ = xmlrpc.client.loads(stdout, use_builtin_types=True)
    except xmlrpc.client.Fault as f:
        code = f.faultCode if isinstance(f.faultCode, int) else _int(f.faultCode)
        raise map_fault(call, code, str(f.faultString), stderr) from None
    except Exception as e:  # noqa: BLE001 - expat errors, bad values: all "garbage"
        raise backend_failure(f"{type(e).__name__}: {e}", stdout, stderr) from None
    if len(params) != 1:
        raise XapiError("INTERNAL_ERROR", "Unexpected response from SM plugin")
    return params[0]


def _int(v) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name.lower()
    except ValueError:
        return str(n)


def is_python(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            first = f.readline(200)
    except OSError:
        return False
    return first.startswith(b"#!") and b"python" in first


class _Forked:
    """A driver process started by the fork server, with what _exec uses of asyncio's Process. Its
    exit code comes on its status pipe as it exits ("<code>\\n", written once its output is
    closed), which spares waiting for the exit's teardown and the server's report of it; a driver
    that dies without writing it (a signal) is known by the server's report."""

    def __init__(self, pid: int, stdout, stderr, done: asyncio.Future, status: int = -1) -> None:
        self.pid, self.stdout, self.stderr, self._done = pid, stdout, stderr, done
        self.returncode: int | None = None
        self._status = status

    async def wait(self) -> int:
        if self._status >= 0:
            fd, self._status = self._status, -1
            text = await _read_line(fd)
            if text.endswith(b"\n") and text[:-1].isdigit():
                self.returncode = int(text)
                return self.returncode
        self.returncode = await asyncio.shield(self._done)
        return self.returncode

    def __del__(self) -> None:
        if self._status >= 0:               # never waited for (its caller cancelled first)
            os.close(self._status)
            self._status = -1


async def _read_line(fd: int) -> bytes:
    """Reads the non-blocking pipe `fd` up to a newline or EOF (a grandchild may hold its write end
    open longer), then closes it."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    got = bytearray()

    def readable() -> None:
        try:
            data = os.read(fd, 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        got.extend(data)
        if (not data or b"\n" in data) and not done.done():
            done.set_result(None)
    try:
        loop.add_reader(fd, readable)
        try:
            await done
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)
    return bytes(got[:got.find(b"\n") + 1]) if b"\n" in got else bytes(got)


class _ForkServer:
    """The executor's end of xapi.sm.forkserver: Python drivers are forked from it, warm."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.sock: socket.socket | None = None
        self.proc = None
        self.broken = False
        self._next = 0
        self._replies: dict[int, asyncio.Future] = {}
        self._exits: dict[int, asyncio.Future] = {}
        self._early: dict[int, int] = {}
        self._starting: asyncio.Future | None = None
        self._loop = None

    async def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "xapi.sm.forkserver", str(theirs.fileno()), pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, env=self.env,
                start_new_session=True)
        finally:
            theirs.close()
        ours.setblocking(False)
        self.sock = ours
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(ours.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                msg = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                msg = b""
            if not msg:
                self._fail(ConnectionResetError("the SM fork server ended"))
                return
            m = json.loads(msg)
            if "id" in m:
                fut = self._replies.pop(m["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(m)
            else:
                fut = self._exits.pop(m["pid"], None)
                if fut is None:
                    self._early[m["pid"]] = m["status"]
                elif not fut.done():
                    fut.set_result(m["status"])
                if self.broken and not self._exits and not self._replies:
                    self._fail(ConnectionResetError("closed"))     # closed, and the last one ended
                    return

    def _fail(self, exc: BaseException) -> None:
        self.broken = True
        if self.sock is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        for fut in self._replies.values():
            if not fut.done():
                fut.set_exception(OSError(str(exc)))
                fut.exception()
        # drivers whose end the server can no longer report: killed, and reported so
        for pid, fut in self._exits.items():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            if not fut.done():
                fut.set_result(-signal.SIGKILL)
        self._replies.clear()
        self._exits.clear()

    async def spawn(self, path: str, argv: list[str], env: dict[str, str]) -> _Forked:
        if self.sock is not None and self._loop is not asyncio.get_running_loop():
            self._fail(ConnectionResetError("another event loop"))     # a server per loop
            self.broken = False
        if self.sock is None:
            starting = self._starting
            if starting is None:
                starting = self._starting = asyncio.ensure_future(self._start())
            try:
                await asyncio.shield(starting)
            finally:
                if starting.done() and self._starting is starting:
                    self._starting = None
            if self.sock is None:
                raise OSError("the SM fork server is not running")
        loop = asyncio.get_running_loop()
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        st_r, st_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)     # the exit code, as the driver exits
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._next += 1
        rid = self._next
        reply = self._replies[rid] = loop.create_future()
        try:
            msg = json.dumps({"id": rid, "path": path, "argv": argv, "env": env}).encode()
            self.sock.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                       array.array("i", [null, out_w, err_w, st_w]))])
        except OSError as e:
            self._replies.pop(rid, None)
            for fd in (out_r, err_r, st_r):
                os.close(fd)
            self._fail(e)
            raise
        finally:
            for fd in (null, out_w, err_w, st_w):
                os.close(fd)
        try:
            m = await reply
            if "error" in m:
                raise OSError(m["error"])
        except BaseException:
            for fd in (out_r, err_r, st_r):
                os.close(fd)
            raise
        pid = m["pid"]
        done = loop.create_future()
        if pid in self._early:
            done.set_result(self._early.pop(pid))
        else:
            self._exits[pid] = done
        return _Forked(pid, _PipeReader(out_r), _PipeReader(err_r), done, st_r)

    def close(self) -> None:
        """No more drivers; the server ends (it sees EOF) once the running ones have been reported."""
        self.broken = True
        if self.sock is not None and not self._exits and not self._replies:
            self._fail(ConnectionResetError("closed"))


class _PipeReader:
    """The read end of a forked driver's pipe, owned here alone and closed once: `read()` gives all
    until EOF, then closes it. Not loop.connect_read_pipe(os.fdopen(fd)): uvloop gives the number to
    libuv, which closes it, and the file object closes it again (MagicStack/uvloop#763); a file
    another thread opened in between (a disk a mirror reads) loses its descriptor, whose number a
    pipe then takes: pread/pwrite fail with ESPIPE."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd

    async def read(self) -> bytes:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        chunks: list[bytes] = []

        def readable() -> None:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return
            except OSError as e:
                data, error = b"", e
            else:
                error = None
            if data:
                chunks.append(data)
            elif done.done():
                pass
            elif error is not None:
                done.set_exception(error)
            else:
                done.set_result(None)

        try:
            loop.add_reader(self.fd, readable)
            try:
                await done
            finally:
                loop.remove_reader(self.fd)
            return b"".join(chunks)
        finally:
            self.close()

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        self.close()        # a read that never ran (its caller cancelled first): still closed once


class Executor:
    """Finds and runs the drivers. `session` is an async context manager factory giving a fresh
    session ref for one call (xapi logs an internal superuser session in and out per call)."""

    def __init__(self, drivers_dir: str | None = None, *, socket_path: str = "", data_dir: str = "",
                 concurrency: int = 4, timeout: float | None = None, session=None) -> None:
        self.drivers_dir = drivers_dir or os.environ.get("XAPI_SM_DIR") or DRIVERS_DIR
        self.socket_path = socket_path
        self.data_dir = data_dir
        self.timeout = timeout if timeout is not None else float(os.environ.get("XAPI_SM_TIMEOUT", "600"))
        self.session = session
        self._sem = asyncio.Semaphore(max(1, concurrency))
        self.drivers: dict[str, DriverInfo] = {}
        self._procs: set = set()
        self.closed = False
        self.calls = 0
        # Python drivers are forked from a warm interpreter (XAPI_SM_FORK=0: a fresh one each time)
        self._forks = None if os.environ.get("XAPI_SM_FORK", "1") == "0" else _ForkServer(self._env())

    # -- the drivers folder --------------------------------------------------------------------
    def executables(self) -> dict[str, str]:
        """type -> path of every executable `<Type>SR` in the folder."""
        out: dict[str, str] = {}
        try:
            names = sorted(os.listdir(self.drivers_dir))
        except OSError as e:
            log.error("cannot read the SM drivers folder %s: %s", self.drivers_dir, e)
            return out
        for name in names:
            path = os.path.join(self.drivers_dir, name)
            if len(name) > 2 and name.endswith("SR") and os.path.isfile(path) and os.access(path, os.X_OK):
                out[name[:-2].lower()] = path
        return out

    async def scan(self) -> dict[str, DriverInfo]:
        """Asks each driver (new or changed since the last scan) for its information; drops the ones
        that went away or fail. Returns type -> DriverInfo."""
        found = self.executables()
        current: dict[str, DriverInfo] = {}
        todo = []
        for ty, path in found.items():
            try:
                mtime = os.stat(path).st_mtime
            except OSError:
                continue
            known = self.drivers.get(ty)
            if known is not None and known.path == path and known.mtime == mtime:
                current[ty] = known
            else:
                todo.append((ty, path, mtime))
        results = await asyncio.gather(*(self._driver_info(ty, path, mtime) for ty, path, mtime in todo),
                                       return_exceptions=True)
        for (ty, path, _), r in zip(todo, results):
            if isinstance(r, BaseException):
                log.error("rejecting SM plugin %s (%s): %s", ty, path, r)
            else:
                current[ty] = r
        self.drivers = current
        return current

    async def _driver_info(self, ty: str, path: str, mtime: float) -> DriverInfo:
        v = await self.call(path, Call("sr_get_driver_info"), needs_session=False)
        if not isinstance(v, dict):
            raise ValueError(f"sr_get_driver_info returned {type(v).__name__}")
        config = {}
        for kv in v.get("configuration", []):
            config[str(kv["key"])] = str(kv["description"])
        return DriverInfo(type=ty, path=path, name=str(v["name"]), description=str(v["description"]),
                          vendor=str(v["vendor"]), copyright=str(v["copyright"]),
                          version=str(v["driver_version"]), required_api_version=str(v["required_api_version"]),
                          capabilities=[str(c) for c in v.get("capabilities", [])], configuration=config,
                          mtime=mtime)

    def driver(self, sr_type: str) -> DriverInfo:
        d = self.drivers.get(sr_type.lower())
        if d is None:
            raise XapiError("SR_UNKNOWN_DRIVER", sr_type)
        return d

    # -- one call ------------------------------------------------------------------------------
    async def run(self, sr_type: str, call: Call):
        """Runs `call` on the driver of `sr_type` with a fresh session."""
        return await self.call(self.driver(sr_type).path, call)

    async def call(self, path: str, call: Call, *, needs_session: bool = True):
        if self.closed:
            raise XapiError("INTERNAL_ERROR", "the storage layer is shutting down")
        if needs_session and self.session is not None:
            async with self.session(call.sr_ref) as session_ref:
                call.session_ref = session_ref
                return await self._exec(path, call)
        return await self._exec(path, call)

    def _env(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "ORIGINATOR": "SM",
               "XAPI_SOCKET": self.socket_path, "XAPI_DATA_DIR": self.data_dir, "LANG": "C.UTF-8",
               "PYTHONPATH": os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)}
        for key in ("XAPI_PURE", "TMPDIR"):
            if key in os.environ:
                env[key] = os.environ[key]
        return env

    async def _exec(self, path: str, call: Call):
        request = call.request()
        python = is_python(path)
        argv = [sys.executable, path, request] if python else [path, request]
        async with self._sem:
            self.calls += 1
            started = time.monotonic()
            proc = None
            if python and self._forks is not None and not self._forks.broken:
                try:
                    proc = await self._forks.spawn(path, argv, self._env())
                except OSError as e:
                    log.warning("SM fork server: %s; starting drivers afresh", e)
            if proc is None:
                try:
                    proc = await asyncio.create_subprocess_exec(
                        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                        stderr=asyncio.subprocess.PIPE, env=self._env(), start_new_session=True)
                except OSError as e:
                    raise backend_failure(f"cannot run {path}: {e}", "", "") from None
            self._procs.add(proc)
            readers = asyncio.gather(proc.stdout.read(), proc.stderr.read())
            timed_out = False
            try:
                await asyncio.wait_for(proc.wait(), self.timeout)
            except asyncio.TimeoutError:
                self._kill(proc)
                timed_out = True
            except BaseException:
                self._kill(proc)
                readers.cancel()
                raise
            finally:
                self._procs.discard(proc)
            try:
                out, err = await asyncio.wait_for(readers, 5)
            except asyncio.TimeoutError:       # a grandchild outside the group holds the pipes
                out, err = b"", b""
        stdout = out.decode("utf-8", "replace")
        stderr = err.decode("utf-8", "replace")
        if timed_out:
            raise backend_failure(f"timed out after {self.timeout:g}s", stdout, stderr)
        log.debug("SM %s %s: %.3fs, exit %s", os.path.basename(path), call.command,
                  time.monotonic() - started, proc.returncode)
        if proc.returncode:
            status = (f"received signal: {_signal_name(-proc.returncode)}" if proc.returncode < 0
                      else "non-zero exit")
            raise backend_failure(status, stdout, stderr)
        return parse_response(call, stdout, stderr)

    @staticmethod
    def _kill(proc) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def close(self) -> None:
        """No more calls; running drivers are killed."""
        self.closed = True
        for proc in list(self._procs):
            self._kill(proc)
        if self._forks is not None:
            self._forks.close()
