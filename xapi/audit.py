"""The audit log: one line per call that changes something and per RBAC denial, in `<data>/audit.log`.

    2025-06-01T10:00:00.123Z user="root" from=10.0.0.5 call=VM.set_name_label args={"self":"OpaqueRef:…","value":"web"} result=OK
    2025-06-01T10:00:01.456Z user="root" from=10.0.0.5 call=session.login_with_password args={"uname":"root","pwd":"******","version":"1.0","originator":"xo"} result=ERROR SESSION_AUTHENTICATION_FAILED
    2025-06-01T10:00:02.789Z user="alice" from=10.0.0.6 call=VM.destroy args={"self":"OpaqueRef:…"} result=DENIED vm.destroy

Fields, in this order, separated by one space:
  * the time the call finished, ISO 8601 in UTC with milliseconds;
  * user=  the session's user name as a JSON string; "root (local)" for callers on the local Unix
    socket without a session and for nameless superuser sessions; for logins, the name given;
  * from=  the caller's address ("local" for the Unix socket);
  * call=  the wire name of the call ("Async.VM.start" for the task form: its line says the task started);
  * args=  the arguments but the session, as a JSON object keyed by parameter name, secrets replaced
    by "******" (see `mask`); long strings and lists are shortened;
  * result= the rest of the line: OK, ERROR <code>, or DENIED <permission>.

Like xapi's rbac_audit (which writes s-expressions with the session's track id, subject and the
ALLOWED/DENIED and OK/ERROR outcome), reads are not logged; unlike it, a line never holds a session ref.

Lines are put on a queue on the event loop and written by a QueueListener thread into a size-rotated
file (10 MiB x 5 old files by default), so a slow disk never stalls a call.
"""
from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import queue

MASK = "******"
MAX_STRING = 256          # characters kept of one string argument
MAX_ITEMS = 64            # elements kept of one list / entries of one map
MAX_ARGS = 8192           # characters kept of the whole args field

_SECRET_WORDS = ("password", "pwd", "passwd", "secret", "private_key")
_SECRET_NAMES = frozenset({"pass"})


def is_secret_name(name) -> bool:
    """A parameter name or map key whose value must not be logged: pwd, password, new_pwd, old_pwd,
    master_password, *_secret, private_key, "pass" (external auth config), cifs-password, ..."""
    if type(name) is not str:
        return False
    n = name.lower()
    return any(w in n for w in _SECRET_WORDS) or n in _SECRET_NAMES or n.endswith(("_pass", "-pass"))


def _clip(value, secret_value_key: bool):
    """A copy of an argument fit for the log: map entries with secret keys masked, strings shortened."""
    t = type(value)
    if t is str:
        return value if len(value) <= MAX_STRING else f"{value[:MAX_STRING]}…[{len(value)} chars]"
    if t is dict:
        out = {}
        for i, (k, v) in enumerate(value.items()):
            if i == MAX_ITEMS:
                out["…"] = f"[{len(value)} entries]"
                break
            key = str(k)
            out[key] = MASK if is_secret_name(key) or (secret_value_key and key == "value") \
                else _clip(v, secret_value_key)
        return out
    if t is list or t is tuple:
        items = [_clip(v, secret_value_key) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"…[{len(value)} items]")
        return items
    if value is None or t is bool or t is int or t is float:
        return value
    if t is bytes:
        return f"[{len(value)} bytes]"
    return _clip(str(value), secret_value_key)


def mask(cls: str, names, values) -> dict:
    """The arguments of a call of class `cls` as {name: value} with secrets masked: parameters named like
    a secret, `value` of secret.*, map entries whose key is a secret name (recursively; in secret.*
    records, `value` too), and `value` of add_to_*(key, value) calls whose key names a secret."""
    in_secret = cls == "secret"
    out = {}
    for name, value in zip(names, values):
        if is_secret_name(name) or (in_secret and name == "value"):
            out[name] = MASK
        else:
            out[name] = _clip(value, in_secret)
    if "value" in out and is_secret_name(out.get("key")):
        out["value"] = MASK
    return out


