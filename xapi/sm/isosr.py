"""ISO library and removable-device SR drivers: files in a folder, one VDI each.

``iso`` (SM's ISOSR): device-config ``location`` is a local folder (``/path``), an NFS export
(``server:/path``, mounted soft over TCP by mount.nfs, or by xapi-nfs-mount where the kernel has no
NFS) or an SMB share (``//server/share``, mounted with mount.cifs), at ``<data>/sr-mount/<sr-uuid>``;
``iso_path`` names a sub-folder. Every ``*.iso`` and ``*.img`` there is a read-only VDI whose location
is its file name (and whose uuid is the name when the name is ``<uuid>.iso``); a VDI created on the SR
is an empty file (``sm-config:path`` or ``<uuid>.img``) written later by an upload, writable until the
next scan sees it as an image.

``udev``: device-config ``location`` is a folder of device nodes or links (removable drives); each
entry is a VDI, introduced by a scan or by VDI.introduce.
"""
from __future__ import annotations

import os
import re
import uuid as _uuid

from xapi.sm.driverlib import NULL_REF, Driver, SMError, driver_info
from xapi.sm.filesr import (UUID_RE, data_dir, date_string, is_mount, live_mount, nfs_mount_program,
                            run_command, spec)

IMAGE_RE = re.compile(r"\.(iso|img)$", re.I)
UUID_FILE_RE = re.compile(r"^([0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12})\.(iso|img)$", re.I)
PATH_RE = re.compile(r"^[A-Za-z0-9._-]+\.(iso|img)$")


class FolderSR(Driver):
    """A folder whose entries are the VDIs, located by file name."""

    TYPE = "iso"
    EXTRA_CONFIGURATION: dict[str, str] = {}

    def __init__(self, req) -> None:
        super().__init__(req)
        self.DRIVER_INFO = driver_info(spec(self.TYPE), self.EXTRA_CONFIGURATION)
        self._path: str | None = None
        self.mountpoint = ""
        self.protocol = "local"

    @property
    def path(self) -> str:
        if self._path is None:
            self._path = self.sr_path()
        return self._path

    def sr_path(self) -> str:
        location = self.dconf.get("location")
        if not location:
            raise SMError("ConfigLocationMissing")
        return os.path.abspath(location)

    def entries(self) -> dict[str, int]:
        """location -> size of every VDI file."""
        raise NotImplementedError

    def entry_path(self, location: str) -> str:
        if not location or "/" in location or location in (".", ".."):
            raise SMError("VDIUnavailable", f"bad location {location!r}")
        return os.path.join(self.path, location)

    def check_present(self) -> None:
        if not os.path.isdir(self.path):
            raise SMError("SRUnavailable", f"no such directory {self.path}")

    def db_vdis(self) -> dict[str, tuple[str, dict]]:
        recs = self.api.VDI.get_all_records_where(f'field "SR" = "{self.req.sr_ref}"')
        return {r["location"]: (ref, r) for ref, r in recs.items()}

    def new_record(self, location: str, size: int) -> dict:
        return {"name_label": location, "read_only": False, "sm_config": {}, "uuid": str(_uuid.uuid4())}

    def introduce(self, location: str, size: int, uuid: str | None = None, sm_config=None,
                  name_label: str | None = None, read_only: bool | None = None) -> str:
        new = self.new_record(location, size)
        return self.api.VDI.db_introduce(
            uuid or new["uuid"], new["name_label"] if name_label is None else name_label, "",
            self.req.sr_ref, "user", False, new["read_only"] if read_only is None else read_only, {},
            location, {}, {**new["sm_config"], **(sm_config or {})}, True, str(size), str(size), NULL_REF,
            False, "19700101T00:00:00Z", NULL_REF, False)

    def update_sr(self) -> None:
        st = os.statvfs(self.path)
        size, used = st.f_blocks * st.f_frsize, (st.f_blocks - st.f_bfree) * st.f_frsize
        sr = self.req.sr_ref
        self.api.SR.set_physical_size(sr, str(size))
        self.api.SR.set_physical_utilisation(sr, str(used))
        self.api.SR.set_virtual_allocation(sr, str(size))

    def sync_existing(self, ref: str, rec: dict, size: int) -> None:
        if int(rec["virtual_size"]) != size:
            self.api.VDI.set_virtual_size(ref, str(size))
        if int(rec["physical_utilisation"]) != size:
            self.api.VDI.set_physical_utilisation(ref, str(size))

    # -- SR commands ---------------------------------------------------------------------------
    def sr_create(self):
        self.sr_attach()
        try:
            self.check_present()
        finally:
            self.sr_detach()
        return None

    def sr_delete(self):
        return None          # the files are not ours to delete

    def sr_attach(self):
        self.check_present()
        return None

    def sr_detach(self):
        return None

    def sr_scan(self):
        self.check_present()
        files = self.entries()
        db = self.db_vdis()
        for loc, size in files.items():
            if loc in db:
                ref, rec = db[loc]
                self.sync_existing(ref, rec, size)
            else:
                self.introduce(loc, size)
        for loc, (ref, rec) in db.items():
            if loc not in files:
                self.api.VDI.db_forget(ref)
        self.update_sr()
        return None

    def sr_update(self):
        self.check_present()
        self.update_sr()
        return None

    def sr_probe(self):
        self.sr_attach()
        try:
            self.check_present()
            n = len(self.entries())
            return (f'<?xml version="1.0" ?><SRlist><SR><Path>{self.path}</Path>'
                    f"<Count>{n}</Count></SR></SRlist>")
        finally:
            self.sr_detach()

    # -- VDI commands --------------------------------------------------------------------------
    def vdi_attach(self):
        path = self.entry_path(self.req.vdi_location or "")
        if not os.path.exists(path):
            raise SMError("VDIMissing", path)
        return {"params": path, "format": "raw", "o_direct": True, "o_direct_reason": "",
                "virtual_size": str(self._size(path)),
                "xenstore_data": {"storage-type": self.TYPE, "vdi-uuid": self.req.vdi_uuid}}

    def vdi_detach(self):
        return None

    @staticmethod
    def _size(path: str) -> int:
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)


