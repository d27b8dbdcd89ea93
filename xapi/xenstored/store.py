"""The xenstore database with C xenstored's semantics, and no I/O.

* Nodes have a value (bytes), permissions and an ordered list of children.
  Writing a node creates its missing parents; new nodes inherit the
  permissions of their parent (an unprivileged domain owns what it creates).
  The tree starts as C xenstored's does: ``/``, ``/tool``, ``/tool/xenstored``
  and the special nodes ``@introduceDomain`` and ``@releaseDomain``, all
  ``n0``.
* Permissions are lists like ``n0 r5``: the first names the owner (full
  access) and what every domain not listed gets; ``r`` read, ``w`` write,
  ``b`` both, ``n`` none.  Privileged connections (dom0, and every socket
  connection) may do anything.  A missing node under a parent the caller may
  not access answers EACCES, not ENOENT.
* Watches fire on every write, mkdir (of a new node), rm and set-perms of the
  node or a descendant; removing a subtree fires each removed node's exact
  watches.  Registering a watch fires it once.  Relative watches get
  relative paths.  ``@introduceDomain`` / ``@releaseDomain`` fire on
  introduce / release (and domain shutdown).
* Transactions are optimistic, as in C xenstored: every node a transaction
  touches (read, written, or a parent changed by creating or removing a
  child) is remembered with its generation when first seen; the commit fails
  with EAGAIN if any of them changed meanwhile.  Inside a transaction the
  nodes already seen keep the value seen.  Watch events of a transaction fire
  when it commits.
* No quotas.

Everything runs in the caller's thread: use one Store from one thread (the
event loop's).  Failures raise ``xapi.xenstore_errors.XenstoreError``.
"""
import errno
import logging
import os
import re
from collections import deque
from typing import NamedTuple

from xapi.xenstore_errors import XenstoreError
from xapi.xenstored import protocol as P

log = logging.getLogger("xapi.xenstored")

PERM_NONE = 0
PERM_READ = 1
PERM_WRITE = 2
PERM_OWNER = 4
_ALL = PERM_READ | PERM_WRITE | PERM_OWNER
_LETTERS = {"n": PERM_NONE, "r": PERM_READ, "w": PERM_WRITE, "b": PERM_READ | PERM_WRITE}
_LETTER_OF = {v: k for k, v in _LETTERS.items()}

SPECIAL_NODES = ("@introduceDomain", "@releaseDomain")
_VALID_PATH = re.compile(r"[A-Za-z0-9/_@-]*\Z")
_LOCAL_DOMAIN = re.compile(r"/local/domain/(\d{1,5})/")


def _fail(code: int, what: str):
    raise XenstoreError(code, f"{what}: {os.strerror(code)}")


class Perm(NamedTuple):
    """One permission entry: ``access`` (PERM_* bits) for domain ``domid``."""
    access: int
    domid: int

    def __str__(self):
        return f"{_LETTER_OF[self.access]}{self.domid}"


def parse_perm(text: str) -> Perm:
    """``n0``, ``r5``, ``w7``, ``b12``; anything else is EINVAL."""
    if not isinstance(text, str) or len(text) < 2 or text[0] not in _LETTERS or not text[1:].isdigit() \
            or not text[1:].isascii():
        _fail(errno.EINVAL, f"bad permission {text!r}")
    domid = int(text[1:])
    if domid > 0xFFFF:
        _fail(errno.EINVAL, f"bad permission {text!r}")
    return Perm(_LETTERS[text[0]], domid)


def parse_perms(spec) -> tuple:
    """Permissions from ``"n0 r5"``, ``["n0", "r5"]`` or Perm tuples; at least one."""
    if isinstance(spec, str):
        spec = spec.replace(",", " ").split()
    out = tuple(p if isinstance(p, Perm) else parse_perm(p) for p in spec)
    if not out:
        _fail(errno.EINVAL, "no permissions")
    return out


def format_perms(perms) -> list:
    return [str(p) for p in perms]


def get_parent(path: str) -> str:
    i = path.rfind("/", 1)
    return path[:i] if i > 0 else "/"


