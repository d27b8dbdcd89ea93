"""Thousands of waiting event.from long polls never slow other calls."""
import json
import resource
import socket
import statistics
import time
import xmlrpc.client

N_POLLS = 2000


def request(path: bytes, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (path, len(body), body)


def read_reply(s) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, body = buf.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        body += s.recv(65536)
    return head


def rpc_latency(port: int, body: bytes, n: int) -> list[float]:
    s = socket.create_connection(("127.0.0.1", port))
    out = []
    req = request(b"/jsonrpc", body)
    for _ in range(n):
        t0 = time.perf_counter()
        s.sendall(req)
        read_reply(s)
        out.append(time.perf_counter() - t0)
    s.close()
    return out


def test_thousands_of_long_polls_do_not_slow_other_calls(fresh_daemon):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, N_POLLS + 500)), hard))
    d = fresh_daemon()
    proxy = xmlrpc.client.ServerProxy(d.url)
    sid = proxy.session.login_with_password("root", d.password)["Value"]
    vm = proxy.VM.get_all(sid)["Value"][0]
    token = getattr(proxy.event, "from")(sid, ["vm"], "", 0.0)["Value"]["token"]
    read = json.dumps({"jsonrpc": "2.0", "method": "VM.get_record", "params": [sid, vm], "id": 1}).encode()

    before = rpc_latency(d.http_port, read, 300)

    poll = request(b"/jsonrpc", json.dumps({"jsonrpc": "2.0", "method": "event.from",
                                            "params": [sid, ["vm"], token, 60.0], "id": 2}).encode())
    polls = []
    try:
        for _ in range(N_POLLS):
            s = socket.create_connection(("127.0.0.1", d.http_port))
            s.sendall(poll)
            polls.append(s)
        time.sleep(1.0)
        during = rpc_latency(d.http_port, read, 300)
        print(f"median call latency: {statistics.median(before) * 1e6:.0f} us idle, "
              f"{statistics.median(during) * 1e6:.0f} us with {N_POLLS} long polls waiting")
        assert statistics.median(during) < max(3 * statistics.median(before), 0.002), (before[:5], during[:5])

        # one write wakes them all, and every poll answers with the change
        proxy.VM.set_name_label(sid, vm, "wake up")
        deadline = time.monotonic() + 30
        answered = 0
        for s in polls:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            assert read_reply(s).startswith(b"HTTP/1.1 200")
            answered += 1
        assert answered == N_POLLS
    finally:
        for s in polls:
            s.close()
    assert d.alive()
