"""Garbage collection and coalescing of a file-based VHD SR (SM's ``cleanup.py``, FileSR flavour).

This module works on the files of one SR folder (``<location>.vhd``, as ``xapi.sm.filesr`` lays them
out) and knows nothing of the daemon: the daemon (``xapi.sm.gc_service``) runs it as a subprocess,
``python -m xapi.sm.gc --sr-path PATH [--protect LOC]... [--busy LOC]... [--leaf LOC]... [--steps N]``,
under the SR lock, tells it what only the database knows (which locations have a managed VDI record,
which VDIs are in use, which leaves may be leaf-coalesced), and reconciles the database afterwards
with an ``sr_scan``. It prints a JSON report on stdout.

The tree is built from the files alone: each VHD's parent is the file its parent locator names (the
footer's UUID is not the file name: snapshots hard-link files). Hidden VHDs are base copies. A step
is, first that can be done:

1. **garbage**: hidden VHDs whose whole subtree is hidden (no visible leaf reads through them) and
   that have no managed VDI record are removed, leaves first;
2. **coalesce**: a hidden VHD ``X`` with children whose parent ``P`` (hidden too) has ``X`` as its
   only child: ``X``'s data is written into ``P`` (grown first if smaller), ``X``'s children are
   relinked to ``P``, and ``X`` goes. The children keep their names, so every VDI keeps its file.
   Skipped while a VDI under ``X`` is in use (SM pauses the tapdisks instead);
3. **leaf-coalesce**: a visible leaf ``L`` (a VDI that is not attached) whose parent ``P`` is a hidden
   base copy with ``L`` as its only child: ``P`` is unhidden, ``L``'s data is written into ``P``,
   ``L.vhd`` is renamed ``OLD_L.vhd``, ``P.vhd`` is renamed ``L.vhd`` (the VDI's location now names
   the merged file) and ``OLD_L.vhd`` is removed. ``P``'s base-copy record goes with the next scan.

Each step is journalled in ``<sr>/.journal/<name>`` (JSON, written atomically) before anything is
changed and removed when done, and every file change is fsynced in order, so a process killed at
any point loses nothing; the next run (or the daemon, before any other operation on the SR) rolls
an unfinished step back or forward:

* coalesce, data phase: back (the parent only got sectors its single child shadows: nothing any
  reader sees changed); relink phase: forward (relink the children left, remove ``X``);
* leaf-coalesce: by which files exist, as SM's ``_handleInterruptedCoalesceLeaf``: before the
  first rename, back (hide ``P`` again); after it, forward (finish the renames, remove
  ``OLD_L.vhd``);
* garbage: forward (remove what is listed and still garbage).

A file that cannot be read stops all but the recovery (it might be anyone's child). Journal files
survive only while a step is unfinished; the folder goes when empty.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import struct
import sys
import time

from xapi.sm import vhd

JOURNAL_DIR = ".journal"
OLD_PREFIX = "OLD_"              # SM's TMP_RENAME_PREFIX for the old leaf during a leaf-coalesce
SECTOR = 512
MAX_STEPS = 1000

PLAT_MACX, PLAT_W2KU, PLAT_W2RU = vhd.PLAT_MACX, vhd.PLAT_W2KU, vhd.PLAT_W2RU


class GCError(Exception):
    """A VHD or journal the collector cannot handle."""


# --------------------------------------------------------------------------- fault injection
# Tests kill the collector at its n-th crash point (XAPI_GC_CRASH_AT=n) or at random times, with an
# optional pause at every point (XAPI_GC_PAUSE=seconds) to widen the windows.
_crash_at = int(os.environ.get("XAPI_GC_CRASH_AT", "0") or 0)
_pause = float(os.environ.get("XAPI_GC_PAUSE", "0") or 0)
_points = 0


def crash_point(name: str) -> None:
    global _points
    _points += 1
    if _pause:
        time.sleep(_pause)
    if _crash_at and _points == _crash_at:
        os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------- low-level VHD metadata
def _checksum(buf: bytes, at: int) -> int:
    return ~(sum(buf) - sum(buf[at:at + 4])) & 0xFFFFFFFF


def _footer_valid(buf: bytes) -> bool:
    return len(buf) == SECTOR and buf[:8] == vhd.FOOTER_COOKIE and \
        struct.unpack_from(">I", buf, vhd.FOOTER_CHECKSUM_AT)[0] == _checksum(buf, vhd.FOOTER_CHECKSUM_AT)


def _header_valid(buf: bytes) -> bool:
    return len(buf) == 1024 and buf[:8] == vhd.HEADER_COOKIE and \
        struct.unpack_from(">I", buf, vhd.HEADER_CHECKSUM_AT)[0] == _checksum(buf, vhd.HEADER_CHECKSUM_AT)


def _pread(fd: int, n: int, off: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = os.pread(fd, n - len(out), off + len(out))
        if not chunk:
            break
        out += chunk
    return out


def _pwrite(fd: int, data: bytes, off: int) -> None:
    mv = memoryview(data)
    while len(mv):
        n = os.pwrite(fd, mv, off)
        mv, off = mv[n:], off + n


def _locator_space(loc) -> int:
    """Bytes reserved for a locator's data (data_space is sectors per the spec, bytes for blktap)."""
    space = loc[1]
    if space < SECTOR:
        return space * SECTOR
    return space if space % SECTOR == 0 else 0


