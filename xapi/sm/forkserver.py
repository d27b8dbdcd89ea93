"""Starts Python storage drivers by fork from a warm interpreter.

A driver is still one process per operation, run as ``<driver> <request>`` with its own session,
process group, environment and pipes; only the interpreter's start and the imports of the drivers'
modules (xapi.sm.driverlib, filesr, isosr, vhd) are done once, here, instead of for every operation.
That start was most of a driver run, and a VDI transfer makes four (attach, activate, deactivate,
detach).

The executor (xapi.sm.exec) runs ``python -m xapi.sm.forkserver FD``, FD one end of a
SOCK_SEQPACKET socket pair. Each request is one JSON message ``{"id", "path", "argv", "env"}`` with
three descriptors (stdin, stdout, stderr) passed along (SCM_RIGHTS); the answer is ``{"id", "pid"}``
(or ``{"id", "error"}``), and when a driver ends, ``{"pid", "status"}`` (the exit code, or minus
the signal that killed it). The server ends when the executor's end closes.
"""
from __future__ import annotations

import array
import gc
import json
import os
import selectors
import signal
import socket
import sys

MAX_MESSAGE = 1 << 20


# runpy.run_path imports pkgutil and weakref on its first use: done here, not in every child
PRELOAD = ("xapi.sm.driverlib", "xapi.sm.filesr", "xapi.sm.isosr", "xapi.sm.vhd", "runpy", "traceback",
           "pkgutil", "weakref")


def _preload() -> None:
    for name in PRELOAD:
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - a driver that needs it will say so itself
            pass
    # the first request decoded and answer encoded set up expat and caches: once, here
    try:
        from xapi.sm import smrpc
        smrpc.loads(smrpc.dumps_call("sr_get_driver_info", ({"command": "sr_get_driver_info", "args": []},)))
        smrpc.loads(smrpc.dumps_response({"a": [1, "b", True]}))
    except Exception:  # noqa: BLE001
        pass
    # what is loaded now stays out of the collector: a child's collection would otherwise touch
    # (and so copy) every inherited page
    gc.collect()
    gc.freeze()


def _child(sock: socket.socket, own: list, path: str, argv: list, env: dict, fds: list) -> None:
    """In the forked child: become the driver process; never returns."""
    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        sock.close()
        for fd in own:                      # the server's wake-up pipe and selector
            os.close(fd)
        for i, fd in enumerate(fds):
            os.dup2(fd, i)
            os.close(fd)
        os.environ.clear()
        os.environ.update(env)
        sys.argv = list(argv[1:])
        import runpy
        try:
            runpy.run_path(path, run_name="__main__")
            code = 0
        except SystemExit as e:
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:  # noqa: BLE001 - reported as a Python process would
            import traceback
            traceback.print_exc()
            code = 1
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except Exception:  # noqa: BLE001
                pass
    finally:
        os._exit(code & 0xFF)


def serve(fd: int) -> None:
    _preload()
    sock = socket.socket(fileno=fd)
    rd, wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    sel.register(rd, selectors.EVENT_READ)
    fd_size = array.array("i").itemsize
    while True:
        for key, _ in sel.select():
            if key.fileobj is rd:
                try:
                    os.read(rd, 4096)
                except BlockingIOError:
                    pass
                _reap(sock)
                continue
            try:
                msg, anc, _flags, _addr = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(3 * fd_size))
            except InterruptedError:
                continue
            if not msg:
                return                      # the executor is gone: so are we
            fds: list = []
            req = None
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    a = array.array("i")
                    a.frombytes(data[:len(data) - len(data) % fd_size])
                    fds.extend(a)
            try:
                req = json.loads(msg)
                if len(fds) != 3:
                    raise ValueError(f"3 descriptors expected, {len(fds)} given")
                pid = os.fork()
                if pid == 0:
                    own = [rd, wake] + ([sel.fileno()] if hasattr(sel, "fileno") else [])
                    _child(sock, own, req["path"], req["argv"], req["env"], fds)
                reply = {"id": req["id"], "pid": pid}
            except Exception as e:  # noqa: BLE001 - answered, the server goes on
                reply = {"id": req.get("id") if isinstance(req, dict) else None, "error": str(e)}
            finally:
                for f in fds:
                    os.close(f)
            sock.send(json.dumps(reply).encode())
            _reap(sock)


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        sock.send(json.dumps({"pid": pid, "status": code}).encode())


if __name__ == "__main__":
    serve(int(sys.argv[1]))
