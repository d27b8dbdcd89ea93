"""The storage access layer of one host: who uses which VDI, and how (xapi's SMAPIv2 wrapper).

A *datapath* is one user of a VDI on this host: a VBD (``vbd/<domid>/<device>``), an export, a
copy (``copy/<...>``). Each datapath holds the VDI in one of the states of xapi's VDI automaton:
detached, attached RO|RW, activated RO|RW. The driver sees only the *superstate* over all the
datapaths (activated if any is, RW if any is), and is called only when that changes: the first
attach, the first activate, the last deactivate, the last detach. Going from RO to RW while the
VDI is held RO is refused, as xapi's automaton refuses it.

The state is kept in a small JSON file in the data folder, written atomically (not synced: see
_write) after every driver side effect, so a restarted daemon knows what is attached: it neither
attaches again nor forgets to detach. After a restart, datapaths of operations that cannot have
survived it (copies, exports, imports, storage motion mirrors) and the ones whose detach failed
earlier ("leaked") are released, with one driver call each.

A VDI is activated read-write on at most one host: activation checks the VDI's
``sm-config:host_<host>`` keys (written by the drivers, as SM's blktap layer does) and refuses
with ``VDI_IN_USE [vdi, "activate"]``. Activating RW drops ``other-config:content_id``,
deactivating sets a fresh one, as xapi does.

API: ``await attach(dp, vdi, rw)``, ``activate(dp, vdi)`` (both return the attach information:
``params`` is the local path, ``format`` "vhd" or "raw", ``xenstore_data``...), ``deactivate``,
``detach``, ``release(dp, vdi)`` (whatever is needed to get back to detached), ``destroy_dp(dp)``;
``releasing``/``released``/``wait_released`` around a release that a client may not wait for.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import uuid as _uuid

from xapi.datamodel.errors import XapiError
from xapi.sm import mirror

log = logging.getLogger("xapi.sm.access")

DETACHED = "detached"
RELEASE_WAIT = 10.0         # seconds a caller waits for datapaths being released (wait_released)
TRANSIENT_PREFIXES = ("copy/", "export/", "import/", "internal/", "mirror/")


def _state(kind: str, mode: str | None = None) -> str:
    return kind if kind == DETACHED else f"{kind} {mode}"


def _split(state: str) -> tuple[str, str | None]:
    if state == DETACHED:
        return DETACHED, None
    kind, mode = state.split()
    return kind, mode


class IllegalTransition(Exception):
    pass


def plus(state: str, op: str, rw: bool = False) -> str:
    """The datapath's state after `op` (attach/activate/deactivate/detach), as xapi's automaton."""
    kind, mode = _split(state)
    want = "RW" if rw else "RO"
    if op == "attach":
        if kind == DETACHED:
            return _state("attached", want)
        if mode == "RO" and want == "RW":
            raise IllegalTransition(f"{state} + attach RW")
        return state
    if op == "activate":
        if kind == DETACHED:
            raise IllegalTransition(f"{state} + activate")
        return _state("activated", mode)
    if op == "deactivate":
        return _state("attached", mode) if kind == "activated" else state
    if op == "detach":
        if kind == "activated":
            raise IllegalTransition(f"{state} + detach")
        return DETACHED
    raise ValueError(op)


def superstate(states) -> str:
    states = [s for s in states if s != DETACHED]
    if not states:
        return DETACHED
    activated = any(s.startswith("activated") for s in states)
    rw = any(s.endswith("RW") for s in states)
    return _state("activated" if activated else "attached", "RW" if rw else "RO")


def transitions(old: str, new: str) -> list[str]:
    """The driver operations taking the backend from superstate `old` to `new`."""
    if old == new:
        return []
    (ok, om), (nk, nm) = _split(old), _split(new)
    if nk == DETACHED:
        return (["deactivate"] if ok == "activated" else []) + ["detach"]
    if ok == DETACHED:
        return ["attach"] + (["activate"] if nk == "activated" else [])
    if om != nm:
        raise IllegalTransition(f"{old} -> {new}")
    if ok == "attached" and nk == "activated":
        return ["activate"]
    if ok == "activated" and nk == "attached":
        return ["deactivate"]
    raise IllegalTransition(f"{old} -> {new}")


class Access:
    """One host's datapaths. `storage` runs the drivers (xapi.sm.service.Storage)."""

    def __init__(self, storage, path: str) -> None:
        self.storage = storage
        self.path = path
        self.vdis: dict[str, dict] = self._load()      # vdi uuid -> entry
        self._locks: dict[str, asyncio.Lock] = {}
        self._save_lock = asyncio.Lock()
        self._releasing: dict[str, set[str]] = {}       # vdi uuid -> datapaths being released
        self._released: dict[str, list[asyncio.Future]] = {}    # vdi uuid -> callers waiting for them
        self.closed = False

    # -- persistence -----------------------------------------------------------------------------
    def _load(self) -> dict[str, dict]:
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.error("storage access state %s unreadable (%s): starting empty", self.path, e)
            return {}
        return {k: v for k, v in data.get("vdis", {}).items() if isinstance(v, dict)}

    def _write(self, text: str) -> None:
        """Atomic (a temporary file renamed over the old one) but not synced: the state has to
        survive the daemon, not the host (after a reboot nothing is attached), as xapi's own copy
        lives in /var/run/nonpersistent; an fsync here cost milliseconds per driver call."""
        tmp = f"{self.path}.{os.getpid()}.{_uuid.uuid4().hex[:8]}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                data = memoryview(text.encode())
                while data:
                    data = data[os.write(fd, data):]
            finally:
                os.close(fd)
            os.rename(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    async def _save(self) -> None:
        async with self._save_lock:
            text = json.dumps({"version": 1, "vdis": self.vdis}, sort_keys=True)
            await asyncio.to_thread(self._write, text)

    # -- queries ---------------------------------------------------------------------------------
    def datapaths(self, vdi_uuid: str | None = None) -> dict[str, str]:
        """dp -> state, of one VDI, or "vdi-uuid dp" -> state of all."""
        if vdi_uuid is not None:
            return dict(self.vdis.get(vdi_uuid, {}).get("dps", {}))
        return {f"{u} {dp}": st for u, e in self.vdis.items() for dp, st in e.get("dps", {}).items()}

    def state(self, vdi_uuid: str) -> str:
        return self.vdis.get(vdi_uuid, {}).get("state", DETACHED)

    def in_use(self, vdi_uuid: str) -> bool:
        e = self.vdis.get(vdi_uuid)
        return bool(e and (e.get("dps") or e.get("state", DETACHED) != DETACHED))

    def vdis_of_sr(self, sr_uuid: str) -> list[str]:
        return [u for u, e in self.vdis.items() if e.get("sr") == sr_uuid and self.in_use(u)]

    # -- the operations --------------------------------------------------------------------------
    def _lock(self, vdi_uuid: str) -> asyncio.Lock:
        lock = self._locks.get(vdi_uuid)
        if lock is None:
            lock = self._locks[vdi_uuid] = asyncio.Lock()
        return lock

    def _vdi(self, vdi_ref: str) -> tuple[str, dict]:
        table = self.storage.app.db.table("VDI")
        try:
            return vdi_ref, table.get(vdi_ref)
        except (KeyError, TypeError):
            raise XapiError("HANDLE_INVALID", "VDI", vdi_ref) from None

    async def attach(self, dp: str, vdi_ref: str, rw: bool) -> dict:
        if self.closed:
            raise XapiError("INTERNAL_ERROR", "the storage layer is shutting down")
        _, rec = self._vdi(vdi_ref)
        if rw and rec["read_only"]:
            raise XapiError("VDI_READONLY", vdi_ref)
        if rw:                          # RO holders being released: RO -> RW would be refused
            await self.wait_released(rec["uuid"], dp, ro_only=True)
        return await self._change(dp, vdi_ref, rec, "attach", rw)

    # -- datapaths being released -------------------------------------------------------------
    # An export is done with its VDI once its last byte is out, and is released after it, as xapi's
    # (the client doesn't wait for the driver calls). A client that follows up at once (an import of
    # the VDI, VDI.destroy) may meet the datapath still held: it waits for that release instead of
    # failing, as it would have found the VDI free a moment later.
    def releasing(self, dp: str, vdi_ref: str) -> None:
        """`dp` is done with the VDI and about to be released (call released() after)."""
        uuid = self._uuid_of(vdi_ref)
        if uuid is not None:
            self._releasing.setdefault(uuid, set()).add(dp)

    def released(self, dp: str, vdi_ref: str) -> None:
        """The release of `dp` ended (whether or not it succeeded): whoever waits looks again."""
        uuid = self._uuid_of(vdi_ref)
        if uuid is None:
            return
        going = self._releasing.get(uuid, set())
        going.discard(dp)
        if not going:
            self._releasing.pop(uuid, None)
        for fut in self._released.pop(uuid, []):
            if not fut.done():
                fut.set_result(None)

    def _uuid_of(self, vdi_ref: str) -> str | None:
        try:
            return self._vdi(vdi_ref)[1]["uuid"]
        except XapiError:               # gone: nothing can wait for it
            return None

    async def wait_released(self, vdi_uuid: str, dp: str | None = None, ro_only: bool = False) -> None:
        """Waits (up to RELEASE_WAIT) while every datapath holding the VDI (other than `dp`; only
        the read-only ones with `ro_only`) is being released; returns at once when one of them
        isn't (the caller's check then fails as before) or none holds it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RELEASE_WAIT
        while True:
            entry = self.vdis.get(vdi_uuid)
            held = [d for d, st in (entry["dps"].items() if entry else ())
                    if d != dp and (not ro_only or st.endswith("RO"))]
            going = self._releasing.get(vdi_uuid, ())
            if not held or not all(d in going for d in held) or loop.time() >= deadline:
                return
            fut = loop.create_future()
            self._released.setdefault(vdi_uuid, []).append(fut)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(fut, deadline - loop.time())

    async def activate(self, dp: str, vdi_ref: str) -> dict:
        if self.closed:
            raise XapiError("INTERNAL_ERROR", "the storage layer is shutting down")
        _, rec = self._vdi(vdi_ref)
        info = await self._change(dp, vdi_ref, rec, "activate")
        mirror.of(self.storage.app).activated(dp, vdi_ref, info)    # the datapath's tap (xapi.sm.mirror)
        return info

    async def deactivate(self, dp: str, vdi_ref: str) -> None:
        if self.closed:
            return
        _, rec = self._vdi(vdi_ref)
        await mirror.of(self.storage.app).deactivating(dp, vdi_ref)
        await self._change(dp, vdi_ref, rec, "deactivate")

    async def detach(self, dp: str, vdi_ref: str) -> None:
        if self.closed:
            return
        _, rec = self._vdi(vdi_ref)
        await self._change(dp, vdi_ref, rec, "detach")

    async def release(self, dp: str, vdi_ref: str) -> None:
        """Deactivates if needed, then detaches."""
        await self.deactivate(dp, vdi_ref)
        await self.detach(dp, vdi_ref)

    def _hold(self, uuid: str) -> tuple[bool, bool]:
        """What the VDI's allowed_operations see of its datapaths: held at all, held RW."""
        e = self.vdis.get(uuid)
        return self.in_use(uuid), bool(e) and any(str(st).endswith("RW") for st in e.get("dps", {}).values())

    def _refresh_if_changed(self, uuid: str, vdi_ref: str, before: tuple[bool, bool]) -> None:
        """Clients watching events see e.g. destroy leave allowed_operations while a datapath
        holds the VDI and come back after; recomputed only when the hold changed."""
        if vdi_ref is not None and self._hold(uuid) != before:
            from xapi.sm import operations     # operations reads this layer's state
            operations.refresh_vdi(self.storage.app, vdi_ref)

    async def _change(self, dp: str, vdi_ref: str, rec: dict, op: str, rw: bool = False):
        uuid = rec["uuid"]
        async with self._lock(uuid):
            before = self._hold(uuid)
            try:
                return await self._change_locked(uuid, dp, vdi_ref, rec, op, rw)
            finally:
                self._refresh_if_changed(uuid, vdi_ref, before)

    async def _change_locked(self, uuid: str, dp: str, vdi_ref: str, rec: dict, op: str, rw: bool):
        entry = self.vdis.get(uuid)
        if entry is None:
            if op in ("deactivate", "detach"):
                return None
            sr = self.storage.app.db.table("SR").get(rec["SR"])
            entry = {"sr": sr["uuid"], "location": rec["location"], "state": DETACHED, "dps": {},
                     "leaked": [], "attach_info": None}
        dps = entry["dps"]
        old_dp = dps.get(dp, DETACHED)
        if op in ("deactivate", "detach") and dp not in dps:
            return None
        try:
            new_dp = plus(old_dp, op, rw)
            new_super = superstate([s for d, s in dps.items() if d != dp] + [new_dp])
            steps = transitions(entry["state"], new_super)
        except IllegalTransition as e:
            raise XapiError("INTERNAL_ERROR",
                            f"Storage_interface.Illegal_transition({uuid}: {e})") from None
        # one save per driver side effect, right after it; the last one records the datapath's
        # new state too (a change calling no driver saves once, if anything changed)
        for i, step in enumerate(steps):
            await self._backend(step, vdi_ref, rec, entry, new_super)
            if i == len(steps) - 1:
                self._settle(uuid, entry, dp, new_dp)
            else:
                self.vdis[uuid] = entry
            await self._save()
        if not steps and (old_dp != new_dp or dp not in dps):
            self._settle(uuid, entry, dp, new_dp)
            await self._save()
        return entry.get("attach_info") if op in ("attach", "activate") else None

    def _settle(self, uuid: str, entry: dict, dp: str, new_dp: str) -> None:
        dps = entry["dps"]
        if new_dp == DETACHED:
            dps.pop(dp, None)
        else:
            dps[dp] = new_dp
        if entry["state"] == DETACHED and not dps:
            self.vdis.pop(uuid, None)
        else:
            self.vdis[uuid] = entry

    async def _backend(self, step: str, vdi_ref: str, rec: dict, entry: dict, target: str) -> None:
        """One driver call; on success the entry's backend state moves on."""
        storage = self.storage
        kind, mode = _split(entry["state"])
        if step == "attach":
            rw = _split(target)[1] == "RW"
            info = await storage.vdi_command(vdi_ref, "vdi_attach", ["true" if rw else "false"])
            entry["attach_info"] = info if isinstance(info, dict) else {"params": str(info)}
            entry["state"] = _state("attached", "RW" if rw else "RO")
        elif step == "activate":
            rw = mode == "RW"
            self._check_other_hosts(vdi_ref, rw)
            if rw:
                await _content_id(storage.app, vdi_ref, None)
            if storage.has_capability(vdi_ref, "VDI_ACTIVATE"):
                await storage.vdi_command(vdi_ref, "vdi_activate", ["true" if rw else "false"])
            entry["state"] = _state("activated", mode)
        elif step == "deactivate":
            await _content_id(storage.app, vdi_ref, str(_uuid.uuid4()))
            if storage.has_capability(vdi_ref, "VDI_DEACTIVATE"):
                await storage.vdi_command(vdi_ref, "vdi_deactivate", [])
            entry["state"] = _state("attached", mode)
        elif step == "detach":
            await storage.vdi_command(vdi_ref, "vdi_detach", [])
            entry["state"] = DETACHED
            entry["attach_info"] = None

    def _check_other_hosts(self, vdi_ref: str, rw: bool) -> None:
        app = self.storage.app
        sm_config = app.db.table("VDI").get_field(vdi_ref, "sm_config")
        mine = f"host_{app.host_ref}"
        others = {k: v for k, v in sm_config.items() if k.startswith("host_") and k != mine}
        if any(v == "RW" for v in others.values()) or (rw and others):
            raise XapiError("VDI_IN_USE", vdi_ref, "activate")

    # -- whole datapaths -------------------------------------------------------------------------
    async def destroy_dp(self, dp: str, *, allow_leak: bool = False) -> None:
        """Releases every VDI `dp` holds (a leaked one again). With allow_leak a failing release is
        remembered as leaked (and retried by the next destroy_dp or reconcile) instead of failing."""
        for uuid, entry in list(self.vdis.items()):
            if dp in entry.get("leaked", []):
                # the backend may still hold the VDI for it: back in, at the backend's state
                entry["leaked"].remove(dp)
                entry["dps"].setdefault(dp, entry.get("state", DETACHED))
            if dp not in entry.get("dps", {}):
                continue
            vdi_ref = self.storage.vdi_ref_by_uuid(uuid)
            try:
                if vdi_ref is None:
                    await self._release_orphan(uuid, dp)
                else:
                    await self.release(dp, vdi_ref)
            except Exception as e:  # noqa: BLE001 - reported, or kept for a retry
                if not allow_leak:
                    raise
                log.error("datapath %s on VDI %s: release failed, leaked: %s", dp, uuid, e)
                before = self._hold(uuid)
                entry = self.vdis.get(uuid, entry)
                entry.setdefault("leaked", []).append(dp)
                entry["dps"].pop(dp, None)
                self.vdis[uuid] = entry
                self._refresh_if_changed(uuid, vdi_ref, before)
                await self._save()

    async def _release_orphan(self, uuid: str, dp: str) -> None:
        """A VDI whose record went away: tell the driver by location, then forget it."""
        entry = self.vdis[uuid]
        async with self._lock(uuid):
            entry["dps"].pop(dp, None)
            if not entry["dps"] and entry["state"] != DETACHED:
                await self.storage.orphan_release(entry)
                entry["state"] = DETACHED
            if not entry["dps"]:
                self.vdis.pop(uuid, None)
            await self._save()

    async def reconcile(self) -> None:
        """After a restart: releases what cannot be in use any more (datapaths of copies, exports and
        imports, and the leaked ones), once each."""
        doomed = set()
        for entry in self.vdis.values():
            doomed.update(dp for dp in entry.get("dps", {}) if dp.startswith(TRANSIENT_PREFIXES))
            doomed.update(entry.get("leaked", []))
        for dp in sorted(doomed):
            log.info("releasing datapath %s left from before the restart", dp)
            await self.destroy_dp(dp, allow_leak=True)

    def close(self) -> None:
        """No more attaches; later deactivate/detach calls do nothing (the state stays on disk)."""
        self.closed = True


async def _content_id(app, vdi_ref: str, value: str | None) -> None:
    """Drops (None) or sets, when missing, the VDI's other-config:content_id; a pool member's change
    goes to the pool database through its coordinator (xapi.pool.remote)."""
    table = app.db.table("VDI")
    if vdi_ref not in table or (value is None) != ("content_id" in table.get_field(vdi_ref, "other_config")):
        return
    if not getattr(app, "is_coordinator", True):
        if value is None:
            await app.pool.coordinator_api.call("VDI.remove_from_other_config", vdi_ref, "content_id")
        else:
            await app.pool.coordinator_api.call("VDI.add_to_other_config", vdi_ref, "content_id", value)
    elif value is None:
        _remove_key(app.db, vdi_ref, "other_config", "content_id")
    else:
        table.set_field(vdi_ref, "other_config", {**table.get_field(vdi_ref, "other_config"), "content_id": value})


def _remove_key(db, ref: str, field: str, key: str) -> None:
    table = db.table("VDI")
    if ref in table:
        current = table.get_field(ref, field)
        if key in current:
            table.set_field(ref, field, {k: v for k, v in current.items() if k != key})