def _decode_locator(code: int, raw: bytes) -> str | None:
    try:
        if code == PLAT_MACX:
            text = raw.decode("utf-8")
            return text[len("file://"):] if text.startswith("file://") else None
        text = raw.decode("utf-16-le").replace("\\", "/")
        return text[2:] if text[:2].lower() == "c:" else text
    except UnicodeDecodeError:
        return None


def _encode_locator(code: int, name: str) -> bytes:
    """The locator data blktap writes for a parent ``name`` in the child's folder."""
    if code == PLAT_MACX:
        return ("file://./" + name).encode("utf-8")
    return (".\\" + name).encode("utf-16-le")


def _read_meta(fd: int):
    """(footer, footer offset or None when only the copy at 0 is good, header or None)."""
    size = os.fstat(fd).st_size
    if size < SECTOR:
        raise GCError("too small to be a VHD")
    at = size - SECTOR
    buf = _pread(fd, SECTOR, at)
    if not _footer_valid(buf):
        at, buf = None, _pread(fd, SECTOR, 0)
        if not _footer_valid(buf):
            raise GCError("no valid footer")
    f = vhd.Footer.unpack(buf)
    h = None
    if f.disk_type != vhd.TYPE_FIXED:
        hbuf = _pread(fd, 1024, f.data_offset)
        if not _header_valid(hbuf):
            raise GCError("invalid dynamic header")
        h = vhd.Header.unpack(hbuf)
    return f, at, h


class Node:
    """One VHD file of the SR, read without opening its parent."""

    __slots__ = ("loc", "path", "hidden", "virtual_size", "physical", "disk_type", "parent", "foreign_parent",
                 "children", "uuid")

    def __init__(self, loc: str, path: str) -> None:
        self.loc, self.path = loc, path
        self.parent: str | None = None          # the parent's location (file name without .vhd)
        self.foreign_parent = False              # a parent outside the folder, or one we cannot name
        self.children: list[str] = []

    def to_json(self) -> dict:
        return {"hidden": self.hidden, "parent": self.parent, "children": sorted(self.children),
                "virtual_size": self.virtual_size, "physical": self.physical}


def read_node(path: str) -> Node:
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    node = Node(name[:-4] if name.endswith(".vhd") else name, os.path.abspath(path))
    fd = os.open(path, os.O_RDONLY)
    try:
        f, _, h = _read_meta(fd)
        node.hidden = bool(f.hidden)
        node.virtual_size = f.current_size
        node.physical = os.fstat(fd).st_size
        node.disk_type = f.disk_type
        node.uuid = f.uuid
        if f.disk_type == vhd.TYPE_DIFF:
            pname = None
            for code in (PLAT_MACX, PLAT_W2KU, PLAT_W2RU):
                for loc in h.locators:
                    if loc[0] == code and loc[2]:
                        pname = _decode_locator(code, _pread(fd, loc[2], loc[4]))
                        if pname:
                            break
                if pname:
                    break
            if not pname:
                pname = h.parent_name.decode("utf-16-be", "replace").split("\0", 1)[0] or None
            target = os.path.normpath(os.path.join(folder, pname)) if pname else None
            if target is None or os.path.dirname(target) != folder or not target.endswith(".vhd"):
                node.foreign_parent = True
            else:
                node.parent = os.path.basename(target)[:-4]
    finally:
        os.close(fd)
    return node


