"""H1 rpc_small_keepalive: small XenAPI calls per second over keep-alive connections.

The server under test runs pinned to CPU 1, the C load generator (bench/loadgen.c) to CPU 0.
Every case runs BENCH_SECONDS (default 5) after a BENCH_WARMUP (default 1) second warm-up,
with 1 and 16 connections:

  limit     uvloop + httptools answering a constant 200 (no body parsing): the practical limit
  threaded  stdlib SimpleXMLRPCServer + ThreadingMixIn over HTTP/1.1 (a thread per connection, like xapi)
  ours-xml  the real daemon (`xapi serve`), VM.get_power_state as XML-RPC POST /
  ours-json the real daemon, VM.get_power_state as JSON-RPC v2 POST /jsonrpc

If the daemon cannot be started, that is said plainly and the baselines are still reported; the
script exits non-zero only when a baseline fails.  Internally the script also serves as the
baseline servers: `h1_rpc_small.py --serve limit|threaded` prints its port and serves.
"""
import http.client
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import xmlrpc.client

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from bench.common import pin, report, run_main  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
WARMUP = float(os.environ.get("BENCH_WARMUP", "1"))
CONNS = (1, 16)
SERVER_CPU, CLIENT_CPU = 1, 0
LOADGEN_SRC = HERE / "loadgen.c"
LOADGEN = HERE / "loadgen"

POWER_STATE = "Running"
# the reply the fixed-response server sends: the same XML-RPC methodResponse the real call gets
FIXED_BODY = xmlrpc.client.dumps(({"Status": "Success", "Value": POWER_STATE},), methodresponse=True).encode()


# ---------------------------------------------------------------------------------------------
# baseline servers (run as children of this script, pinned to SERVER_CPU)

def serve_limit() -> None:
    """uvloop + httptools, replying a constant 200 to every request; the body is not looked at."""
    import asyncio
    import httptools
    import uvloop

    response = (b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n" % len(FIXED_BODY)
                + FIXED_BODY)

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)

        def data_received(self, data):
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

        def on_message_complete(self):
            self.transport.write(response)

    async def main():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        server = await asyncio.get_running_loop().create_server(Proto, sock=sock)
        print(sock.getsockname()[1], flush=True)
        await server.serve_forever()

    uvloop.install()
    asyncio.run(main())


def serve_threaded() -> None:
    """stdlib SimpleXMLRPCServer with a thread per connection, HTTP/1.1 keep-alive."""
    import socketserver
    from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

    class Handler(SimpleXMLRPCRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive; TCP_NODELAY is already the stdlib handler's default

    class Server(socketserver.ThreadingMixIn, SimpleXMLRPCServer):
        daemon_threads = True
        request_queue_size = 1024

        def handle_error(self, request, client_address):
            # the load generator leaves connections with a request in flight when it stops
            if not isinstance(sys.exc_info()[1], ConnectionError):
                super().handle_error(request, client_address)

    sessions = {os.environ["H1_SESSION"]}
    vms = {os.environ["H1_VM"]: {"power_state": POWER_STATE}}

    def get_power_state(session, ref):
        if session not in sessions:
            return {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", session]}
        vm = vms.get(ref)
        if vm is None:
            return {"Status": "Failure", "ErrorDescription": ["HANDLE_INVALID", "VM", ref]}
        return {"Status": "Success", "Value": vm["power_state"]}

    server = Server(("127.0.0.1", 0), requestHandler=Handler, logRequests=False, allow_none=True)
    server.register_function(get_power_state, "VM.get_power_state")
    print(server.server_address[1], flush=True)
    server.serve_forever()


# ---------------------------------------------------------------------------------------------
# process handling: every child is tracked and killed by pid on the way out

CHILDREN: list[subprocess.Popen] = []


def _pin_server():
    pin(SERVER_CPU)


def _pin_client():
    pin(CLIENT_CPU)


def stop(proc: subprocess.Popen, extra_pids=(), timeout: float = 5.0) -> bool:
    """SIGTERM the child (and any extra pids it reported, e.g. from a pid file), then SIGKILL after timeout.
    Returns False when SIGKILL was needed."""
    extra = [p for p in extra_pids if p and p != proc.pid]

    def running():
        return ([proc.pid] if proc.poll() is None else []) + [p for p in extra if _alive(p)]

    clean = True
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if sig == signal.SIGKILL and running():
            clean = False
        for pid in running():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while running() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not running():
            break
    if proc in CHILDREN:
        CHILDREN.remove(proc)
    return clean


def stop_children() -> None:
    for proc in list(CHILDREN):
        stop(proc)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_baseline(kind: str, env: dict) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, str(HERE / "h1_rpc_small.py"), "--serve", kind],
                            stdout=subprocess.PIPE, env={**os.environ, **env}, preexec_fn=_pin_server)
    CHILDREN.append(proc)
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        stop(proc)
        raise RuntimeError(f"{kind} server did not start (said {line!r})")
    return proc, int(line)


