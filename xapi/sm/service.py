"""The storage layer of one daemon: the driver executor, the access layer, and what ties them to the
database (which PBD gives the device-config, who is SR master, the SM table).

At start (the daemon waits for it, up to a bound; `ready()` waits for it): the drivers folder is scanned and the SM
table follows it (new drivers registered, vanished ones unregistered as xapi does for SMAPIv1
plugins), this host's PBDs are plugged (as xapi plugs all unplugged PBDs at start-up; the attached
ones are left as they are), and the access layer releases what a previous run left behind. Then,
as xapi's scanning thread, SRs marked ``other-config:auto-scan=true`` or ``dirty`` are scanned
every 30 s (host ``other-config:auto_scan_interval``).
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os

from xapi.datamodel.errors import XapiError
from xapi.db.schema import insert

from . import gc_service, rows
from .access import Access
from .exec import NULL_REF, Call, Executor, NotImplementedInBackend

log = logging.getLogger("xapi.sm")

SM_USERNAME = "__sm__backend"
AUTO_SCAN_INTERVAL = 30.0


class Storage:
    def __init__(self, app) -> None:
        self.app = app
        data_dir = app.config.data_dir
        self.executor = Executor(socket_path=app.socket_path, data_dir=data_dir, session=self._session)
        self.access = Access(self, os.path.join(data_dir, "storage-access.json"))
        self.gc = gc_service.GarbageCollector(self)       # garbage collection and coalescing (xapi.sm.gc)
        self._ready = asyncio.Event()
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: list[asyncio.Task] = []

    @property
    def db(self):
        return self.app.db

    # -- life ------------------------------------------------------------------------------------
    async def start(self, wait: float = 10.0) -> None:
        """Starts the storage layer; returns when it is ready, or after `wait` seconds (a slow SR then
        keeps plugging in the background)."""
        loop = asyncio.get_running_loop()
        startup = loop.create_task(self._startup())
        self._tasks.append(startup)
        self._tasks.append(loop.create_task(self._auto_scan()))
        try:
            await asyncio.wait_for(asyncio.shield(startup), wait)
        except asyncio.TimeoutError:
            log.warning("storage start-up still running after %gs; continuing in the background", wait)

    async def _startup(self) -> None:
        try:
            await self.sync_drivers()
            if self.app.is_coordinator:     # a member plugs through its coordinator (xapi.pool.member_start)
                await self.plug_unplugged()
            await self.access.reconcile()
            self.gc.kick_pending()
        except Exception:
            log.exception("storage start-up")
        finally:
            self._ready.set()
            self.app.hub.poke()

    async def ready(self) -> None:
        await self._ready.wait()

    async def close(self) -> None:
        await self.gc.close()
        self.access.close()
        self.executor.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t

    @contextlib.asynccontextmanager
    async def _session(self, sr_ref):
        """A fresh local superuser session for one driver call (xapi's Sm_exec.with_session)."""
        s = self.app.sessions.create(SM_USERNAME, superuser=True, originator="SM")
        try:
            yield s.ref
        finally:
            with contextlib.suppress(XapiError):
                self.app.sessions.destroy(s.ref)

    def lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    # -- drivers and the SM table ----------------------------------------------------------------
    async def sync_drivers(self) -> dict:
        drivers = await self.executor.scan()
        sms = self.db.table("SM")
        by_type = {sms.get_field(r, "type"): r for r in sms.refs()}
        for ty, info in drivers.items():
            row = info.sm_row()
            ref = by_type.get(ty)
            if ref is None:
                log.info("registering SM plugin %s (version %s)", ty, info.version)
                insert(self.db, "SM", **row)
            else:
                current = sms.get(ref)
                changed = {k: v for k, v in row.items() if current.get(k) != v}
                if changed:
                    sms.update(ref, changed)
        for ty, ref in by_type.items():
            if ty not in drivers and _version(sms.get_field(ref, "version")) < (2, 0):
                log.info("unregistering SM plugin %s: its executable is missing", ty)
                sms.remove(ref)
        self.app.hub.poke()
        return drivers

    async def driver(self, sr_type: str):
        """The driver of a type, rescanning the folder once when it is unknown."""
        try:
            return self.executor.driver(sr_type)
        except XapiError:
            await self.sync_drivers()
            return self.executor.driver(sr_type)

    def has_capability(self, vdi_or_sr: str, capability: str) -> bool:
        sr = vdi_or_sr
        if vdi_or_sr in self.db.table("VDI"):
            sr = self.db.table("VDI").get_field(vdi_or_sr, "SR")
        ty = self.db.table("SR").get_field(sr, "type")
        info = self.executor.drivers.get(ty)
        return info is not None and info.has(capability)

    # -- the database side of a call -------------------------------------------------------------
    def sr_record(self, sr_ref: str) -> dict:
        try:
            return self.db.table("SR").get(sr_ref)
        except (KeyError, TypeError):
            raise XapiError("HANDLE_INVALID", "SR", sr_ref) from None

    def my_pbd(self, sr_ref: str) -> str | None:
        pbds = self.db.table("PBD")
        for ref in pbds.find("SR", sr_ref):
            if pbds.get_field(ref, "host") == self.app.host_ref:
                return ref
        return None

    def serving_pbd(self, sr_ref: str) -> str | None:
        """This host's PBD of the SR; on the coordinator, for an SR it has none of (another host's
        local SR), the plugged PBD of the host whose storage runs its operations (xapi.pool)."""
        pbd = self.my_pbd(sr_ref)
        if pbd is not None or not self.app.is_coordinator:
            return pbd
        pbds = self.db.table("PBD")
        return next((r for r in pbds.find("SR", sr_ref) if pbds.get_field(r, "currently_attached")), None)

    def assert_plugged(self, sr_ref: str) -> str:
        pbd = self.serving_pbd(sr_ref)
        if pbd is None or not self.db.table("PBD").get_field(pbd, "currently_attached"):
            raise XapiError("SR_HAS_NO_PBDS", sr_ref)
        return pbd

    def is_sr_master(self, sr_ref: str) -> bool:
        """The coordinator for shared SRs, the PBD's host for local ones (xapi's i_am_srmaster)."""
        if self.db.table("SR").get_field(sr_ref, "shared"):
            return self.app.is_coordinator
        return self.my_pbd(sr_ref) is not None

    def device_config(self, sr_ref: str, pbd: str | None = None) -> dict:
        pbd = pbd or self.serving_pbd(sr_ref)
        if pbd is None:
            raise XapiError("SR_HAS_NO_PBDS", sr_ref)
        dc = dict(self.db.table("PBD").get_field(pbd, "device_config"))
        dc["SRmaster"] = "true" if self.is_sr_master(sr_ref) else "false"
        return dc

    def sr_call(self, sr_ref: str, command: str, args=(), *, device_config: dict | None = None, **kw) -> Call:
        sr = self.sr_record(sr_ref)
        host = self.app.host_ref
        if device_config is None:
            pbd = self.serving_pbd(sr_ref)
            if pbd is None:
                raise XapiError("SR_HAS_NO_PBDS", sr_ref)
            host = self.db.table("PBD").get_field(pbd, "host")      # another host's: run there
            device_config = self.device_config(sr_ref, pbd)
        return Call(command, list(args), device_config, host_ref=host, sr_ref=sr_ref, sr_uuid=sr["uuid"], **kw)

    def vdi_call(self, vdi_ref: str, command: str, args=(), **kw) -> Call:
        try:
            vdi = self.db.table("VDI").get(vdi_ref)
        except (KeyError, TypeError):
            raise XapiError("HANDLE_INVALID", "VDI", vdi_ref) from None
        return self.sr_call(vdi["SR"], command, args, vdi_ref=vdi_ref, vdi_uuid=vdi["uuid"],
                            vdi_location=vdi["location"], vdi_on_boot=vdi["on_boot"],
                            vdi_allow_caching="true" if vdi["allow_caching"] else "false", **kw)

    async def run(self, call: Call):
        if call.host_ref != self.app.host_ref and call.host_ref != NULL_REF:
            # that host's storage runs it (its driver, its SR master role: xapi.pool.methods)
            return await self.app.pool.call(call.host_ref, "storage.run", dataclasses.asdict(call),
                                            self.db.generation)
        sr_type = self.sr_record(call.sr_ref)["type"] if call.sr_ref else ""
        await self.driver(sr_type)
        try:
            return await self.executor.run(sr_type, call)
        except NotImplementedInBackend:
            raise XapiError("SR_OPERATION_NOT_SUPPORTED", call.sr_ref or "") from None

    async def sr_command(self, sr_ref: str, command: str, args=(), **kw):
        return await self.run(self.sr_call(sr_ref, command, args, **kw))

    async def vdi_command(self, vdi_ref: str, command: str, args=(), **kw):
        return await self.run(self.vdi_call(vdi_ref, command, args, **kw))

    def vdi_ref_by_uuid(self, uuid: str) -> str | None:
        refs = self.db.table("VDI").find("uuid", uuid)
        return refs[0] if refs else None

    async def orphan_release(self, entry: dict) -> None:
        """Detaches a VDI whose record is gone, by its SR and location (access layer clean-up)."""
        srs = self.db.table("SR").find("uuid", entry["sr"])
        if not srs:
            log.warning("cannot release VDI at %s: SR %s is gone", entry.get("location"), entry["sr"])
            return
        call = self.sr_call(srs[0], "vdi_detach", vdi_location=entry["location"])
        await self.run(call)

    # -- PBDs ------------------------------------------------------------------------------------
    async def plug(self, pbd: str) -> None:
        pbds = self.db.table("PBD")
        if pbds.get_field(pbd, "currently_attached"):
            return
        sr = pbds.get_field(pbd, "SR")
        async with self.lock(f"sr/{sr}"):
            if pbds.get_field(pbd, "currently_attached"):
                return
            await self.sr_command(sr, "sr_attach", device_config=self.device_config(sr, pbd))
            pbds.set_field(pbd, "currently_attached", True)
        if "dirty" in self.db.table("SR").get_field(sr, "other_config") and self.is_sr_master(sr):
            try:
                await self.scan(sr)
            except XapiError as e:
                log.warning("scan of SR %s after plugging failed: %s", sr, e.args)
        rows.refresh_sr_and_vdis(self.app, sr)

    async def unplug(self, pbd: str) -> None:
        pbds = self.db.table("PBD")
        if not pbds.get_field(pbd, "currently_attached"):
            return
        sr = pbds.get_field(pbd, "SR")
        async with self.lock(f"sr/{sr}"):
            sr_uuid = self.db.table("SR").get_field(sr, "uuid")
            held = [self.vdi_ref_by_uuid(u) or u for u in self.access.vdis_of_sr(sr_uuid)]
            if held:
                raise XapiError("VDI_IN_USE", *held)
            await self.sr_command(sr, "sr_detach", device_config=self.device_config(sr, pbd))
            pbds.set_field(pbd, "currently_attached", False)
        rows.refresh_sr_and_vdis(self.app, sr)

    async def plug_unplugged(self) -> None:
        pbds = self.db.table("PBD")
        for pbd in pbds.find("host", self.app.host_ref):
            if pbds.get_field(pbd, "currently_attached"):
                continue
            try:
                await self.plug(pbd)
            except Exception as e:  # noqa: BLE001 - one SR's failure doesn't stop the others
                log.warning("could not plug PBD %s: %s", pbds.get_field(pbd, "uuid"), e)
        self.app.hub.poke()

    # -- scans -----------------------------------------------------------------------------------
    async def scan(self, sr: str) -> None:
        self.assert_plugged(sr)
        async with self.lock(f"scan/{sr}"):
            async with gc_service.sr_lock(self, sr):
                await self.sr_command(sr, "sr_scan")
            srs = self.db.table("SR")
            oc = srs.get_field(sr, "other_config")
            if "dirty" in oc and not self.app.is_coordinator:    # the pool database is the coordinator's
                await self.app.pool.coordinator_api.call("SR.remove_from_other_config", sr, "dirty")
            elif "dirty" in oc:
                srs.set_field(sr, "other_config", {k: v for k, v in oc.items() if k != "dirty"})

    async def _auto_scan(self) -> None:
        await self._ready.wait()
        while True:
            await asyncio.sleep(self._interval())
            srs = self.db.table("SR")
            for sr in list(srs.refs()):
                if sr not in srs:
                    continue
                oc = srs.get_field(sr, "other_config")
                if oc.get("auto-scan") != "true" and "dirty" not in oc:
                    continue
                pbd = self.my_pbd(sr)
                if pbd is None or not self.db.table("PBD").get_field(pbd, "currently_attached") \
                        or not self.is_sr_master(sr):
                    continue
                try:
                    await self.scan(sr)
                except Exception as e:  # noqa: BLE001 - logged, retried next round
                    log.warning("automatic scan of SR %s failed: %s", sr, e)
            self.app.hub.poke()

    def _interval(self) -> float:
        try:
            oc = self.db.table("host").get_field(self.app.host_ref, "other_config")
            return max(1.0, float(oc.get("auto_scan_interval", AUTO_SCAN_INTERVAL)))
        except (KeyError, ValueError):
            return AUTO_SCAN_INTERVAL


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split("."))
    except ValueError:
        return (0,)