def set_hidden(path: str, hidden: bool) -> None:
    """blktap's hidden flag, written in both footers, without opening the parent."""
    fd = os.open(path, os.O_RDWR)
    try:
        f, at, _ = _read_meta(fd)
        if at is None:
            raise GCError(f"{path}: the footer at the end of the file is damaged")
        if bool(f.hidden) == bool(hidden):
            return
        f.hidden = int(bool(hidden))
        buf = f.pack()
        if f.disk_type != vhd.TYPE_FIXED:
            _pwrite(fd, buf, 0)
        _pwrite(fd, buf, at)
        os.fsync(fd)
    finally:
        os.close(fd)


def relink_check(child_path: str, parent_path: str) -> None:
    """Raises GCError unless relink(child, parent) can be done in place."""
    fd = os.open(child_path, os.O_RDONLY)
    try:
        f, _, h = _read_meta(fd)
        if f.disk_type != vhd.TYPE_DIFF:
            raise GCError(f"{child_path}: not a differencing VHD")
        name = os.path.basename(parent_path)
        if len(name.encode("utf-16-be")) > 512:
            raise GCError(f"{parent_path}: name too long")
        for loc in h.locators:
            if loc[0] in (PLAT_MACX, PLAT_W2KU, PLAT_W2RU) and \
                    len(_encode_locator(loc[0], name)) > _locator_space(loc):
                raise GCError(f"{child_path}: no room in its parent locator for {name}")
    finally:
        os.close(fd)