def basename(path: str) -> str:
    return path[path.rfind("/") + 1:]


def child_path(parent: str, name: str) -> str:
    return "/" + name if parent == "/" else f"{parent}/{name}"


def is_child(child: str, parent: str) -> bool:
    """True when `child` is `parent` or below it (everything is below "/")."""
    if parent == "/":
        return True
    return child.startswith(parent) and (len(child) == len(parent) or child[len(parent)] == "/")


class Node:
    """A node; never changed in place once stored (changes store a new Node),
    so transactions can keep references as snapshots."""
    __slots__ = ("value", "perms", "children", "generation")

    def __init__(self, value: bytes = b"", perms=(Perm(PERM_NONE, 0),), children=None, generation: int = 0):
        self.value = value
        self.perms = perms
        self.children = children if children is not None else {}  # name -> None, in creation order
        self.generation = generation

    def replace(self, **kw) -> "Node":
        n = Node(self.value, self.perms, self.children)
        for k, v in kw.items():
            setattr(n, k, v)
        return n

    @property
    def owner(self) -> int:
        return self.perms[0].domid


class Watch(NamedTuple):
    path: str        # canonical
    token: str
    prefix_len: int  # cut from event paths of a relative watch


class Transaction:
    __slots__ = ("id", "view", "accessed", "modified", "events")

    def __init__(self, tid: int):
        self.id = tid
        self.view = {}      # path -> Node or None (absent), as seen or written in the transaction
        self.accessed = {}  # path -> (generation or None, perms or None) when first seen
        self.modified = {}  # ordered set of paths written or removed
        self.events = {}    # path -> exact, watch events to fire at commit


class Domain:
    __slots__ = ("domid", "introduced", "shutdown", "port", "mfn", "target")

    def __init__(self, domid: int):
        self.domid = domid
        self.introduced = False
        self.shutdown = False
        self.port = 0
        self.mfn = 0
        self.target = None


class Connection:
    """One client of the store: a socket connection (dom0), or an in-process
    session of a domain.  ``sink(path, token)`` receives watch events."""

    def __init__(self, store: "Store", domid: int = 0, sink=None, privileged=None):
        self.store = store
        self.domid = domid
        self.privileged = (domid == 0) if privileged is None else privileged
        self.implicit_path = f"/local/domain/{domid}"
        self.sink = sink
        self.watches = []
        self.transactions = {}
        self.next_tx_id = 1
        self.closed = False
        self.after_reply = []  # events owed once the current reply is out (a new watch's first event)
        store._attach(self)

    @property
    def target(self):
        d = self.store.domains.get(self.domid)
        return d.target if d is not None else None

    def deliver(self, path: str, token: str):
        if self.sink is not None and not self.closed:
            try:
                self.sink(path, token)
            except Exception:  # a broken consumer must not break the writer
                log.exception("xenstored: delivering a watch event to domain %d", self.domid)

    def flush_after_reply(self):
        pending, self.after_reply = self.after_reply, []
        for path, token in pending:
            self.deliver(path, token)

    def reset(self):
        """Drop every watch and transaction (XS_RESET_WATCHES, introduce, close)."""
        self.watches = []
        self.transactions.clear()
        self.store._watchers.discard(self)

    def close(self):
        if not self.closed:
            self.reset()
            self.closed = True
            self.store._detach(self)