# ---------------------------------------------------------------------------------------------
# requests and the load generator

def http_request(path: str, body: bytes, content_type: str, port: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: h1-loadgen\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def xml_call(method: str, *params) -> bytes:
    return xmlrpc.client.dumps(params, method).encode()


def json_call(method: str, *params) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}).encode()


def post(port: int, path: str, body: bytes, content_type: str, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body, {"Content-Type": content_type})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def xml_rpc(port: int, method: str, *params):
    status, data = post(port, "/", xml_call(method, *params), "text/xml")
    if status != 200:
        raise RuntimeError(f"{method}: HTTP {status}: {data[:200]!r}")
    (result,), _ = xmlrpc.client.loads(data)
    return result


def ensure_loadgen() -> None:
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= LOADGEN_SRC.stat().st_mtime:
        return
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, "-O2", "-o", str(LOADGEN), str(LOADGEN_SRC)], check=True)


def run_load(port: int, request: bytes, conns: int, tmp: pathlib.Path, server_pids=()) -> dict:
    """Runs the load generator; returns its key=value line as a dict, plus CPU accounting:
    server_cpu (the server and its descendants) and others_cpu (everything else on the machine, e.g.
    other people's builds), each as a share of one core over the whole run, warm-up included."""
    req_file = tmp / f"req-{port}-{conns}.bin"
    req_file.write_bytes(request)
    out_file, err_file = tmp / "loadgen.out", tmp / "loadgen.err"
    cmd = [str(LOADGEN), "-H", "127.0.0.1", "-p", str(port), "-c", str(conns), "-d", str(SECONDS),
           "-w", str(WARMUP), "-t", "5", "-f", str(req_file)]
    pids = _with_descendants(server_pids)
    srv0, busy0, t0 = _cpu_ticks(pids), _busy_ticks(), time.monotonic()
    with open(out_file, "wb") as out, open(err_file, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, preexec_fn=_pin_client)
    try:
        deadline = t0 + SECONDS + WARMUP + 60
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                raise RuntimeError("loadgen did not finish")
            time.sleep(0.05)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    wall = time.monotonic() - t0
    srv1, busy1 = _cpu_ticks(pids), _busy_ticks()
    text = out_file.read_text()
    line = next((ln for ln in text.splitlines() if ln.startswith("loadgen ")), None)
    if line is None:
        raise RuntimeError(f"loadgen failed (rc {proc.returncode}): {err_file.read_text().strip()[:500]}")
    res = {}
    for kv in line.split()[1:]:
        k, _, v = kv.partition("=")
        try:
            res[k] = float(v) if "." in v else int(v)
        except ValueError:
            res[k] = v
    hz = os.sysconf("SC_CLK_TCK")
    client = ru.ru_utime + ru.ru_stime
    if srv0 is not None and srv1 is not None:
        server = (srv1 - srv0) / hz
        res["server_cpu"] = server / wall
        if busy0 is not None and busy1 is not None:
            res["others_cpu"] = max(0.0, ((busy1 - busy0) / hz - server - client) / wall)
    return res


def _with_descendants(pids) -> list[int]:
    """The given pids and all their descendants (a daemon may fork workers)."""
    children: dict[int, list[int]] = {}
    for d in pathlib.Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], list(pids)
    while todo:
        p = todo.pop()
        if p not in out:
            out.append(p)
            todo.extend(children.get(p, ()))
    return out