def relink(child_path: str, parent_path: str) -> None:
    """Makes ``parent_path`` (in the same folder) the parent of ``child_path`` (vhd-util's
    ``modify -p``): parent UUID, timestamp and name in the header, and the parent locators; the
    locator data first, then the header, then fsync. Idempotent."""
    relink_check(child_path, parent_path)
    pfd = os.open(parent_path, os.O_RDONLY)
    try:
        pf, _, _ = _read_meta(pfd)
        pmtime = os.fstat(pfd).st_mtime
    finally:
        os.close(pfd)
    name = os.path.basename(parent_path)
    fd = os.open(child_path, os.O_RDWR)
    try:
        f, _, h = _read_meta(fd)
        for loc in h.locators:
            if loc[0] in (PLAT_MACX, PLAT_W2KU, PLAT_W2RU):
                raw = _encode_locator(loc[0], name)
                _pwrite(fd, raw.ljust(_locator_space(loc), b"\0"), loc[4])
                loc[2] = len(raw)
        h.parent_uuid = pf.uuid
        h.parent_timestamp = vhd.vhd_time(pmtime)
        h.parent_name = name.encode("utf-16-be").ljust(512, b"\0")
        _pwrite(fd, h.pack(), f.data_offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- the journal
class Journal:
    """``<sr>/.journal/<name>``: one JSON document per unfinished step, replaced atomically."""

    def __init__(self, sr_path: str) -> None:
        self.sr_path = sr_path
        self.dir = os.path.join(sr_path, JOURNAL_DIR)

    def entries(self) -> dict[str, dict]:
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return {}
        out = {}
        for name in names:
            path = os.path.join(self.dir, name)
            if name.startswith("."):             # a write that never got renamed into place
                try:
                    os.unlink(path)
                except OSError:
                    pass
                continue
            try:
                with open(path) as f:
                    out[name] = json.load(f)
            except (OSError, ValueError) as e:
                out[name] = {"op": "corrupt", "error": str(e)}
        return out

    def write(self, name: str, entry: dict) -> None:
        created = not os.path.isdir(self.dir)
        os.makedirs(self.dir, exist_ok=True)
        if created:
            _fsync_dir(self.sr_path)
        tmp = os.path.join(self.dir, f".{name}.tmp")
        with open(tmp, "w") as f:
            json.dump(entry, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(self.dir, name))
        _fsync_dir(self.dir)

    def remove(self, name: str) -> None:
        try:
            os.unlink(os.path.join(self.dir, name))
        except FileNotFoundError:
            return
        _fsync_dir(self.dir)

    def pending(self) -> bool:
        try:
            return any(not n.startswith(".") for n in os.listdir(self.dir))
        except OSError:
            return False

    def tidy(self) -> None:
        """Removes the folder when it holds nothing."""
        try:
            os.rmdir(self.dir)
        except OSError:
            pass


def pending(sr_path: str) -> bool:
    """Whether the SR at ``sr_path`` has an unfinished step."""
    return Journal(sr_path).pending()


# --------------------------------------------------------------------------- the collector
class Collector:
    """One SR folder. ``protect``: locations with a managed VDI record (never removed or merged
    away); ``busy``: locations of VDIs in use (their chains are not coalesced); ``leaves``: the
    leaves that may be leaf-coalesced (not attached, allowed by their options); ``skip``: nodes
    whose coalesce failed before."""

    def __init__(self, sr_path: str, *, protect=(), busy=(), leaves=(), skip=(), coalesce: bool = True,
                 leaf_coalesce: bool = True, log=None) -> None:
        self.path = os.path.abspath(sr_path)
        self.journal = Journal(self.path)
        self.protect, self.busy, self.leaves = set(protect), set(busy), set(leaves)
        self.skip = set(skip)
        self.coalesce_enabled, self.leaf_enabled = coalesce, leaf_coalesce
        self._log = log or (lambda msg: print(time.strftime("%H:%M:%S"), "gc:", msg, file=sys.stderr))
        self.failed: dict[str, str] = {}
        self.unreadable: dict[str, str] = {}

    def log(self, msg: str) -> None:
        self._log(msg)

    def file(self, loc: str) -> str:
        return os.path.join(self.path, loc + ".vhd")

    # -- the tree --------------------------------------------------------------------------------
    def scan(self) -> dict[str, Node]:
        nodes: dict[str, Node] = {}
        self.unreadable = {}
        for name in sorted(os.listdir(self.path)):
            if not name.endswith(".vhd") or name.startswith("."):
                continue
            try:
                node = read_node(os.path.join(self.path, name))
            except (OSError, GCError, struct.error) as e:
                self.unreadable[name[:-4]] = str(e)
                continue
            nodes[node.loc] = node
        for node in nodes.values():
            if node.parent is not None and node.parent in nodes:
                nodes[node.parent].children.append(node.loc)
        for node in nodes.values():
            node.children.sort()
        return nodes

    @staticmethod
    def _broken(node: Node, nodes: dict[str, Node]) -> bool:
        return node.foreign_parent or (node.parent is not None and node.parent not in nodes)

    @staticmethod
    def _root(loc: str, nodes: dict[str, Node]) -> str:
        seen = set()
        while nodes[loc].parent in nodes and loc not in seen:
            seen.add(loc)
            loc = nodes[loc].parent
        return loc

    @staticmethod
    def _height(loc: str, nodes: dict[str, Node]) -> int:
        todo, best = [(loc, 1)], 0
        while todo:
            cur, h = todo.pop()
            best = max(best, h)
            todo.extend((c, h + 1) for c in nodes[cur].children)
        return best

    @staticmethod
    def _subtree(loc: str, nodes: dict[str, Node]) -> list[str]:
        out, todo = [], [loc]
        while todo:
            cur = todo.pop()
            out.append(cur)
            todo.extend(nodes[cur].children)
        return out

    def find_garbage(self, nodes: dict[str, Node]) -> list[str]:
        """Hidden subtrees with no visible VHD and no managed record, children before parents
        (SM's getAllPrunable)."""
        memo: dict[str, bool] = {}

        def prunable(loc: str) -> bool:
            if loc in memo:
                return memo[loc]
            memo[loc] = False                    # a cycle (damaged locators) is never garbage
            node = nodes[loc]
            ok = node.hidden and loc not in self.protect and not self._broken(node, nodes)
            kids = [prunable(c) for c in node.children]
            memo[loc] = ok and all(kids)
            return memo[loc]

        order: list[str] = []

        def visit(loc: str) -> None:
            for c in nodes[loc].children:
                visit(c)
            if memo.get(loc):
                order.append(loc)

        roots = [loc for loc, n in nodes.items() if n.parent not in nodes or self._broken(n, nodes)]
        for r in roots:
            prunable(r)
        for r in roots:
            visit(r)
        return order

    def find_coalesceable(self, nodes: dict[str, Node]) -> str | None:
        """A hidden node with children whose hidden parent has it as its only child, in the tallest
        tree first (SM's findCoalesceable)."""
        candidates = []
        for loc, node in nodes.items():
            if not node.hidden or not node.children or loc in self.protect or loc in self.skip \
                    or loc in self.failed or self._broken(node, nodes) or node.parent is None:
                continue
            parent = nodes[node.parent]
            if not parent.hidden or parent.children != [loc] or parent.loc in self.protect \
                    or self._broken(parent, nodes):
                continue
            if any(x in self.busy for x in self._subtree(loc, nodes)):
                continue
            if any(nodes[c].foreign_parent for c in node.children):
                continue
            candidates.append((-self._height(self._root(loc, nodes), nodes), loc))
        candidates.sort()
        return candidates[0][1] if candidates else None

    def find_leaf_coalesceable(self, nodes: dict[str, Node]) -> list[str]:
        """Visible leaves whose hidden parent has no other child (SM's isLeafCoalesceable)."""
        out = []
        for loc, node in sorted(nodes.items()):
            if node.hidden or node.children or node.parent is None or loc in self.skip or loc in self.failed \
                    or loc in self.busy or self._broken(node, nodes) or loc.startswith(OLD_PREFIX):
                continue
            parent = nodes[node.parent]
            if parent.hidden and parent.children == [loc] and parent.loc not in self.protect \
                    and not self._broken(parent, nodes) and parent.disk_type != vhd.TYPE_FIXED:
                out.append(loc)
        return out

    def free_space(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    # -- recovery --------------------------------------------------------------------------------
    def recover(self) -> list[dict]:
        """Rolls every unfinished step back or forward; returns what was done."""
        done = []
        for name, entry in self.journal.entries().items():
            op = entry.get("op")
            try:
                if op == "leaf":
                    result = self._recover_leaf(entry)
                elif op == "coalesce":
                    result = "rolled back"           # the parent only got data its child shadows
                elif op == "relink":
                    result = self._recover_relink(entry)
                elif op == "garbage":
                    result = self._recover_garbage(entry)
                else:
                    raise GCError(f"journal {name}: unknown or damaged entry {entry!r}")
            except (OSError, GCError, vhd.VHDError) as e:
                self.log(f"recovery of {name} failed, kept for later: {e}")
                done.append({"journal": name, "op": op, "error": str(e)})
                continue
            self.journal.remove(name)
            self.log(f"recovered {op} {name}: {result}")
            done.append({"journal": name, "op": op, "result": result})
        return done

    def _recover_leaf(self, entry: dict) -> str:
        leaf, parent = entry["leaf"], entry["parent"]
        lp, pp, op = self.file(leaf), self.file(parent), self.file(OLD_PREFIX + leaf)
        has_l, has_p, has_old = os.path.exists(lp), os.path.exists(pp), os.path.exists(op)
        if has_l and has_p and not has_old:
            # the data phase: the leaf is untouched, the parent becomes a hidden base copy again
            set_hidden(pp, True)
            return "rolled back"
        if not has_l and has_p and has_old:
            os.rename(pp, lp)
            _fsync_dir(self.path)
            has_l, has_p = True, False
        if has_l and not has_p:
            if has_old:
                os.unlink(op)
                _fsync_dir(self.path)
            return "rolled forward"
        raise GCError(f"leaf-coalesce of {leaf}: unexpected files (leaf {has_l}, parent {has_p}, old {has_old})")

    def _recover_relink(self, entry: dict) -> str:
        node, parent = entry["node"], entry["parent"]
        pp = self.file(parent)
        if not os.path.exists(pp):
            raise GCError(f"relink of {node}'s children: the parent {parent} is missing")
        for child in entry["children"]:
            cp = self.file(child)
            if os.path.exists(cp):
                relink(cp, pp)
        self._remove_if_orphan(node)
        return "rolled forward"

    def _recover_garbage(self, entry: dict) -> str:
        for loc in entry["nodes"]:
            self._remove_if_orphan(loc, require_hidden=True)
        return "rolled forward"

    def _remove_if_orphan(self, loc: str, require_hidden: bool = False) -> None:
        path = self.file(loc)
        if not os.path.exists(path):
            return
        nodes = self.scan()
        if self.unreadable:
            raise GCError(f"cannot tell whether {loc} is still used: unreadable {sorted(self.unreadable)}")
        node = nodes.get(loc)
        if node is None or node.children or (require_hidden and not node.hidden):
            return
        os.unlink(path)
        _fsync_dir(self.path)

    # -- the steps -------------------------------------------------------------------------------
    def remove_garbage(self, order: list[str], nodes: dict[str, Node]) -> dict:
        self.journal.write("garbage", {"op": "garbage", "nodes": order})
        crash_point("garbage journalled")
        freed = 0
        for loc in order:
            freed += nodes[loc].physical
            os.unlink(self.file(loc))
            _fsync_dir(self.path)
            crash_point(f"garbage {loc} removed")
        self.journal.remove("garbage")
        self.log(f"removed {len(order)} unused VHDs: {order}")
        return {"did": "garbage", "removed": order, "reclaimed": freed}

    def coalesce(self, loc: str, nodes: dict[str, Node]) -> dict:
        """Writes ``loc`` into its parent, relinks its children to the parent, removes it."""
        node = nodes[loc]
        parent = nodes[node.parent]
        children = list(node.children)
        for c in children:
            relink_check(self.file(c), parent.path)
        need = node.physical
        if need > self.free_space():
            self.failed[loc] = "no space"
            self.log(f"no space to coalesce {loc} into {parent.loc} (needs up to {need} bytes)")
            return {"did": None, "no_space": loc}
        self.journal.write(loc, {"op": "coalesce", "node": loc, "parent": parent.loc})
        crash_point("coalesce journalled")
        try:
            sectors = vhd.coalesce(node.path)
        except (OSError, vhd.VHDError) as e:
            self.journal.remove(loc)             # nothing a reader sees has changed
            self.failed[loc] = str(e)
            self.log(f"coalescing {loc} into {parent.loc} failed: {e}")
            return {"did": None, "failed": loc}
        crash_point("coalesce data written")
        self.journal.write(loc, {"op": "relink", "node": loc, "parent": parent.loc, "children": children})
        crash_point("relink journalled")
        for c in children:
            relink(self.file(c), parent.path)
            crash_point(f"relinked {c}")
        os.unlink(node.path)
        _fsync_dir(self.path)
        crash_point("coalesced node removed")
        self.journal.remove(loc)
        self.log(f"coalesced {loc} into {parent.loc} ({sectors} sectors), relinked {children}")
        grown = os.path.getsize(parent.path) - parent.physical
        return {"did": "coalesce", "node": loc, "parent": parent.loc, "children": children,
                "sectors": sectors, "reclaimed": node.physical - grown}

    def leaf_coalesce(self, loc: str, nodes: dict[str, Node]) -> dict:
        """Merges the leaf ``loc`` into its parent, which then takes the leaf's name."""
        node = nodes[loc]
        parent = nodes[node.parent]
        old = self.file(OLD_PREFIX + loc)
        if os.path.exists(old):
            self.failed[loc] = f"{old} exists"
            return {"did": None, "failed": loc}
        if node.physical > self.free_space():
            self.failed[loc] = "no space"
            self.log(f"no space to leaf-coalesce {loc} into {parent.loc}")
            return {"did": None, "no_space": loc}
        self.journal.write(loc, {"op": "leaf", "leaf": loc, "parent": parent.loc})
        crash_point("leaf journalled")
        try:
            set_hidden(parent.path, False)
            crash_point("leaf parent unhidden")
            sectors = vhd.coalesce(node.path)
        except (OSError, vhd.VHDError, GCError) as e:
            self.failed[loc] = str(e)
            self.log(f"leaf-coalescing {loc} into {parent.loc} failed: {e}")
            try:
                self._recover_leaf({"leaf": loc, "parent": parent.loc})
                self.journal.remove(loc)
            except (OSError, GCError) as e2:
                self.log(f"undoing the leaf-coalesce of {loc} failed, kept for later: {e2}")
            return {"did": None, "failed": loc}
        crash_point("leaf data written")
        os.rename(node.path, old)
        _fsync_dir(self.path)
        crash_point("leaf renamed away")
        os.rename(parent.path, node.path)
        _fsync_dir(self.path)
        crash_point("parent renamed to the leaf")
        grown = os.path.getsize(node.path) - parent.physical
        os.unlink(old)
        _fsync_dir(self.path)
        crash_point("old leaf removed")
        self.journal.remove(loc)
        self.log(f"leaf-coalesced {loc} into {parent.loc} ({sectors} sectors); {parent.loc} is {loc} now")
        return {"did": "leaf", "leaf": loc, "parent": parent.loc, "sectors": sectors,
                "reclaimed": node.physical - grown}

    def step(self) -> dict:
        """One unit of work (the first of: garbage, a coalesce, a leaf-coalesce)."""
        nodes = self.scan()
        report: dict = {"did": None}
        if self.unreadable:
            self.log(f"unreadable VHDs, nothing is changed: {self.unreadable}")
            return report
        if self.journal.pending():
            self.log("an unfinished step is still journalled: nothing else is done")
            return report
        garbage = self.find_garbage(nodes)
        if garbage:
            return self.remove_garbage(garbage, nodes)
        if self.coalesce_enabled:
            while True:
                loc = self.find_coalesceable(nodes)
                if loc is None:
                    break
                report = self.coalesce(loc, nodes)
                if report["did"]:
                    return report
        if self.coalesce_enabled and self.leaf_enabled:
            candidates = self.find_leaf_coalesceable(nodes)
            for loc in candidates:
                if loc in self.leaves:
                    report = self.leaf_coalesce(loc, nodes)
                    if report["did"]:
                        return report
            report = {"did": None, "leaf_candidates": [c for c in candidates if c not in self.failed]}
        return report

    def run(self, max_steps: int = 0) -> dict:
        """Recovers, then does up to ``max_steps`` steps (0: until nothing is left to do)."""
        out: dict = {"path": self.path, "recovered": self.recover(), "steps": [], "reclaimed": 0}
        try:
            n = 0
            while not max_steps or n < max_steps:
                report = self.step()
                if not report.get("did"):
                    out["leaf_candidates"] = report.get("leaf_candidates", [])
                    break
                out["steps"].append(report)
                out["reclaimed"] += report.get("reclaimed", 0)
                n += 1
                if n >= MAX_STEPS:
                    break
        finally:
            if not self.journal.pending():
                self.journal.tidy()
        out["failed"] = dict(self.failed)
        out["unreadable"] = dict(self.unreadable)
        out["pending"] = self.journal.pending()
        out["changed"] = bool(out["steps"]) or any("result" in r for r in out["recovered"])
        return out


# --------------------------------------------------------------------------- where an SR lives
def sr_folder(sr_type: str, device_config: dict, sr_uuid: str, data_dir: str) -> str | None:
    """The folder of a file-based SR (as xapi.sm.filesr's ext and nfs drivers place it), or None
    for other SR types."""
    path = device_config.get("path")
    if sr_type == "ext":
        if not path and device_config.get("device"):
            return None
        return os.path.abspath(path) if path else os.path.join(data_dir, "sr", sr_uuid)
    if sr_type == "nfs":
        if device_config.get("server"):
            return os.path.join(data_dir, "sr-mount", sr_uuid)
        return os.path.join(os.path.abspath(path), sr_uuid) if path else None
    return None


# --------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m xapi.sm.gc", description=__doc__.split("\n\n")[0])
    p.add_argument("--sr-path", required=True, help="the SR's folder")
    p.add_argument("--protect", action="append", default=[], help="a location with a managed VDI record")
    p.add_argument("--busy", action="append", default=[], help="the location of a VDI in use")
    p.add_argument("--leaf", action="append", default=[], help="a leaf that may be leaf-coalesced")
    p.add_argument("--skip", action="append", default=[], help="a node not to coalesce")
    p.add_argument("--steps", type=int, default=0, help="at most this many steps (0: all)")
    p.add_argument("--recover-only", action="store_true", help="only finish or undo unfinished steps")
    p.add_argument("--no-coalesce", action="store_true", help="only remove garbage")
    p.add_argument("--no-leaf-coalesce", action="store_true")
    args = p.parse_args(argv)
    if not os.path.isdir(args.sr_path):
        print(f"gc: no such folder {args.sr_path}", file=sys.stderr)
        return 2
    c = Collector(args.sr_path, protect=args.protect, busy=args.busy, leaves=args.leaf, skip=args.skip,
                  coalesce=not args.no_coalesce, leaf_coalesce=not args.no_leaf_coalesce)
    if args.recover_only:
        recovered = c.recover()
        if not c.journal.pending():
            c.journal.tidy()
        report = {"path": c.path, "recovered": recovered, "steps": [], "pending": c.journal.pending(),
                  "changed": any("result" in r for r in recovered)}
    else:
        report = c.run(args.steps)
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