class Store:
    """The database, its watches, transactions and domains."""

    def __init__(self):
        self.generation = 0
        self.nodes = {}
        self.connections = set()
        self._watchers = set()  # connections with at least one watch
        self.domains = {}
        root_perms = (Perm(PERM_NONE, 0),)
        for path, children in (("/", ("tool",)), ("/tool", ("xenstored",)), ("/tool/xenstored", ()),
                               ("@releaseDomain", ()), ("@introduceDomain", ())):
            self._put(path, Node(b"", root_perms, dict.fromkeys(children)), None)
        dom0 = self.domains[0] = Domain(0)
        dom0.introduced = True
        self._dom0 = Connection(self, 0)

    # -- connections ---------------------------------------------------------

    def _attach(self, conn: Connection):
        self.connections.add(conn)

    def _detach(self, conn: Connection):
        self.connections.discard(conn)
        self._watchers.discard(conn)

    # -- node access ---------------------------------------------------------

    def _fetch(self, path: str, tx):
        """The node at `path` as the caller sees it (None when absent); inside a
        transaction the first sight is remembered for the commit's check."""
        if tx is None:
            return self.nodes.get(path)
        try:
            return tx.view[path]
        except KeyError:
            pass
        node = self.nodes.get(path)
        tx.view[path] = node
        tx.accessed[path] = (node.generation, node.perms) if node is not None else (None, None)
        return node

    def _put(self, path: str, node, tx):
        """Store a new node at `path` (None removes it)."""
        if node is not None:
            self.generation += 1
            node.generation = self.generation
        if tx is None:
            if node is None:
                self.nodes.pop(path, None)
            else:
                self.nodes[path] = node
        else:
            if path not in tx.view:
                self._fetch(path, tx)
            tx.view[path] = node
            tx.modified[path] = None

    def canonicalize(self, conn: Connection, path, allow_special: bool = False) -> str:
        """The absolute path a request names: relative paths are below the
        connection's /local/domain/<domid>; EINVAL for bad characters, "//",
        a trailing "/", an empty path, "@..." where not allowed, or too long."""
        what = f"bad path {str(path)[:64]!r}"
        if path is None or not isinstance(path, str) or not _VALID_PATH.match(path) \
                or (path[:1] == "@" and not allow_special):
            _fail(errno.EINVAL, what)
        name = path if path[:1] in ("/", "@") else f"{conn.implicit_path}/{path}"
        if (name.endswith("/") and name != "/") or "//" in name or len(name) > P.ABS_PATH_MAX:
            _fail(errno.EINVAL, what)
        if not conn.privileged:
            m = _LOCAL_DOMAIN.match(name)
            if len(name) - (m.end() if m else 0) > P.REL_PATH_MAX:
                _fail(errno.EINVAL, what)
        return name

    def perm_for(self, conn: Connection, perms) -> int:
        """What `conn` may do with a node of permissions `perms` (PERM_* bits)."""
        if conn.privileged:
            return _ALL
        target = conn.target
        if perms[0].domid == conn.domid or (target is not None and perms[0].domid == target):
            return _ALL
        for p in perms[1:]:
            if p.domid == conn.domid or (target is not None and p.domid == target):
                return p.access
        return perms[0].access

    def _parent_perm(self, conn, tx, name) -> int:
        """What `conn` may do with the nearest existing ancestor of `name`."""
        while name != "/":
            name = get_parent(name)
            node = self._fetch(name, tx)
            if node is not None:
                return self.perm_for(conn, node.perms)
        return PERM_NONE

    def _get_checked(self, conn, tx, name: str, need: int, what: str) -> Node:
        """The node, if it exists and `conn` has all of `need` on it; otherwise
        ENOENT or EACCES, EACCES whenever the nearest ancestor does not grant
        `need` (callers learn nothing about nodes they may not see)."""
        node = self._fetch(name, tx)
        if node is not None and (self.perm_for(conn, node.perms) & need) == need:
            return node
        code = errno.ENOENT if node is None else errno.EACCES
        if not conn.privileged and not (self._parent_perm(conn, tx, name) & need):
            code = errno.EACCES
        _fail(code, f"{what} {name}")

    # -- watches ---------------------------------------------------------------

    def _watch_permitted(self, conn, name, node, old_perms) -> bool:
        if conn.privileged:
            return True
        if old_perms is not None and self.perm_for(conn, old_perms) & PERM_READ:
            return True
        if node is None:
            node = self.nodes.get(name)
            if node is None:
                return False
        if self.perm_for(conn, node.perms) & PERM_READ:
            return True
        parent = self.nodes.get(get_parent(name))
        return parent is not None and bool(self.perm_for(conn, parent.perms) & PERM_READ)

    def _fire(self, tx, name: str, exact: bool, node=None, old_perms=None):
        """Watch events for a change of `name`: watches on it or an ancestor,
        or (exact) only watches on `name` itself.  Queued in a transaction."""
        if tx is not None:
            prev = tx.events.get(name)
            tx.events[name] = exact if prev is None else (prev and exact)
            return
        for conn in list(self._watchers):
            if not self._watch_permitted(conn, name, node, old_perms):
                continue
            for w in conn.watches:
                if (name == w.path) if exact else is_child(name, w.path):
                    conn.deliver(name[w.prefix_len:], w.token)

    def fire_special(self, name: str):
        """Fire the watches on a special node (@introduceDomain, @releaseDomain)."""
        node = self.nodes.get(name)
        if node is not None:
            self._fire(None, name, True, node)

    # -- operations (a connection and a transaction or None) -------------------

    def op_read(self, conn, tx, path) -> bytes:
        name = self.canonicalize(conn, path)
        return self._get_checked(conn, tx, name, PERM_READ, "read").value

    def op_directory(self, conn, tx, path) -> Node:
        name = self.canonicalize(conn, path)
        return self._get_checked(conn, tx, name, PERM_READ, "directory")

    def op_get_perms(self, conn, tx, path) -> tuple:
        name = self.canonicalize(conn, path, allow_special=True)
        return self._get_checked(conn, tx, name, PERM_READ, "get_perms").perms

    def op_write(self, conn, tx, path, value: bytes):
        name = self.canonicalize(conn, path)
        if len(value) > P.PAYLOAD_MAX:  # only in-process writes can try: it could never be read back
            _fail(errno.E2BIG, f"write {name}: {len(value)}-byte value")
        try:
            node = self._get_checked(conn, tx, name, PERM_WRITE, "write")
        except XenstoreError as e:
            if e.errno != errno.ENOENT:
                raise
            node = self._create(conn, tx, name, value)
        else:
            node = node.replace(value=value)
            self._put(name, node, tx)
        self._fire(tx, name, False, node)

    def op_mkdir(self, conn, tx, path):
        name = self.canonicalize(conn, path)
        try:
            self._get_checked(conn, tx, name, PERM_WRITE, "mkdir")
        except XenstoreError as e:
            if e.errno != errno.ENOENT:
                raise
            node = self._create(conn, tx, name, b"")
            self._fire(tx, name, False, node)

    def _create(self, conn, tx, name: str, value: bytes) -> Node:
        missing = [name]
        parent_name = get_parent(name)
        while True:
            parent = self._fetch(parent_name, tx)
            if parent is not None:
                break
            if parent_name == "/":  # cannot happen: the root always exists
                _fail(errno.EIO, f"write {name}: no root node")
            missing.append(parent_name)
            parent_name = get_parent(parent_name)
        missing.reverse()  # top-most new node first
        self._put(parent_name, parent.replace(children={**parent.children, basename(missing[0]): None}), tx)
        perms = parent.perms
        if not conn.privileged:
            perms = (Perm(perms[0].access, conn.domid),) + tuple(perms[1:])
        node = None
        for i, path in enumerate(missing):
            last = i == len(missing) - 1
            node = Node(value if last else b"", perms, {} if last else {basename(missing[i + 1]): None})
            self._put(path, node, tx)
        return node

    def op_rm(self, conn, tx, path):
        name = self.canonicalize(conn, path)
        try:
            node = self._get_checked(conn, tx, name, PERM_WRITE, "rm")
        except XenstoreError as e:
            # gone already: fine, if the parent exists
            if e.errno == errno.ENOENT and self._fetch(get_parent(name), tx) is not None:
                return
            raise
        if name == "/":
            _fail(errno.EINVAL, "rm /")
        self._remove(tx, name, node)

    def _remove(self, tx, name: str, node: Node):
        parent_name = get_parent(name)
        parent = self._fetch(parent_name, tx)
        # post-order, without recursion (paths may be ~1500 levels deep)
        stack = [(name, node, iter(list(node.children)))]
        while stack:
            path, n, it = stack[-1]
            child = next(it, None)
            if child is not None:
                cpath = child_path(path, child)
                cnode = self._fetch(cpath, tx)
                if cnode is not None:
                    stack.append((cpath, cnode, iter(list(cnode.children))))
                continue
            stack.pop()
            self._put(path, None, tx)
            self._fire(tx, path, path != name, n)
        if parent is not None:
            children = dict(parent.children)
            children.pop(basename(name), None)
            self._put(parent_name, parent.replace(children=children), tx)

    def op_set_perms(self, conn, tx, path, perms):
        perms = parse_perms(perms)
        name = self.canonicalize(conn, path, allow_special=True)
        node = self._get_checked(conn, tx, name, PERM_WRITE | PERM_OWNER, "set_perms")
        if not conn.privileged and perms[0].domid != node.owner:
            _fail(errno.EPERM, f"set_perms {name}: only a privileged domain may change the owner")
        new = node.replace(perms=perms)
        self._put(name, new, tx)
        self._fire(tx, name, False, new, node.perms)

    def op_watch(self, conn, path, token: str) -> Watch:
        """Add a watch; its first event is queued in conn.after_reply."""
        relative = path[:1] not in ("/", "@") if isinstance(path, str) else False
        name = self.canonicalize(conn, path, allow_special=True)
        for w in conn.watches:
            if w.path == name and w.token == token:
                _fail(errno.EEXIST, f"watch {name} {token}")
        w = Watch(name, token, len(conn.implicit_path) + 1 if relative else 0)
        conn.watches.append(w)
        self._watchers.add(conn)
        conn.after_reply.append((name[w.prefix_len:], token))
        return w

    def op_unwatch(self, conn, path, token: str):
        name = self.canonicalize(conn, path, allow_special=True)
        for i, w in enumerate(conn.watches):
            if w.path == name and w.token == token:
                del conn.watches[i]
                if not conn.watches:
                    self._watchers.discard(conn)
                return
        _fail(errno.ENOENT, f"unwatch {name} {token}")

    def op_transaction_start(self, conn, tx) -> int:
        if tx is not None:
            _fail(errno.EBUSY, "transaction_start: nested transactions are not supported")
        tid = conn.next_tx_id
        while tid == 0 or tid in conn.transactions:
            tid = (tid + 1) & 0xFFFFFFFF
        conn.next_tx_id = (tid + 1) & 0xFFFFFFFF
        conn.transactions[tid] = Transaction(tid)
        return tid

    def op_transaction_end(self, conn, tx, commit: bool):
        if tx is None:
            _fail(errno.ENOENT, "transaction_end: no transaction")
        conn.transactions.pop(tx.id, None)
        if commit:
            self._commit(tx)

    def _commit(self, tx: Transaction):
        for path, (gen, _perms) in tx.accessed.items():
            cur = self.nodes.get(path)
            if (cur.generation if cur is not None else None) != gen:
                _fail(errno.EAGAIN, f"transaction_end {tx.id}: {path} changed meanwhile")
        for path in tx.modified:
            node = tx.view[path]
            if node is None:
                self.nodes.pop(path, None)
            else:
                self.generation += 1
                node.generation = self.generation
                self.nodes[path] = node
        for path, exact in tx.events.items():
            self._fire(None, path, exact, self.nodes.get(path), tx.accessed.get(path, (None, None))[1])

    # -- domains ---------------------------------------------------------------

    def _introduced(self, domid: int) -> Domain:
        d = self.domains.get(domid)
        if d is None or not d.introduced:
            _fail(errno.ENOENT, f"domain {domid} is not introduced")
        return d

    def op_introduce(self, domid: int, mfn: int = 0, port: int = 1):
        if port <= 0:
            _fail(errno.EINVAL, f"introduce {domid}: bad event channel {port}")
        if not 0 <= domid < P.DOMID_FIRST_RESERVED:
            _fail(errno.EINVAL, f"introduce {domid}: not a domain")
        d = self.domains.get(domid)
        first = d is None or not d.introduced
        if d is None:
            d = self.domains[domid] = Domain(domid)
        d.port, d.mfn = port, mfn
        for conn in list(self.connections):  # the domain's connection starts afresh
            if conn.domid == domid and conn is not self._dom0 and not conn.privileged:
                conn.reset()
        if first:
            d.introduced = True
            d.shutdown = False
            if domid != 0:
                self.fire_special("@introduceDomain")

    def op_release(self, domid: int):
        if domid == 0:
            _fail(errno.EINVAL, "release 0: dom0 cannot be released")
        self._introduced(domid)
        for conn in list(self.connections):
            if conn.domid == domid and conn is not self._dom0:
                conn.close()
        self._remove_owned(domid)
        del self.domains[domid]
        self.fire_special("@releaseDomain")

    def _remove_owned(self, domid: int):
        """Remove the nodes a vanished domain owns, as C xenstored does."""
        stack = ["/"]
        while stack:
            path = stack.pop()
            node = self.nodes.get(path)
            if node is None:
                continue
            if path != "/" and node.owner == domid:
                self._remove(None, path, node)
                continue
            stack.extend(child_path(path, c) for c in reversed(list(node.children)))
        for name in SPECIAL_NODES:
            node = self.nodes[name]
            if node.owner == domid:
                self._put(name, node.replace(perms=(Perm(node.perms[0].access, 0),) + tuple(node.perms[1:])), None)

    def op_resume(self, domid: int):
        if domid == 0:
            _fail(errno.EINVAL, "resume 0")
        self._introduced(domid).shutdown = False

    def op_set_target(self, domid: int, target: int):
        d = self._introduced(domid)
        self._introduced(target)
        d.target = target

    def is_domain_introduced(self, domid: int) -> bool:
        if domid == P.DOMID_SELF:
            return True
        d = self.domains.get(domid)
        return d is not None and d.introduced

    # -- the Python API (privileged, no transaction) ---------------------------

    def session(self, domid: int = 0, on_event=None) -> "Session":
        """An in-process connection acting as domain `domid` (dom0 is
        privileged; others are checked against permissions, and their relative
        paths are below /local/domain/<domid>)."""
        return Session(self, domid, on_event)

    def read(self, path: str) -> bytes:
        return self.op_read(self._dom0, None, path)

    def exists(self, path: str) -> bool:
        try:
            self.op_read(self._dom0, None, path)
            return True
        except XenstoreError as e:
            if e.errno == errno.ENOENT:
                return False
            raise

    def write(self, path: str, value=b"", perms=None):
        """Write `value` (bytes or str) at `path`, creating parents; with
        `perms` ("n0 r5", a list, ...) set the node's permissions too."""
        self.op_write(self._dom0, None, path, _as_bytes(value))
        if perms is not None:
            self.op_set_perms(self._dom0, None, path, perms)

    def mkdir(self, path: str, perms=None):
        self.op_mkdir(self._dom0, None, path)
        if perms is not None:
            self.op_set_perms(self._dom0, None, path, perms)

    def rm(self, path: str):
        self.op_rm(self._dom0, None, path)

    def directory(self, path: str) -> list:
        return list(self.op_directory(self._dom0, None, path).children)

    def get_perms(self, path: str) -> list:
        return format_perms(self.op_get_perms(self._dom0, None, path))

    def set_perms(self, path: str, perms):
        self.op_set_perms(self._dom0, None, path, perms)

    def introduce_domain(self, domid: int, mfn: int = 0, port: int = 1):
        """The domain's xenstore ring is up: fires @introduceDomain (once)."""
        self.op_introduce(domid, mfn, port)

    def release_domain(self, domid: int):
        """The domain is gone: drops its connections and the nodes it owns,
        fires @releaseDomain.  ENOENT if it was not introduced."""
        self.op_release(domid)

    def domain_shutdown(self, domid: int):
        """The domain shut down (still exists): fires @releaseDomain once, until
        the domain is resumed (XS_RESUME) and shuts down again."""
        d = self._introduced(domid)
        if not d.shutdown:
            d.shutdown = True
            self.fire_special("@releaseDomain")

    def populate_domain(self, domid: int, name: str, vm_uuid: str, memory_kb: int, vcpus: int,
                        vbds=(), vifs=(), **kw) -> str:
        """Write /local/domain/<domid> and friends as libxl does for a running
        domain; see xapi.xenstored.layout.populate_domain."""
        from xapi.xenstored.layout import populate_domain
        return populate_domain(self, domid, name, vm_uuid, memory_kb, vcpus, vbds, vifs, **kw)

    def remove_domain(self, domid: int):
        """Release the domain (if introduced) and remove what populate_domain wrote."""
        from xapi.xenstored.layout import remove_domain
        remove_domain(self, domid)

    def walk(self, path: str = "/"):
        """(path, Node) for `path` and every node below it, in pre-order."""
        stack = [path]
        while stack:
            p = stack.pop()
            node = self.nodes.get(p)
            if node is None:
                continue
            yield p, node
            stack.extend(child_path(p, c) for c in reversed(list(node.children)))

    def dump(self, path: str = "/") -> str:
        """The tree as ``path = "value"  (perms)`` lines, like ``xenstore-ls -f -p``."""
        lines = []
        for p, node in self.walk(path):
            lines.append(f'{p} = "{escape(node.value)}"  ({",".join(format_perms(node.perms))})')
        return "\n".join(lines) + "\n"


