"""Xen Orchestra's connector (npm `xen-api`, under node) as a test client: one node process running
tests/js/xo_connect.mjs against a daemon, its JSON lines read by a thread into a queue."""
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

JS = Path(__file__).resolve().parents[1] / "js"
NODE = shutil.which("node")
HAVE_XO = NODE is not None and (JS / "node_modules" / "xen-api").is_dir()
WHY_NOT = "needs node and tests/js/node_modules (make test runs tools/node-deps.sh)"


class XoClient:
    """One node process running xo_connect.mjs; its JSON lines are read by a thread into a queue."""

    def __init__(self, d, transport, mode="watch", password=None, max_seconds=30):
        self.stderr = tempfile.TemporaryFile(mode="w+")
        args = [NODE, str(JS / "xo_connect.mjs"), d.url, "root",
                d.password if password is None else password, transport, mode, str(max_seconds)]
        self.proc = subprocess.Popen(args, cwd=JS, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, bufsize=1)
        self.lines = queue.Queue()
        self.seen = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                msg = {"event": "unparsed", "line": line}
            self.lines.put((time.monotonic(), msg))
        self.lines.put((time.monotonic(), {"event": "eof"}))

    def expect(self, event, timeout, where=lambda msg: True):
        """The next line of this kind that `where` accepts, as (arrival time, message)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                at, msg = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {event!r} within {timeout}s; {self.report()}") from None
            self.seen.append(msg)
            if msg["event"] == event and where(msg):
                return at, msg
            if msg["event"] in ("eof", "timeout") or (msg["event"] == "error" and event != "error"):
                raise AssertionError(f"{msg} while waiting for {event!r}; {self.report()}")

    def send(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def report(self):
        self.stderr.seek(0)
        seen = "\n".join(json.dumps(m)[:400] for m in self.seen[-10:])
        return f"lines seen:\n{seen}\nnode stderr:\n{self.stderr.read()[-3000:]}"

    def close(self):
        """`quit`, then SIGKILL by pid if it is still there after 5 s; returns the exit status."""
        try:
            if self.proc.poll() is None:
                self.send("quit")
            return self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            return None
        finally:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.reader.join(5)
            for f in (self.proc.stdin, self.proc.stdout, self.stderr):
                try:
                    f.close()
                except OSError:
                    pass