# JSON escapes control characters but not the other characters str.splitlines breaks at.
_LINE_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).translate(_LINE_BREAKS)


def line(user: str, peer: str, call: str, args: dict, result: str) -> str:
    """One audit line without its time stamp."""
    text = _json(args)
    if len(text) > MAX_ARGS:
        text = text[:MAX_ARGS] + "…"
    return f"user={_json(user)} from={peer or '-'} call={call} args={text} result={result}"


def is_audited(entry) -> bool:
    """Calls that may change something: not the accessors' reads, not explicit get_* calls (get_record,
    get_all_records_where, session.get_*, task.get_*, host.get_server_certificate, ...), not event.*,
    not system.listMethods."""
    m = entry.message
    if m is None or entry.readonly:
        return False
    return not (m.name.startswith("get_") or m.cls == "event")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        t = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        return f"{t.strftime('%Y-%m-%dT%H:%M:%S')}.{t.microsecond // 1000:03d}Z {record.getMessage()}"


class AuditLog:
    """Writes audit lines from the event loop without touching the disk there."""

    is_audited = staticmethod(is_audited)

    def __init__(self, path: str, max_bytes: int = 10 << 20, backups: int = 5) -> None:
        self.path = path
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._file = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups,
                                                          encoding="utf-8", delay=True)
        self._file.setFormatter(_Formatter())
        self._listener = logging.handlers.QueueListener(self._queue, self._file)
        # A logger of our own, outside the logging tree: nothing else sees or reconfigures it.
        self._logger = logging.Logger("xapi.audit", logging.INFO)
        self._logger.propagate = False
        self._logger.addHandler(logging.handlers.QueueHandler(self._queue))
        self._running = False

    def start(self) -> None:
        if not self._running:
            self._listener.start()
            self._running = True

    def stop(self) -> None:
        """Writes what is queued, then closes the file."""
        if self._running:
            self._running = False
            self._listener.stop()
        self._file.close()

    def write(self, user: str, peer: str, call: str, args: dict, result: str) -> None:
        self._logger.info("%s", line(user, peer, call, args, result))

    # -- the RPC layer's side ------------------------------------------------------------------
    def who(self, ctx, entry, params) -> str:
        """Who makes this call: look it up before the call runs (a logout destroys its session)."""
        if entry.skip:
            s = None
            if params and type(params[0]) is str:
                s = ctx.app.sessions.by_ref.get(params[0])
            if s is None:
                return "(no session)"
            return s.user or ("root (local)" if s.superuser else "(unknown)")
        if getattr(ctx, "local", False):
            return "root (local)"
        names = [p.name for p in entry.message.params] if entry.message is not None else []
        if "uname" in names and len(params) > names.index("uname"):
            uname = params[names.index("uname")]
            return _clip(uname, False) if type(uname) is str else str(uname)
        return "(none)"

    def _args(self, entry, params) -> dict:
        m = entry.message
        if m is None:
            return {}
        return mask(m.cls, [p.name for p in m.params], params[entry.skip:])

    def ok(self, ctx, who: str, entry, params) -> None:
        try:
            self.write(who, getattr(ctx, "peer", ""), entry.name, self._args(entry, params), "OK")
        except Exception:  # noqa: BLE001 - the audit never fails a call
            logging.getLogger("xapi").exception("audit: cannot log %s", entry.name)

    def failed(self, ctx, who, entry, params, error) -> None:
        """A call that ended with XapiError `error`; `who` is None for calls not audited otherwise
        (reads: only their RBAC denials get here)."""
        try:
            if who is None:
                who = self.who(ctx, entry, params)
            if error.code == "RBAC_PERMISSION_DENIED":
                result = f"DENIED {error.params[0] if error.params else '?'}"
            else:
                result = f"ERROR {error.code}"
            self.write(who, getattr(ctx, "peer", ""), entry.name, self._args(entry, params), result)
        except Exception:  # noqa: BLE001
            logging.getLogger("xapi").exception("audit: cannot log %s", entry.name)