def escape(value: bytes) -> str:
    out = []
    for b in value:
        c = chr(b)
        if c == "\\":
            out.append("\\\\")
        elif c == '"':
            out.append('\\"')
        elif 0x20 <= b < 0x7F:
            out.append(c)
        else:
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r"}.get(c, f"\\x{b:02x}"))
    return "".join(out)


def _as_bytes(value) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"value must be bytes or str, not {type(value).__name__}")


class Session(Connection):
    """An in-process connection with the client API of ``xapi.xenstore``
    (``tx`` 0 outside a transaction).  Watch events go to ``on_event(path,
    token)`` when given, else into ``self.events`` (the latest 10000)."""

    def __init__(self, store: Store, domid: int = 0, on_event=None):
        self.events = deque(maxlen=10000)
        super().__init__(store, domid, on_event if on_event is not None else self._collect)

    def _collect(self, path, token):
        self.events.append((path, token))

    def _tx(self, tx: int):
        if self.closed:
            _fail(errno.EBADF, "the session is closed")
        if not tx:
            return None
        t = self.transactions.get(tx)
        if t is None:
            _fail(errno.ENOENT, f"no transaction {tx}")
        return t

    def read(self, path: str, tx: int = 0) -> bytes:
        return self.store.op_read(self, self._tx(tx), path)

    def write(self, path: str, value, tx: int = 0):
        self.store.op_write(self, self._tx(tx), path, _as_bytes(value))

    def mkdir(self, path: str, tx: int = 0):
        self.store.op_mkdir(self, self._tx(tx), path)

    def rm(self, path: str, tx: int = 0):
        self.store.op_rm(self, self._tx(tx), path)

    def directory(self, path: str, tx: int = 0) -> list:
        return list(self.store.op_directory(self, self._tx(tx), path).children)

    def get_perms(self, path: str, tx: int = 0) -> list:
        return format_perms(self.store.op_get_perms(self, self._tx(tx), path))

    def set_perms(self, path: str, perms, tx: int = 0):
        self.store.op_set_perms(self, self._tx(tx), path, perms)

    def exists(self, path: str, tx: int = 0) -> bool:
        try:
            self.read(path, tx)
            return True
        except XenstoreError as e:
            if e.errno == errno.ENOENT:
                return False
            raise

    def watch(self, path: str, token: str):
        self._tx(0)
        self.store.op_watch(self, path, token)
        self.flush_after_reply()

    def unwatch(self, path: str, token: str):
        self._tx(0)
        self.store.op_unwatch(self, path, token)

    def transaction_start(self) -> int:
        self._tx(0)
        return self.store.op_transaction_start(self, None)

    def transaction_end(self, tx: int, commit: bool = True):
        """Commit (or abort); a conflicting commit raises XenstoreError(EAGAIN)."""
        self.store.op_transaction_end(self, self._tx(tx) if tx else None, commit)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