class ISOSR(FolderSR):
    TYPE = "iso"
    EXTRA_CONFIGURATION = {"iso_path": "sub-folder of the location holding the images (optional)"}

    def sr_path(self) -> str:
        location = self.dconf.get("location")
        if not location:
            raise SMError("ConfigLocationMissing")
        if location.startswith("/") and not self.dconf.get("type"):
            base = self.mountpoint = os.path.abspath(location)
        else:
            kind = self.dconf.get("type")
            if kind == "cifs" or (kind is None and location.startswith(("//", "\\\\"))):
                self.protocol = "cifs"
            elif ":" in location:
                self.protocol = "nfs"
            else:
                raise SMError("ISOLocationStringError")
            base = self.mountpoint = os.path.join(data_dir(), "sr-mount", self.req.sr_uuid or "probe")
        sub = self.dconf.get("iso_path", "").lstrip("/")
        return os.path.join(base, sub) if sub else base

    def sr_attach(self):
        path = self.path
        if self.protocol == "local":
            if not os.path.isdir(path):
                raise SMError("ISOLocalPath", path)
            return None
        if live_mount(self.mountpoint, self.log):
            return None
        os.makedirs(self.mountpoint, exist_ok=True)
        location = self.dconf["location"]
        if self.protocol == "nfs":
            version = self.dconf.get("nfsversion", "3")
            argv = [nfs_mount_program(self.log), location, self.mountpoint, "-o",
                    f"soft,proto=tcp,vers={version},acdirmin=0,acdirmax=0,timeo=200,retrans=4"]
        else:
            opts = ["cache=none", f"vers={self.dconf.get('vers', '3.0')}"]
            if self.dconf.get("username"):
                opts.append(f"username={self.dconf['username']}")
            else:
                opts.append("guest")
            argv = ["mount.cifs", location.replace("\\", "/"), self.mountpoint, "-o", ",".join(opts)]
        run_command(argv, "ISOMountFailure")
        if not os.path.isdir(path):
            self.sr_detach()
            raise SMError("ISOMountFailure", f"{path} not found on the share")
        return None

    def sr_detach(self):
        self.path                       # reads the location: protocol and mount point
        if self.protocol != "local" and is_mount(self.mountpoint):
            run_command(["umount", self.mountpoint], "ISOUnmountFailure")
        return None

    def sr_create(self):
        super().sr_create()
        if self.dconf.get("type"):
            sm_config = self.api.SR.get_sm_config(self.req.sr_ref)
            sm_config["iso_type"] = self.dconf["type"]
            self.api.SR.set_sm_config(self.req.sr_ref, sm_config)
        return None

    def entries(self) -> dict[str, int]:
        out = {}
        for name in os.listdir(self.path):
            p = os.path.join(self.path, name)
            if IMAGE_RE.search(name) and os.path.isfile(p):
                out[name] = os.stat(p).st_size
        return out

    def new_record(self, location: str, size: int) -> dict:
        m = UUID_FILE_RE.match(location)
        return {"name_label": location, "read_only": True, "sm_config": {},
                "uuid": m.group(1).lower() if m else str(_uuid.uuid4())}

    def sync_existing(self, ref: str, rec: dict, size: int) -> None:
        super().sync_existing(ref, rec, size)
        # an uploaded image stays writable (sm-config:created), a found one is read-only
        want_ro = "created" not in rec["sm_config"]
        if rec["read_only"] != want_ro:
            self.api.VDI.set_read_only(ref, want_ro)

    def vdi_create(self):
        self.check_present()
        try:
            size = int(self.req.args[0])
        except (IndexError, ValueError):
            raise SMError("VDISize", "bad size") from None
        if size < 0:
            raise SMError("VDISize", f"size {size}")
        uuid = self.req.vdi_uuid or str(_uuid.uuid4())
        sm_config = dict(self.req.vdi_sm_config)
        filename = sm_config.get("path") or f"{uuid}.img"
        if not PATH_RE.match(filename):
            raise SMError("VDICreate", f'Invalid path "{filename}"')
        path = self.entry_path(filename)
        if os.path.exists(path):
            raise SMError("VDIExists", path)
        sm_config["created"] = date_string()
        try:
            with open(path, "wb") as f:
                f.truncate(size)
        except OSError as e:
            raise SMError("VDICreate", f'could not create file: "{path}": {e}') from None
        args = self.req.args + [""] * 3
        self.introduce(filename, size, uuid=uuid, sm_config=sm_config, name_label=args[1] or filename,
                       read_only=False)
        self.update_sr()
        return {"uuid": uuid, "location": filename}

    def vdi_delete(self):
        if self.req.vdi_ref != NULL_REF:
            self.api.VDI.db_forget(self.req.vdi_ref)
        path = self.entry_path(self.req.vdi_location or "")
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise SMError("VDIDelete", f"{path}: {e}") from None
        self.update_sr()
        return None