def _cpu_ticks(pids) -> int | None:
    """utime + stime of the pids (all their threads); None when the first one is gone."""
    total = 0
    for i, pid in enumerate(pids):
        try:
            fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            if i == 0:
                return None
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def _busy_ticks() -> int | None:
    """Non-idle time of the whole machine, from /proc/stat."""
    try:
        f = [int(x) for x in pathlib.Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(f[:8]) - f[3] - f[4]  # user nice system idle iowait irq softirq steal, minus idle+iowait


def line_for(case: str, conns: int, r: dict) -> str:
    cpu = f"  server cpu {r['server_cpu'] * 100:4.0f}%" if "server_cpu" in r else ""
    if "others_cpu" in r:
        cpu += f"  others {r['others_cpu'] * 100:3.0f}%"
    extra = ""
    if r.get("errors") or r.get("warmup_errors") or r.get("stuck_at_end"):
        extra = (f"  ERRORS {r['errors']} (non200 {r['non200']}, io {r['io_errors']}, timeouts {r['timeouts']},"
                 f" server closes {r['server_closes']}, warm-up {r['warmup_errors']}, stuck {r['stuck_at_end']})")
    return (f"H1   {case:10} {conns:2} conn  {r['rps']:>9,.0f} req/s  p50 {r['p50_us'] / 1e3:6.3f} ms"
            f"  p99 {r['p99_us'] / 1e3:6.3f} ms  max {r['max_us'] / 1e3:7.2f} ms"
            f"  client cpu {r['client_cpu'] * 100:3.0f}%{cpu}{extra}")


# ---------------------------------------------------------------------------------------------
# the daemon

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """`xapi serve` in a temporary data dir; start() raises RuntimeError with the reason if it can't."""

    def __init__(self, tmp: pathlib.Path):
        self.data = tmp / "xapi-data"
        self.data.mkdir()
        self.log = tmp / "xapi.log"
        self.password = "h1-" + uuid.uuid4().hex[:12]
        self.port = free_port()
        self.https_port = free_port()
        while self.https_port == self.port:
            self.https_port = free_port()
        self.proc = None
        self.pid_from_file = None

    def exe(self) -> str:
        cand = pathlib.Path(sys.executable).parent / "xapi"
        if not cand.exists():
            cand = ROOT / ".venv" / "bin" / "xapi"
        return str(cand)

    def start(self, timeout: float = 60.0) -> None:
        cmd = [self.exe(), "serve", "--data-dir", str(self.data), "--address", "127.0.0.1",
               "--http-port", str(self.port), "--https-port", str(self.https_port)]
        env = {**os.environ, "XAPI_ROOT_PASSWORD": self.password}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, preexec_fn=_pin_server, cwd=str(ROOT))
        CHILDREN.append(self.proc)
        deadline = time.monotonic() + timeout
        while True:
            self._read_pid()
            if self._answers():
                self._read_pid()
                return
            if self.proc.poll() is not None and not (self.pid_from_file and _alive(self.pid_from_file)):
                raise RuntimeError(f"`xapi serve` exited with status {self.proc.returncode} before answering on "
                                   f"port {self.port}; its output ends with:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"`xapi serve` did not answer HTTP on port {self.port} within {timeout:.0f} s;"
                                   f" its output ends with:\n{self.log_tail()}")
            time.sleep(0.2)

    def _read_pid(self) -> None:
        try:
            self.pid_from_file = int((self.data / "xapi.pid").read_text().strip())
        except (OSError, ValueError):
            pass

    def _answers(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            conn.request("GET", "/")
            conn.getresponse().read()
            conn.close()
            return True
        except (OSError, http.client.HTTPException):
            return False

    def pids(self) -> list[int]:
        return sorted({p for p in (self.pid_from_file, self.proc and self.proc.pid) if p and _alive(p)})

    def log_tail(self, n: int = 15) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return "    (no output)"
        return "\n".join("    " + ln for ln in lines) or "    (no output)"

    def stop(self) -> None:
        if self.proc is None:
            return
        self._read_pid()
        extra = [self.pid_from_file] if self.pid_from_file and self.pid_from_file != self.proc.pid else []
        t0 = time.monotonic()
        if not stop(self.proc, extra, timeout=10.0):
            print("H1   ours: the daemon ignored SIGTERM for 10 s and was killed with SIGKILL", flush=True)
        elif self.proc.returncode not in (0, -signal.SIGTERM, None):
            print(f"H1   ours: the daemon exited with status {self.proc.returncode} on SIGTERM"
                  f" (after {time.monotonic() - t0:.1f} s)", flush=True)
        self.proc = None
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return
        bad = [ln for ln in lines if "Traceback" in ln or " ERROR " in ln or " CRITICAL " in ln]
        if bad:
            print(f"H1   ours: the daemon logged {len(bad)} error line(s), first ones:", flush=True)
            for ln in bad[:5]:
                print("    " + ln[:200], flush=True)


def prepare_ours(d: Daemon) -> tuple[str, str]:
    """Logs in, finds a VM, checks one XML-RPC and one JSON-RPC VM.get_power_state; returns (session, vm)."""
    r = xml_rpc(d.port, "session.login_with_password", "root", d.password)
    if not isinstance(r, dict) or r.get("Status") != "Success":
        raise RuntimeError(f"session.login_with_password failed: {r!r}")
    session = r["Value"]
    r = xml_rpc(d.port, "VM.get_all", session)
    if not isinstance(r, dict) or r.get("Status") != "Success" or not r.get("Value"):
        raise RuntimeError(f"VM.get_all gave no VM: {r!r}")
    vm = r["Value"][0]
    r = xml_rpc(d.port, "VM.get_power_state", session, vm)
    if not isinstance(r, dict) or r.get("Status") != "Success" or not isinstance(r.get("Value"), str):
        raise RuntimeError(f"XML-RPC VM.get_power_state gave {r!r}")
    status, data = post(d.port, "/jsonrpc", json_call("VM.get_power_state", session, vm), "application/json")
    if status != 200:
        raise RuntimeError(f"JSON-RPC VM.get_power_state: HTTP {status}: {data[:200]!r}")
    j = json.loads(data)
    if j.get("error") is not None or not isinstance(j.get("result"), str) or j.get("id") != 1:
        raise RuntimeError(f"JSON-RPC VM.get_power_state gave {j!r}")
    print(f"H1   ours: logged in, VM {vm} power state {r['Value']!r} (XML-RPC) / {j['result']!r} (JSON-RPC)",
          flush=True)
    return session, vm


# ---------------------------------------------------------------------------------------------

def main() -> int:
    ensure_loadgen()
    results: dict[tuple[str, int], dict] = {}
    baseline_failed = []
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="h1-"))
    fake_session = f"OpaqueRef:{uuid.uuid4()}"
    fake_vm = f"OpaqueRef:{uuid.uuid4()}"
    baseline_req = xml_call("VM.get_power_state", fake_session, fake_vm)
    print(f"H1   {SECONDS:g} s per case after {WARMUP:g} s warm-up; server on CPU {SERVER_CPU}, "
          f"loadgen on CPU {CLIENT_CPU}; XML-RPC request {len(http_request('/', baseline_req, 'text/xml', 65535))} B",
          flush=True)

    def run_case(name: str, port: int, request: bytes, pids) -> bool:
        ok = True
        for conns in CONNS:
            r = run_load(port, request, conns, tmp, pids)
            results[name, conns] = r
            print(line_for(name, conns, r), flush=True)
            ok = ok and r["requests"] > 0 and not r["errors"]
        return ok

    try:
        # 1. the limit
        try:
            proc, port = start_baseline("limit", {})
            try:
                status, data = post(port, "/", baseline_req, "text/xml")
                if status != 200 or data != FIXED_BODY:
                    raise RuntimeError(f"limit server answered HTTP {status} {data[:100]!r}")
                if not run_case("limit", port, http_request("/", baseline_req, "text/xml", port), [proc.pid]):
                    baseline_failed.append("limit")
            finally:
                stop(proc)
        except Exception as e:  # noqa: BLE001 - report and go on with the other cases
            print(f"H1   limit: FAILED: {e}", flush=True)
            baseline_failed.append("limit")

        # 2. the threaded stdlib baseline
        try:
            proc, port = start_baseline("threaded", {"H1_SESSION": fake_session, "H1_VM": fake_vm})
            try:
                (r,), _ = xmlrpc.client.loads(post(port, "/", baseline_req, "text/xml")[1])
                if r != {"Status": "Success", "Value": POWER_STATE}:
                    raise RuntimeError(f"threaded server answered {r!r}")
                if not run_case("threaded", port, http_request("/", baseline_req, "text/xml", port), [proc.pid]):
                    baseline_failed.append("threaded")
            finally:
                stop(proc)
        except Exception as e:  # noqa: BLE001
            print(f"H1   threaded: FAILED: {e}", flush=True)
            baseline_failed.append("threaded")

        # 3. ours
        d = Daemon(tmp)
        try:
            try:
                d.start()
                session, vm = prepare_ours(d)
            except Exception as e:  # noqa: BLE001
                print(f"H1   ours: NOT MEASURED, the daemon could not be started or answered wrongly: {e}",
                      flush=True)
            else:
                xml_req = http_request("/", xml_call("VM.get_power_state", session, vm), "text/xml", d.port)
                json_req = http_request("/jsonrpc", json_call("VM.get_power_state", session, vm),
                                        "application/json", d.port)
                for name, req in (("ours-xml", xml_req), ("ours-json", json_req)):
                    try:
                        run_case(name, d.port, req, d.pids())
                    except Exception as e:  # noqa: BLE001
                        print(f"H1   {name}: FAILED: {e}", flush=True)
                    if not d.pids():
                        print(f"H1   ours: the daemon died during the {name} run; its output ends with:\n"
                              f"{d.log_tail()}", flush=True)
                        break
        finally:
            d.stop()

        summarize(results)
    finally:
        stop_children()
        shutil.rmtree(tmp, ignore_errors=True)

    if baseline_failed:
        print(f"H1   baseline failed: {', '.join(baseline_failed)}", flush=True)
        return 1
    return 0


