"""Starts Python storage drivers by fork from a warm interpreter.

A driver is still one process per operation, run as ``<driver> <request>`` with its own session,
process group, environment and pipes; only the interpreter's start and the imports of the drivers'
modules (xapi.sm.driverlib, filesr, isosr, vhd) are done once, here, instead of for every operation.
That start was most of a driver run, and a VDI transfer makes four (attach, activate, deactivate,
detach). The next driver process is even forked ahead of its request, while no driver runs, and
warmed (a *spare*: the pages a driver run touches first are copied before anyone waits for it); the
request is handed to it over its own channel, and a spare whose server ends ends too.

The executor (xapi.sm.exec) runs ``python -m xapi.sm.forkserver FD``, FD one end of a
SOCK_SEQPACKET socket pair. Each request is one JSON message ``{"id", "path", "argv", "env"}`` with
three descriptors (stdin, stdout, stderr) passed along (SCM_RIGHTS), and optionally a fourth, a pipe
on which the driver writes its exit code (``"<code>\\n"``) as it exits, once its output is closed;
the answer is ``{"id", "pid"}`` (or ``{"id", "error"}``), and when a driver ends, ``{"pid",
"status"}`` (the exit code, or minus the signal that killed it). The server ends when the
executor's end closes.
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


def _detach(own: list) -> None:
    """In a forked child: its own session and process group, the server's descriptors and signal
    handling dropped."""
    os.setsid()
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in own:                          # the executor's socket, the wake-up pipe, the selector
        os.close(fd)


def _run_driver(path: str, argv: list, env: dict, fds: list) -> None:
    """In the forked child: become the driver process; never returns."""
    code = 1
    status = fds[3] if len(fds) > 3 else -1
    try:
        if status >= 0:
            os.set_inheritable(status, False)     # the driver's own children don't get it
        for i, fd in enumerate(fds[:3]):
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
        # the output ends, and the exit code goes out, now: not after the exit has unmapped the
        # process's memory and the server has been told
        for fd in (1, 2):
            try:
                os.close(fd)
            except OSError:
                pass
        if status >= 0:
            try:
                os.write(status, b"%d\n" % (code & 0xFF))
            except OSError:
                pass
    finally:
        os._exit(code & 0xFF)


def _warm() -> None:
    """In a spare: the pages a driver run touches first (decoding its request, dispatching it,
    encoding the answer) copied now, while nothing waits for it: a driver's answer to
    sr_get_driver_info (no side effect), written to nowhere."""
    try:
        from xapi.sm import driverlib, smrpc
        from xapi.sm.filesr import EXTSR
        request = smrpc.dumps_call("sr_get_driver_info", ({"command": "sr_get_driver_info", "args": [],
                                                           "device_config": {"SRmaster": "true"}},))
        out, sys.stdout = sys.stdout, open(os.devnull, "w")
        try:
            driverlib.run(EXTSR, ["warm", request])
        finally:
            sys.stdout.close()
            sys.stdout = out
    except Exception:  # noqa: BLE001 - only a warm-up
        pass


def _receive(chan: socket.socket, fd_size: int) -> tuple[bytes, list]:
    msg, anc, _flags, _addr = chan.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(4 * fd_size))
    fds: list = []
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(data[:len(data) - len(data) % fd_size])
            fds.extend(a)
    return msg, fds


def _fork_spare(own: list, fd_size: int) -> tuple[int, socket.socket] | None:
    """A child forked ahead of the next request, warmed, waiting on its own channel for the one
    request it will run (the fork and the first touches of memory are then off the request's
    path). None if it can't be made (requests are then forked as they come)."""
    try:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except OSError:
        return None
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        return None
    if pid == 0:
        try:
            ours.close()
            _detach(own)
            _warm()
            while True:
                try:
                    msg, fds = _receive(theirs, fd_size)
                    break
                except InterruptedError:
                    continue
            theirs.close()
            if msg and len(fds) in (3, 4):
                req = json.loads(msg)
                _run_driver(req["path"], req["argv"], req["env"], fds)
        finally:
            os._exit(0)                     # the server is gone (or sent garbage): nothing to run
    theirs.close()
    return pid, ours


def serve(fd: int) -> None:
    _preload()
    sock = socket.socket(fileno=fd)
    rd, wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    sel.register(rd, selectors.EVENT_READ)
    own = [sock.fileno(), rd, wake] + ([sel.fileno()] if hasattr(sel, "fileno") else [])
    fd_size = array.array("i").itemsize
    spare: tuple[int, socket.socket] | None = None
    unused: set[int] = set()                # spares never handed a request: their end isn't reported
    running: set[int] = set()               # drivers not reaped yet
    while True:
        # a new spare only while no driver runs: its fork must not slow one down
        if spare is None and not running:
            spare = _fork_spare(own, fd_size)
            if spare is not None:
                unused.add(spare[0])
        for key, _ in sel.select():
            if key.fileobj is rd:
                try:
                    os.read(rd, 4096)
                except BlockingIOError:
                    pass
                gone = _reap(sock, unused, running)
                if spare is not None and spare[0] in gone:
                    spare[1].close()
                    spare = None
                continue
            try:
                msg, fds = _receive(sock, fd_size)
            except InterruptedError:
                continue
            if not msg:
                return                      # the executor is gone: so are we (the spare sees it)
            req = None
            try:
                req = json.loads(msg)
                if len(fds) not in (3, 4):
                    raise ValueError(f"3 or 4 descriptors expected, {len(fds)} given")
                pid = None
                if spare is not None:
                    spid, chan = spare
                    spare = None
                    try:
                        chan.sendmsg([json.dumps({"path": req["path"], "argv": req["argv"],
                                                  "env": req["env"]}).encode()],
                                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
                        pid = spid
                        unused.discard(spid)
                    except OSError:         # it died: forked afresh below
                        pass
                    finally:
                        chan.close()
                if pid is None:
                    pid = os.fork()
                    if pid == 0:
                        _detach(own)
                        _run_driver(req["path"], req["argv"], req["env"], fds)
                running.add(pid)
                reply = {"id": req["id"], "pid": pid}
            except Exception as e:  # noqa: BLE001 - answered, the server goes on
                reply = {"id": req.get("id") if isinstance(req, dict) else None, "error": str(e)}
            finally:
                for f in fds:
                    os.close(f)
            sock.send(json.dumps(reply).encode())
            _reap(sock, unused, running)


def _reap(sock: socket.socket, unused: set, running: set) -> set:
    """Reaps the ended children, reports the drivers' ends; returns the pids reaped."""
    gone = set()
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return gone
        if pid == 0:
            return gone
        gone.add(pid)
        running.discard(pid)
        if pid in unused:
            unused.discard(pid)
            continue
        code = os.waitstatus_to_exitcode(status)
        sock.send(json.dumps({"pid": pid, "status": code}).encode())


if __name__ == "__main__":
    serve(int(sys.argv[1]))