class UdevSR(FolderSR):
    TYPE = "udev"

    def entries(self) -> dict[str, int]:
        out = {}
        for name in os.listdir(self.path):
            p = os.path.join(self.path, name)
            try:
                out[name] = self._size(p)
            except OSError:
                out[name] = 0
        return out

    def new_record(self, location: str, size: int) -> dict:
        return {"name_label": location, "read_only": False, "sm_config": {"hotplugged_at": date_string()},
                "uuid": str(_uuid.uuid4())}

    def vdi_introduce(self):
        location = self.req.vdi_location or ""
        path = self.entry_path(location)
        if not os.path.exists(path):
            raise SMError("VDIMissing", path)
        uuid = self.req.new_uuid if self.req.new_uuid and UUID_RE.match(self.req.new_uuid) else None
        ref = self.introduce(location, self._size(path), uuid=uuid, sm_config=self.req.vdi_sm_config)
        return {"uuid": uuid or self.api.VDI.get_uuid(ref), "location": location}

    def vdi_update(self):
        path = self.entry_path(self.req.vdi_location or "")
        if os.path.exists(path):
            size = self._size(path)
            self.api.VDI.set_virtual_size(self.req.vdi_ref, str(size))
            self.api.VDI.set_physical_utilisation(self.req.vdi_ref, str(size))
        return None