def summarize(results: dict) -> None:
    busy = max((r.get("others_cpu", 0.0) for r in results.values()), default=0.0)
    if busy > 0.15:
        print(f"H1   WARNING: other processes used up to {busy * 100:.0f}% of a core during these runs;"
              " the figures (and ratios) are unreliable, rerun on a quiet machine", flush=True)
    lim, thr = results.get(("limit", 16)), results.get(("threaded", 16))
    lim1, thr1 = results.get(("limit", 1)), results.get(("threaded", 1))
    for name, label in (("ours-xml", "XML-RPC"), ("ours-json", "JSON-RPC")):
        o, o1 = results.get((name, 16)), results.get((name, 1))
        if o is None:
            continue
        if thr:
            report("H1", f"{label} 16 conn req/s vs threaded", o["rps"], thr["rps"], "threaded",
                   unit="req/s", higher_is_better=True, target=">= 6x")
        if lim:
            report("H1", f"{label} 16 conn req/s vs limit", o["rps"], lim["rps"], "limit",
                   unit="req/s", higher_is_better=True, target=">= 0.45x")
        if thr:
            report("H1", f"{label} 16 conn p99 vs threaded", o["p99_us"] / 1e6, thr["p99_us"] / 1e6, "threaded",
                   unit="s", target="ours < 1 ms" + (" MET" if o["p99_us"] < 1000 else " MISSED"))
        if o1 and thr1:
            report("H1", f"{label} 1 conn req/s vs threaded (context)", o1["rps"], thr1["rps"], "threaded",
                   unit="req/s", higher_is_better=True)
        if o1 and lim1:
            report("H1", f"{label} 1 conn req/s vs limit (context)", o1["rps"], lim1["rps"], "limit",
                   unit="req/s", higher_is_better=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
        {"limit": serve_limit, "threaded": serve_threaded}[sys.argv[2]]()
        sys.exit(0)
    run_main("H1", main, stop_children)
