"""The message store: alerts about VMs, hosts, SRs, pools... (xapi_message.ml).

Messages live in the `message` table, so event.from and the legacy event queue report their add and
del like any other object, and on disk as one XML file each under <data>/messages (xapi keeps them
under /var/lib/xcp/blobs/messages, one file per message, outside state.db), so they survive restarts.
The files are read back the first time the store is used. Past LIMIT messages the oldest go, as
xapi's message gc does (Xapi_globs.message_limit).
"""
from __future__ import annotations

import calendar
import contextlib
import logging
import os
import re
import time

from lxml import etree

from xapi import datamodel as dm
from xapi.datamodel.errors import XapiError
from xapi.db.schema import new_ref, new_uuid

log = logging.getLogger("xapi.messages")

LIMIT = 10000
# Record_util.class_to_string of the `cls` enum -> our table
_TABLES = {"VM": "VM", "Host": "host", "SR": "SR", "Pool": "pool", "VMPP": "VMPP", "VMSS": "VMSS",
           "PVS_proxy": "PVS_proxy", "VDI": "VDI", "Certificate": "Certificate"}
_FIELDS = ("name", "priority", "cls", "obj_uuid", "timestamp", "uuid", "body")
# characters XML 1.0 cannot carry (xapi: Encodings.UTF8_XML.is_valid)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})T(\d{2}):?(\d{2}):?(\d{2})(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$")


def wire_time(t: float):
    from xmlrpc.client import DateTime
    return DateTime(time.strftime("%Y%m%dT%H:%M:%SZ", time.gmtime(t)))


def parse_time(value, name: str = "since") -> float:
    """Seconds since the epoch of an ISO 8601 date as xapi reads it (no zone: UTC)."""
    text = getattr(value, "value", value)
    m = _DATE.match(text) if type(text) is str else None
    if m is None:
        raise XapiError("FIELD_TYPE_ERROR", name)
    y, mo, d, h, mi, s, frac, zone = m.groups()
    t = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s), 0, 0, 0)) + float(frac or 0)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        zone = zone[1:].replace(":", "")
        t -= sign * (int(zone[:2]) * 3600 + int(zone[2:]) * 60)
    return t


def object_exists(db, cls: str, obj_uuid: str) -> bool:
    """xapi's check_uuid: an object of that class has that uuid."""
    table = _TABLES.get(cls)
    if table is None or table not in dm.CLASSES or type(obj_uuid) is not str:
        return False
    return bool(db.table(table).find("uuid", obj_uuid))


class Store:
    def __init__(self, app) -> None:
        self.app = app
        self.db = app.db
        self.table = app.db.table("message")
        self.dir = os.path.join(app.config.data_dir, "messages")
        self.times: dict[str, float] = {}      # ref -> creation time (finer than the record's seconds)
        self.files: dict[str, str] = {}        # ref -> file name (the creation time, as xapi names them)
        self._load()

    # -- disk ----------------------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return
        for name in names:
            try:
                t = float(name)
                root = etree.parse(os.path.join(self.dir, name)).getroot()
                rec = {child.tag: child.text or "" for child in root}
                ref = rec["ref"]
                row = {f: rec.get(f, "") for f in _FIELDS}
                row["priority"] = int(row["priority"] or 0)
                row["timestamp"] = wire_time(parse_time(row["timestamp"], "timestamp"))
            except (OSError, ValueError, KeyError, etree.XMLSyntaxError, XapiError):
                log.warning("unreadable message file %s left aside", name)
                continue
            if ref in self.table:
                continue
            self.table.add(ref, row)
            self.times[ref] = t
            self.files[ref] = name

    def _write(self, ref: str, row: dict, t: float) -> str:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        root = etree.Element("message")
        for tag, value in (("ref", ref), ("name", row["name"]), ("priority", str(row["priority"])),
                           ("cls", row["cls"]), ("obj_uuid", row["obj_uuid"]),
                           ("timestamp", row["timestamp"].value), ("uuid", row["uuid"]), ("body", row["body"])):
            etree.SubElement(root, tag).text = value
        data = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
        for _ in range(11):                    # names collide only within 10 µs: move on, as xapi does
            name = "%0.5f" % t
            try:
                fd = os.open(os.path.join(self.dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                t += 0.00001
                continue
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return name
        raise OSError("no free message file name")

    # -- operations ----------------------------------------------------------------------------------
    def create(self, name: str, priority: int, cls: str, obj_uuid: str, body: str) -> str:
        if _NOT_XML.search(body) or _NOT_XML.search(name):
            raise XapiError("INVALID_VALUE", "UTF8 expected")
        if not object_exists(self.db, cls, obj_uuid):
            raise XapiError("UUID_INVALID", cls, obj_uuid)
        t = time.time()
        row = {"name": name, "priority": int(priority), "cls": cls, "obj_uuid": obj_uuid,
               "timestamp": wire_time(t), "uuid": new_uuid(), "body": body}
        ref = new_ref()
        try:
            fname = self._write(ref, row, t)
        except OSError as e:                  # xapi answers the null ref when the write fails
            log.error("message %s not written: %s", name, e)
            return "OpaqueRef:NULL"
        self.table.add(ref, row)
        self.times[ref] = t
        self.files[ref] = fname
        if len(self.times) > LIMIT:
            for old in sorted(self.times, key=self.times.__getitem__)[:len(self.times) - LIMIT]:
                self.remove(old)
        return ref

    def remove(self, ref: str) -> None:
        if type(ref) is not str or ref not in self.table:
            raise XapiError("HANDLE_INVALID", "message", ref)
        fname = self.files.pop(ref, None)
        self.times.pop(ref, None)
        if fname is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.dir, fname))
        self.table.remove(ref)

    def select(self, keep) -> dict:
        """{ref: record} of the messages `keep(ref, record, time)` accepts, newest first."""
        out = []
        for ref, rec in self.table.all_records().items():
            t = self.times.get(ref)
            if t is None:                     # a row this store did not write (a member's replica)
                t = parse_time(rec["timestamp"], "timestamp")
            if keep(ref, rec, t):
                out.append((t, ref, rec))
        out.sort(key=lambda x: x[0], reverse=True)
        return {ref: rec for _, ref, rec in out}


def store(app) -> Store:
    """The daemon's message store, read from disk on first use."""
    s = getattr(app, "message_store", None)
    if s is None:
        s = app.message_store = Store(app)
    return s
