"""File-based SR drivers: ``ext`` and ``nfs``, VDIs as ``<vdi-uuid>.vhd`` files in one folder.

The layout is SM's FileSR: the VDI's location is its uuid, snapshots and clones turn the disk into a
hidden read-only parent (introduced as an unmanaged "base copy") with new empty children, and
``sr_scan`` joins the folder and the database on location.

``ext``: the folder is device-config ``path``, or ``<data>/sr/<sr-uuid>`` when none is given (a
real host's ext SR owns a block device; here a folder stands for it). ``nfs``: a folder every host
of the pool sees; device-config ``path`` holds one sub-folder per SR (``<path>/<sr-uuid>``), or with
``server`` and ``serverpath`` the export ``server:serverpath/<sr-uuid>`` is mounted soft over TCP
at ``<data>/sr-mount/<sr-uuid>``, as SM's NFSSR does: by mount.nfs where the kernel has an NFS client,
else by xapi-nfs-mount (csrc/nfs_fuse.c: FUSE over libnfs), which takes mount.nfs's arguments.

The SR's sizes: for a folder, physical_size is what the SR may grow to (its files plus the file
system's free space, or the size given to SR.create when there was one), physical_utilisation the
bytes of its files; a dedicated mount reports its file system (statvfs), as FileSR does.
virtual_allocation is the sum of the virtual sizes of the visible VDIs.

All VHD work goes through ``xapi.sm.vhd``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid as _uuid

from xapi import atomic, first_boot_data
from xapi.sm.driverlib import NEVER, NULL_REF, Driver, SMError, driver_info

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
META = ".xapi-sr.json"          # the SR's own record in its folder: uuid, type, size given at create
MAX_CHAIN = 30                   # SM's limit on VHD chain depth
MiB = 1 << 20


def data_dir() -> str:
    return os.environ.get("XAPI_DATA_DIR", "/var/lib/xcp")


def spec(sr_type: str) -> dict:
    return next(s for s in first_boot_data.SM_DRIVERS if s["type"] == sr_type)


def vhdlib():
    """The VHD library, or a clear error when it is missing."""
    try:
        from xapi.sm import vhd
    except ImportError as e:
        raise SMError("SMGeneral", f"the VHD library (xapi.sm.vhd) is not available: {e}") from None
    return vhd


def run_command(argv: list[str], error: str, timeout: float = 120.0) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SMError(error, f"{argv[0]}: {e}") from None
    if p.returncode:
        raise SMError(error, f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout


NFS_FUSE = "xapi-nfs-mount"           # the userspace NFS client, built next to the interpreter


def kernel_has_nfs() -> bool:
    """The kernel mounts NFS: "nfs" in /proc/filesystems, or ``modprobe nfs`` loads it."""
    try:
        with open("/proc/filesystems") as f:
            if any(line.split()[-1:] in (["nfs"], ["nfs4"]) for line in f):
                return True
    except OSError:
        pass
    try:
        return subprocess.run(["modprobe", "-q", "nfs"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def nfs_fuse_client() -> str | None:
    beside = os.path.join(os.path.dirname(sys.executable), NFS_FUSE)
    return beside if os.access(beside, os.X_OK) else shutil.which(NFS_FUSE)


def nfs_mount_program(log) -> str:
    """mount.nfs where the kernel has NFS, else the FUSE client (both take mount.nfs's arguments);
    without either, mount.nfs, which fails as the kernel answers. Which one is logged when it changes
    (<data>/nfs-client keeps the last), not at every mount."""
    program = "mount.nfs"
    if not kernel_has_nfs():
        program = nfs_fuse_client() or program
    note = os.path.join(data_dir(), "nfs-client")
    try:
        with open(note) as f:
            previous = f.read()
    except OSError:
        previous = ""
    if previous != program:
        log(f"NFS mounts by {program}" + ("" if program == "mount.nfs" else
                                           " (the kernel has no NFS client: a FUSE client over libnfs)"))
        try:
            atomic.write_file(note, program.encode(), 0o644)
        except OSError:
            pass
    return program


def is_mount(path: str) -> bool:
    """path is in the mount table: unlike os.path.ismount this sees a FUSE mount whose client is gone
    (stat fails with ENOTCONN there)."""
    path = os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(path))), os.path.basename(path))
    unescape = lambda m: chr(int(m.group(1), 8))  # noqa: E731  (mounts escapes space, tab, \\ in octal)
    try:
        with open("/proc/self/mounts") as f:
            return any(re.sub(r"\\([0-7]{3})", unescape, line.split()[1]) == path
                       for line in f if len(line.split()) > 1)
    except OSError:
        return os.path.ismount(path)


def live_mount(path: str, log) -> bool:
    """path is a mount that answers; a dead one (its FUSE client ended: ENOTCONN) is unmounted."""
    if not is_mount(path):
        return False
    try:
        os.stat(path)
        return True
    except OSError as e:
        log(f"{path}: {e}: unmounting the dead mount")
        try:
            subprocess.run(["umount", "-l", path], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass
        return False


def write_json_atomic(path: str, data: dict) -> None:
    atomic.write_file(path, json.dumps(data).encode(), 0o644)


def date_string() -> str:
    return time.strftime("%Y%m%dT%H:%M:%SZ", time.gmtime())


class VHDFileSR(Driver):
    """The common part of ext and nfs."""

    TYPE = "ext"
    mounted = False          # a dedicated mount (nfs with a server) rather than a folder
    remote = ""

    def __init__(self, req) -> None:
        super().__init__(req)
        self.DRIVER_INFO = driver_info(spec(self.TYPE), self.EXTRA_CONFIGURATION)
        # SM's EXTSR and NFSSR: metadata VDIs for disaster recovery (xapi.actions.dr)
        self.DRIVER_INFO["capabilities"].append("SR_METADATA")
        self._path: str | None = None

    EXTRA_CONFIGURATION: dict[str, str] = {}

    # -- where the SR lives --------------------------------------------------------------------
    @property
    def path(self) -> str:
        if self._path is None:
            self._path = self.sr_path()
        return self._path

    def sr_path(self) -> str:
        raise NotImplementedError

    def vdi_path(self, location: str) -> str:
        if "/" in location or location in ("", ".", ".."):
            raise SMError("VDIUnavailable", f"bad location {location!r}")
        return os.path.join(self.path, location + ".vhd")

    def check_present(self) -> None:
        if not os.path.isdir(self.path):
            raise SMError("SRUnavailable", f"no such directory {self.path}")

    def read_meta(self) -> dict:
        try:
            with open(os.path.join(self.path, META)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def mount(self) -> None:
        pass

    def unmount(self) -> None:
        pass

    # -- what the folder holds -----------------------------------------------------------------
    def scan_files(self) -> dict[str, dict]:
        """location -> {virtual_size, physical, hidden, parent (location or None)} of every VHD; one that
        cannot be read (a missing parent, a damaged header) is listed in `self.unreadable`."""
        vhd = vhdlib()
        found: dict[str, dict] = {}
        self.unreadable: set[str] = set()
        for name in os.listdir(self.path):
            if not name.endswith(".vhd") or name.startswith("."):
                continue
            loc = name[:-4]
            path = os.path.join(self.path, name)
            try:
                with vhd.open(path, readonly=True) as v:
                    parent = None
                    if v.parent:
                        pname = os.path.basename(v.parent)
                        parent = pname[:-4] if pname.endswith(".vhd") else pname
                    found[loc] = {"virtual_size": v.virtual_size, "physical": os.stat(path).st_size,
                                  "hidden": v.hidden, "parent": parent}
            except (OSError, vhd.VHDError) as e:
                self.log(f"skipping {path}: {e}")
                self.unreadable.add(loc)
        return found

    def sizes(self, files: dict[str, dict] | None = None) -> tuple[int, int, int]:
        """(physical_size, physical_utilisation, virtual_allocation) of the SR."""
        files = self.scan_files() if files is None else files
        allocation = sum(f["virtual_size"] for f in files.values() if not f["hidden"])
        st = os.statvfs(self.path)
        if self.mounted:
            return st.f_blocks * st.f_frsize, (st.f_blocks - st.f_bfree) * st.f_frsize, allocation
        used = 0
        for name in os.listdir(self.path):
            try:
                s = os.stat(os.path.join(self.path, name))
            except OSError:
                continue
            if not name.startswith("."):
                used += s.st_size
        cap = int(self.read_meta().get("physical_size", 0) or 0)
        size = cap if cap > 0 else used + st.f_bavail * st.f_frsize
        return size, used, allocation

    def update_sr(self, files: dict[str, dict] | None = None) -> None:
        size, used, allocation = self.sizes(files)
        sr = self.req.sr_ref
        self.api.SR.set_physical_size(sr, str(size))
        self.api.SR.set_physical_utilisation(sr, str(used))
        self.api.SR.set_virtual_allocation(sr, str(allocation))

    def db_vdis(self) -> dict[str, tuple[str, dict]]:
        """location -> (ref, record) of the SR's VDIs in the database."""
        recs = self.api.VDI.get_all_records_where(f'field "SR" = "{self.req.sr_ref}"')
        return {r["location"]: (ref, r) for ref, r in recs.items()}

    def introduce(self, uuid: str, location: str, info: dict, *, name_label: str = "",
                  name_description: str = "", vdi_type: str = "user", read_only: bool = False,
                  managed: bool = True, sm_config: dict | None = None, is_a_snapshot: bool = False,
                  snapshot_time: str = NEVER, snapshot_of: str = NULL_REF,
                  metadata_of_pool: str = NULL_REF) -> str:
        sm = {"vdi_type": "vhd", **(sm_config or {})}
        if info.get("parent"):
            sm["vhd-parent"] = info["parent"]
        return self.api.VDI.db_introduce(
            uuid, name_label, name_description, self.req.sr_ref, vdi_type, False, read_only, {},
            location, {}, sm, managed, str(info["virtual_size"]), str(info["physical"]),
            metadata_of_pool or NULL_REF, is_a_snapshot, snapshot_time or NEVER, snapshot_of or NULL_REF,
            False)

    def file_info(self, location: str) -> dict:
        vhd = vhdlib()
        path = self.vdi_path(location)
        try:
            with vhd.open(path, readonly=True) as v:
                parent = os.path.basename(v.parent)[:-4] if v.parent else None
                depth, p = 1, v
                try:
                    while p.parent_vhd() is not None:
                        p = p.parent_vhd()
                        depth += 1
                except (OSError, vhd.VHDError):
                    pass
                return {"virtual_size": v.virtual_size, "physical": os.stat(path).st_size,
                        "hidden": v.hidden, "parent": parent, "depth": depth}
        except FileNotFoundError:
            raise SMError("VDIMissing", path) from None
        except (OSError, vhd.VHDError) as e:
            raise SMError("VDILoad", f"{path}: {e}") from None

    def update_vdi(self, vdi_ref: str, info: dict, record: dict | None = None) -> None:
        if record is None or int(record.get("virtual_size", -1)) != info["virtual_size"]:
            self.api.VDI.set_virtual_size(vdi_ref, str(info["virtual_size"]))
        if record is None or int(record.get("physical_utilisation", -1)) != info["physical"]:
            self.api.VDI.set_physical_utilisation(vdi_ref, str(info["physical"]))

    def set_sm_key(self, vdi_ref: str, key: str, value: str | None) -> None:
        self.api.VDI.remove_from_sm_config(vdi_ref, key)
        if value is not None:
            self.api.VDI.add_to_sm_config(vdi_ref, key, value)

    def vdi_ref_of(self, location: str) -> str | None:
        recs = self.api.VDI.get_all_records_where(
            f'field "SR" = "{self.req.sr_ref}" and field "location" = "{location}"')
        return next(iter(recs), None)

    # -- SR commands ---------------------------------------------------------------------------
    def sr_create(self):
        size = int(self.req.args[0]) if self.req.args and self.req.args[0].lstrip("-").isdigit() else 0
        self.create_storage()
        meta = self.read_meta()
        if meta.get("uuid") and meta["uuid"] != self.req.sr_uuid:
            raise SMError("SRExists", f"{self.path} holds SR {meta['uuid']}")
        if any(n.endswith(".vhd") for n in os.listdir(self.path)) and not meta:
            raise SMError("SRExists", f"{self.path} already holds VHD files")
        write_json_atomic(os.path.join(self.path, META),
                          {"uuid": self.req.sr_uuid, "type": self.TYPE, "physical_size": max(size, 0)})
        self.update_sr()
        return None

    def create_storage(self) -> None:
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as e:
            raise SMError("FileSRCreate", f"{self.path}: {e}") from None

    def sr_delete(self):
        self.mount()
        try:
            self.check_present()
            if any(n.endswith(".vhd") for n in os.listdir(self.path)):
                raise SMError("SRNotEmpty", "VDIs still exist in SR")
            for name in os.listdir(self.path):
                p = os.path.join(self.path, name)
                if os.path.isfile(p) and (name == META or name.startswith(META)):
                    os.unlink(p)
        finally:
            self.unmount()
        self.remove_storage()
        return None

    def remove_storage(self) -> None:
        try:
            os.rmdir(self.path)
        except OSError as e:
            self.log(f"leaving {self.path}: {e}")

    def sr_attach(self):
        self.mount()
        self.check_present()
        if self.req.is_master and self.req.session_ref:
            # as SRCommand: ask for a scan after attaching on the SR master
            self.api.SR.remove_from_other_config(self.req.sr_ref, "dirty")
            self.api.SR.add_to_other_config(self.req.sr_ref, "dirty", "")
        return None

    def sr_detach(self):
        self.unmount()
        return None

    def sr_update(self):
        self.check_present()
        self.update_sr()
        return None

    def sr_scan(self):
        self.check_present()
        files = self.scan_files()
        children: dict[str, int] = {}
        for info in files.values():
            if info["parent"]:
                children[info["parent"]] = children.get(info["parent"], 0) + 1
        db = self.db_vdis()
        for loc, info in files.items():
            if loc in db:
                ref, rec = db[loc]
                self.update_vdi(ref, info, rec)
                if info["parent"] != rec["sm_config"].get("vhd-parent"):
                    self.set_sm_key(ref, "vhd-parent", info["parent"])
                continue
            if info["hidden"] and not children.get(loc):
                continue                    # a hidden leaf: garbage, left to the GC
            uuid = loc if UUID_RE.match(loc) else str(_uuid.uuid4())
            if info["hidden"]:
                self.introduce(uuid, loc, info, name_label="base copy", read_only=True, managed=False)
            else:
                self.introduce(uuid, loc, info)
        for loc, (ref, rec) in db.items():
            if loc not in files and loc not in self.unreadable:     # a damaged disk keeps its record
                self.api.VDI.db_forget(ref)
        self.update_sr(files)
        return None

    def sr_probe(self):
        found = self.probe_srs()
        body = "".join(f"<SR><UUID>{u}</UUID><Path>{p}</Path></SR>" for u, p in found)
        return f'<?xml version="1.0" ?><SRlist>{body}</SRlist>'

    def probe_srs(self) -> list[tuple[str, str]]:
        meta = self.read_meta()
        return [(meta["uuid"], self.path)] if meta.get("uuid") else []

    # -- VDI commands --------------------------------------------------------------------------
    def vdi_create(self):
        vhd = vhdlib()
        self.check_present()
        args = self.req.args + [""] * 8
        try:
            size = int(args[0])
        except ValueError:
            raise SMError("VDISize", f"bad size {args[0]!r}") from None
        if size <= 0 or size > vhd.MAX_VIRTUAL_SIZE:
            raise SMError("VDISize", f"size {size} out of range (1..{vhd.MAX_VIRTUAL_SIZE})")
        uuid = self.req.vdi_uuid or str(_uuid.uuid4())
        path = self.vdi_path(uuid)
        if os.path.exists(path):
            raise SMError("VDIExists", path)
        try:
            vhd.create(path, size)
        except (OSError, vhd.VHDError) as e:
            raise SMError("VDICreate", str(e)) from None
        info = self.file_info(uuid)
        try:
            self.introduce(uuid, uuid, info, name_label=args[1], name_description=args[2],
                           vdi_type=self.req.vdi_type or "user", read_only=args[7] == "true",
                           sm_config=self.req.vdi_sm_config, is_a_snapshot=args[4] == "true",
                           snapshot_time=args[5] or NEVER, metadata_of_pool=args[3] or NULL_REF)
        except BaseException:
            os.unlink(path)
            raise
        self.update_sr()
        return {"uuid": uuid, "location": uuid}

    def vdi_introduce(self):
        location = self.req.vdi_location or ""
        info = self.file_info(location)
        if self.vdi_ref_of(location) is not None:
            raise SMError("VDIExists", f"location {location} is already in the database")
        uuid = self.req.new_uuid or (location if UUID_RE.match(location) else str(_uuid.uuid4()))
        self.introduce(uuid, location, info, sm_config=self.req.vdi_sm_config,
                       read_only=info["hidden"], managed=not info["hidden"])
        self.update_sr()
        return {"uuid": uuid, "location": location}

    def vdi_delete(self):
        vhd = vhdlib()
        location = self.req.vdi_location or self.req.vdi_uuid
        path = self.vdi_path(location)
        rec = self.api.VDI.get_record(self.req.vdi_ref) if self.req.vdi_ref != NULL_REF else {}
        if any(k.startswith("host_") for k in rec.get("sm_config", {})):
            raise SMError("VDIInUse", "the VDI is activated on a host")
        parent = None
        if os.path.exists(path):
            try:
                with vhd.open(path, readonly=True) as v:
                    parent = v.parent
            except (OSError, vhd.VHDError):
                parent = None
        files = self.scan_files()
        if any(f["parent"] == location for f in files.values()) or self.unreadable:
            # other disks read through this one: it becomes a hidden base copy (the GC's to remove)
            if self.req.vdi_ref != NULL_REF:
                self.api.VDI.db_forget(self.req.vdi_ref)
            try:
                vhd.set_hidden(path, True)
            except (OSError, vhd.VHDError) as e:
                raise SMError("VDIDelete", f"{path}: {e}") from None
            info = self.file_info(location)
            if not self.unreadable or any(f["parent"] == location for f in files.values()):
                uuid = location if UUID_RE.match(location) else str(_uuid.uuid4())
                self.introduce(uuid, location, info, name_label="base copy", read_only=True, managed=False)
            self.update_sr()
            return None
        if self.req.vdi_ref != NULL_REF:
            self.api.VDI.db_forget(self.req.vdi_ref)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise SMError("VDIRemove", f"{path}: {e}") from None
        self.drop_orphans(parent)
        self.update_sr()
        return None

    def drop_orphans(self, parent: str | None) -> None:
        """Removes hidden parents no VHD depends on any more (no data moves: nothing to coalesce)."""
        vhd = vhdlib()
        while parent and os.path.dirname(parent) == os.path.realpath(self.path):
            files = self.scan_files()
            loc = os.path.basename(parent)[:-4]
            info = files.get(loc)
            if info is None or not info["hidden"] or self.unreadable \
                    or any(f["parent"] == loc for f in files.values()):
                return
            with vhd.open(parent, readonly=True) as v:
                grand = v.parent
            ref = self.vdi_ref_of(loc)
            if ref is not None:
                self.api.VDI.db_forget(ref)
            os.unlink(parent)
            parent = grand

    def attach_note(self) -> str:
        """Where attach leaves the file's stat for detach (local, not in the SR: an nfs SR's is remote)."""
        return os.path.join(data_dir(), "sm-attached", f"{self.req.sr_uuid}-{self.req.vdi_uuid}")

    @staticmethod
    def file_stamp(path: str) -> str:
        st = os.stat(path)
        return f"{st.st_size} {st.st_mtime_ns}"

    def vdi_attach(self):
        info = self.file_info(self.req.vdi_location or self.req.vdi_uuid)
        path = self.vdi_path(self.req.vdi_location or self.req.vdi_uuid)
        note = self.attach_note()
        try:
            os.makedirs(os.path.dirname(note), exist_ok=True)
            with open(note, "w") as f:
                f.write(self.file_stamp(path))
        except OSError:
            pass                            # detach then reads the record, as without a note
        return {"params": path, "format": "vhd", "o_direct": True, "o_direct_reason": "",
                "virtual_size": str(info["virtual_size"]),
                "xenstore_data": {"storage-type": self.TYPE, "vdi-uuid": self.req.vdi_uuid}}

    def vdi_detach(self):
        """Records the VDI's sizes, and the SR's, when the file changed while attached (a disk only
        read, as by an export, costs no rescan of the SR and no call back: SM's detach makes none)."""
        location = self.req.vdi_location or self.req.vdi_uuid
        path = self.vdi_path(location)
        note = self.attach_note()
        try:
            with open(note) as f:
                unchanged = f.read() == self.file_stamp(path)
            os.unlink(note)
        except OSError:
            unchanged = False
        if unchanged:
            return None
        if self.req.session_ref and os.path.exists(path):
            info = self.file_info(location)
            rec = self.api.VDI.get_record(self.req.vdi_ref)
            if (int(rec.get("physical_utilisation", -1)) != info["physical"]
                    or int(rec.get("virtual_size", -1)) != info["virtual_size"]):
                self.update_vdi(self.req.vdi_ref, info, rec)
                self.update_sr()
        return None

    def vdi_activate(self):
        writable = bool(self.req.args) and self.req.args[0] == "true"
        self.file_info(self.req.vdi_location or self.req.vdi_uuid)
        ref = self.req.vdi_ref
        # As SM's blktap2 _add_tag: one read of sm_config, one add of host_<ref> (its second read
        # looks for a 'paused' key a concurrent pause wrote; nothing here pauses a VDI)
        sm_config = self.api.VDI.get_sm_config(ref)
        mine = f"host_{self.req.host_ref}"
        mode = "RW" if writable else "RO"
        others = {k: v for k, v in sm_config.items() if k.startswith("host_") and k != mine}
        if any(v == "RW" for v in others.values()) or (writable and others):
            raise SMError("VDIInUse", f"activated on {sorted(others)}")
        if sm_config.get(mine) == mode:     # already there (SM keeps it too)
            return None
        if mine in sm_config:               # a stale key of this host in another mode: replaced
            self.api.VDI.remove_from_sm_config(ref, mine)
        self.api.VDI.add_to_sm_config(ref, mine, mode)
        return None

    def vdi_deactivate(self):
        self.api.VDI.remove_from_sm_config(self.req.vdi_ref, f"host_{self.req.host_ref}")
        return None

    def vdi_update(self):
        location = self.req.vdi_location or self.req.vdi_uuid
        self.update_vdi(self.req.vdi_ref, self.file_info(location))
        self.update_sr()
        return None

    def vdi_resize(self):
        vhd = vhdlib()
        location = self.req.vdi_location or self.req.vdi_uuid
        info = self.file_info(location)
        try:
            size = int(self.req.args[0])
        except (IndexError, ValueError):
            raise SMError("VDISize", "bad size") from None
        if size > vhd.MAX_VIRTUAL_SIZE:
            raise SMError("VDISize", f"size {size} above {vhd.MAX_VIRTUAL_SIZE}")
        if size < info["virtual_size"]:
            raise SMError("VDISize", "shrinking not allowed")
        if info["hidden"]:
            raise SMError("VDIResize", "a hidden VHD cannot be resized")
        try:
            vhd.resize(self.vdi_path(location), size)
        except (OSError, vhd.VHDError) as e:
            raise SMError("VDIResize", str(e)) from None
        self.update_vdi(self.req.vdi_ref, self.file_info(location))
        self.update_sr()
        return {"uuid": self.req.vdi_uuid, "location": location}

    def vdi_snapshot(self):
        return self.snapshot(clone=False)

    def vdi_clone(self):
        return self.snapshot(clone=True)

    def snapshot(self, clone: bool):
        """SM's FileSR snapshot: the VDI's file becomes a hidden parent under a new name, a new empty
        child takes the VDI's name (the VDI keeps its uuid), and a second child is the new VDI. With
        driver_params type=single the parent itself is the (read-only) snapshot."""
        vhd = vhdlib()
        location = self.req.vdi_location or self.req.vdi_uuid
        src = self.vdi_path(location)
        info = self.file_info(location)
        if info["hidden"]:
            raise SMError("VDISnapshot", "cannot snapshot a hidden VHD")
        if info["depth"] >= MAX_CHAIN:
            raise SMError("SnapshotChainTooLong", f"chain depth {info['depth']}")
        single = self.req.driver_params.get("type") in ("single", "internal")
        rec = self.api.VDI.get_record(self.req.vdi_ref)
        base = str(_uuid.uuid4())
        base_path = self.vdi_path(base)
        leaf_tmp = os.path.join(self.path, f".{location}.snapshot.vhd")
        new = None if single else str(_uuid.uuid4())
        err = "VDIClone" if clone else "VDISnapshot"
        try:
            os.link(src, base_path)
            if not single:
                vhd.set_hidden(base_path, True)
            vhd.snapshot(base_path, leaf_tmp)
            os.rename(leaf_tmp, src)
            if new is not None:
                vhd.snapshot(base_path, self.vdi_path(new))
        except (OSError, vhd.VHDError) as e:
            for p in (leaf_tmp,) + ((self.vdi_path(new),) if new else ()):
                if os.path.exists(p):
                    os.unlink(p)
            if os.path.exists(base_path):
                if os.path.samefile(base_path, src):
                    os.unlink(base_path)
                else:
                    # the VDI's file is already the new child: put the original back
                    os.rename(base_path, src)
                    vhd.set_hidden(src, False)
            raise SMError(err, str(e)) from None
        base_info = self.file_info(base)
        if single:
            self.introduce(base, base, base_info, name_label=rec["name_label"],
                                 name_description=rec["name_description"], read_only=True,
                                 is_a_snapshot=not clone)
        else:
            self.introduce(base, base, base_info, name_label="base copy", read_only=True, managed=False)
        self.set_sm_key(self.req.vdi_ref, "vhd-parent", base)
        self.update_vdi(self.req.vdi_ref, self.file_info(location), rec)
        if new is not None:
            self.introduce(new, new, self.file_info(new), name_label=rec["name_label"],
                           name_description=rec["name_description"], vdi_type=rec["type"],
                           is_a_snapshot=not clone, snapshot_time=date_string(),
                           snapshot_of=NULL_REF if clone else self.req.vdi_ref)
        self.update_sr()
        return {"uuid": new or base, "location": new or base}

    def vdi_compose(self):
        """SM's FileSR compose: args[0] (VDI1, in this SR) becomes the parent of this VDI's VHD
        (VDI2, a differencing disk), then a hidden, unmanaged base copy."""
        vhd = vhdlib()
        if not self.req.args:
            raise SMError("InvalidArg", "vdi_compose needs the VDI to compose onto")
        parent_ref = self.req.args[0]
        parent_rec = self.api.VDI.get_record(parent_ref)
        if parent_rec["SR"] != self.req.sr_ref:
            raise SMError("InvalidArg", f"VDI {parent_rec['uuid']} is in another SR")
        parent_loc = parent_rec["location"]
        child = self.vdi_path(self.req.vdi_location or self.req.vdi_uuid)
        parent = self.vdi_path(parent_loc)
        for path in (child, parent):
            if not os.path.exists(path):
                raise SMError("VDIUnavailable", f"{path} does not exist")
        try:
            vhd.set_parent(child, parent)
            vhd.set_hidden(parent, True)
        except (OSError, vhd.VHDError) as e:
            raise SMError("SMGeneral", f"compose {self.req.vdi_uuid} onto {parent_rec['uuid']}: {e}") from None
        self.api.VDI.set_managed(parent_ref, False)
        self.set_sm_key(self.req.vdi_ref, "vhd-parent", parent_loc)
        return None


class EXTSR(VHDFileSR):
    TYPE = "ext"
    EXTRA_CONFIGURATION = {"path": "folder holding the SR's VHD files (default <data>/sr/<sr-uuid>)"}

    def sr_path(self) -> str:
        path = self.dconf.get("path")
        if not path and self.dconf.get("device"):
            raise SMError("ConfigDeviceInvalid",
                          "block devices are not supported; give device-config:path (a folder)")
        if not self.req.sr_uuid and not path:
            raise SMError("ConfigDeviceMissing", "device-config:path")
        return os.path.abspath(path) if path else os.path.join(data_dir(), "sr", self.req.sr_uuid)

    def sr_attach(self):
        if not self.dconf.get("path") and not self.read_meta():
            # the default folder is ours: made on demand (the local SR of a fresh host)
            self.create_storage()
            write_json_atomic(os.path.join(self.path, META),
                              {"uuid": self.req.sr_uuid, "type": self.TYPE, "physical_size": 0})
        return super().sr_attach()


class NFSSR(VHDFileSR):
    """With device-config server/serverpath, SM's NFSSR and nfs.py: the export's <sr-uuid> sub-folder
    soft-mounted by mount.nfs at <data>/sr-mount/<sr-uuid> (the SR's other-config nfs-timeout and
    nfs-retrans, in tenths of a second and tries, default 200 and 4; probes mount with the NFS
    defaults), NFS port 2049 tried first (NFSTarget), nfsversion 3 or 4.x (NFSVersion), proto tcp,
    tcp6 for an IPv6 server, udp/udp6 with useUDP=true, device-config options appended; a missing
    serverpath lists the server's exports (showmount -e) on stderr, as SM does."""
    TYPE = "nfs"
    EXTRA_CONFIGURATION = {"path": "a folder every host of the pool sees, instead of server/serverpath"}
    NFSPORT = 2049

    @property
    def mounted(self) -> bool:
        return bool(self.dconf.get("server"))

    @property
    def remote(self) -> str:
        server = self.dconf["server"]
        if self.transport.endswith("6"):
            server = f"[{server}]"
        return f"{server}:{self.dconf.get('serverpath', '').rstrip('/')}"

    @property
    def transport(self) -> str:
        try:
            v6 = socket.getaddrinfo(self.dconf["server"], 0)[0][0] == socket.AF_INET6
        except (OSError, UnicodeError):
            v6 = False
        udp = self.dconf.get("useUDP") == "true"
        return ("udp" if udp else "tcp") + ("6" if v6 else "")

    @property
    def nfsversion(self) -> str:
        version = self.dconf.get("nfsversion") or "3"
        if not (version == "3" or version.startswith("4")):
            raise SMError("NFSVersion", "Invalid nfsversion.")
        return version

    def sr_path(self) -> str:
        if self.dconf.get("server"):
            if not self.dconf.get("serverpath"):
                if self.req.command in ("sr_create", "sr_probe"):
                    self.list_exports()
                raise SMError("ConfigServerPathMissing")
            return os.path.join(data_dir(), "sr-mount", self.req.sr_uuid or "probe")
        if self.dconf.get("path"):
            base = os.path.abspath(self.dconf["path"])
            return os.path.join(base, self.req.sr_uuid) if self.req.sr_uuid else base
        raise SMError("ConfigServerMissing")

    def list_exports(self) -> None:
        """The server's exports, as SM's scan_exports, on stderr (xapi puts it in the error)."""
        server = self.dconf["server"]
        try:
            out = run_command(["showmount", "--no-headers", "-e", server], "NFSMount", timeout=30)
        except SMError:
            return
        items = []
        for line in out.splitlines():
            if line.split():
                path, access = (line.split() + ["*"])[:2]
                items.append(f"<Export><Target>{server}</Target><Path>{path}</Path>"
                             f"<Accesslist>{access}</Accesslist></Export>")
        self.log(f"<nfs-exports>{''.join(items)}</nfs-exports>")

    def test_host(self) -> None:
        """SM's util._testHost: the server resolves (DNSError) and answers on the NFS port (NFSTarget)."""
        server = self.dconf["server"]
        try:
            family, kind, proto, _, addr = socket.getaddrinfo(server, self.NFSPORT, type=socket.SOCK_STREAM)[0]
        except (OSError, UnicodeError) as e:
            raise SMError("DNSError", f"{server}: {e}") from None
        try:
            with socket.socket(family, kind, proto) as s:
                s.settimeout(10)
                s.connect(addr)
        except OSError as e:
            raise SMError("NFSTarget", f"{server}:{self.NFSPORT}: {e}") from None

    def mount_options(self, sr_mount: bool = True) -> str:
        opts = f"soft,proto={self.transport},vers={self.nfsversion},acdirmin=0,acdirmax=0"
        if sr_mount:
            timeout, retrans = self.io_limits()
            opts += f",timeo={timeout},retrans={retrans}"
        extra = self.dconf.get("options")
        return f"{opts},{extra}" if extra else opts

    def io_limits(self) -> tuple[int, int]:
        """SM's get_nfs_timeout/get_nfs_retrans: the SR's other-config, bad values ignored."""
        other = {}
        if self.req.sr_ref and self.req.sr_ref != NULL_REF and self.req.session_ref:
            other = self.api.SR.get_other_config(self.req.sr_ref)
        timeout, retrans = 200, 4
        try:
            if int(other.get("nfs-timeout", timeout)) >= 1:
                timeout = int(other.get("nfs-timeout", timeout))
        except ValueError:
            pass
        try:
            if int(other.get("nfs-retrans", retrans)) >= 0:
                retrans = int(other.get("nfs-retrans", retrans))
        except ValueError:
            pass
        return timeout, retrans

    def nfs_mount(self, remote: str, mountpoint: str, sr_mount: bool = True) -> None:
        options = self.mount_options(sr_mount)          # bad nfsversion: NFSVersion, nothing made
        self.test_host()
        if live_mount(mountpoint, self.log):
            return
        try:
            os.makedirs(mountpoint, exist_ok=True)
        except OSError as e:
            raise SMError("NFSMount", f"{mountpoint}: {e}") from None
        try:
            run_command([nfs_mount_program(self.log), remote, mountpoint, "-o", options], "NFSMount")
        except SMError:
            _rmdir(mountpoint)                  # an empty mount point is not left behind
            raise

    def nfs_umount(self, mountpoint: str) -> None:
        if is_mount(mountpoint):
            run_command(["umount", mountpoint], "NFSUnMount")

    def mount(self) -> None:
        if self.mounted:
            self.nfs_mount(f"{self.remote}/{self.req.sr_uuid}", self.path)

    def unmount(self) -> None:
        if self.mounted:
            self.nfs_umount(self.path)
            _rmdir(self.path)                   # as SM's nfs.unmount(path, rmmountpoint=True)

    def create_storage(self) -> None:
        if not self.mounted:
            if not os.path.isdir(os.path.dirname(self.path)):
                raise SMError("NFSCreate", f"no such directory {os.path.dirname(self.path)}")
            return super().create_storage()
        # SM's NFSSR: mount the export where the SR goes, make the SR's sub-folder (one with
        # something in it: SRExists), unmount, then mount the sub-folder
        staging = self.path
        if is_mount(staging):
            raise SMError("NFSAttached", staging)
        self.nfs_mount(self.remote, staging)
        try:
            folder = os.path.join(staging, self.req.sr_uuid)
            if os.path.isdir(folder) and os.listdir(folder):
                raise SMError("SRExists", folder)
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise SMError("NFSCreate", str(e)) from None
        finally:
            self.nfs_umount(staging)
            _rmdir(staging)
        self.mount()

    def sr_create(self):
        try:
            return super().sr_create()
        finally:
            self.unmount()

    def remove_storage(self) -> None:
        if not self.mounted:
            return super().remove_storage()
        staging = self.path + ".delete"
        self.nfs_mount(self.remote, staging)
        try:
            os.rmdir(os.path.join(staging, self.req.sr_uuid))
        except OSError as e:
            self.log(f"leaving the SR folder: {e}")
        finally:
            self.nfs_umount(staging)
            _rmdir(staging)

    def probe_srs(self) -> list[tuple[str, str]]:
        if self.mounted:
            staging = self.path
            self.nfs_mount(self.remote, staging, sr_mount=False)
            try:
                return self._probe_folder(staging)
            finally:
                self.nfs_umount(staging)
                _rmdir(staging)
        if not self.dconf.get("path"):
            raise SMError("ConfigServerMissing")
        return self._probe_folder(os.path.abspath(self.dconf["path"]))

    def _probe_folder(self, base: str) -> list[tuple[str, str]]:
        if not os.path.isdir(base):
            raise SMError("SRUnavailable", f"no such directory {base}")
        return [(n, os.path.join(base, n)) for n in sorted(os.listdir(base))
                if UUID_RE.match(n) and os.path.isdir(os.path.join(base, n))]


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass
