"""ova.xml, sans-IO: one XML-RPC <value> holding a struct {version, objects} (importexport.ml).

`version`: hostname, date, product_version, product_brand, build_number, xapi_major, xapi_minor,
export_vsn (0 when missing: no inline checksums). `objects`: a list of {class, id, snapshot}, where id
is the object's reference in the archive (`Ref:<n>`) and snapshot its record with references
rewritten to those ids (or OpaqueRef:NULL). Written as xapi writes XML-RPC: strings as bare
<value>text</value>, int64 fields as strings, no XML declaration; read leniently (i4/int/i8,
whitespace, a declaration).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from xapi import rpc
from xapi.tasks import value_text

FILENAME = "ova.xml"
EXPORT_VSN = 2
VERSION_KEYS = ("hostname", "date", "product_version", "product_brand", "build_number", "xapi_major",
                "xapi_minor", "export_vsn")


class OvaError(Exception):
    """ova.xml isn't what xapi writes (the message says what is missing)."""


@dataclass
class Version:
    hostname: str = ""
    date: str = ""
    product_version: str = ""
    product_brand: str = ""
    build_number: str = ""
    xapi_major: int = 0
    xapi_minor: int = 0
    export_vsn: int = EXPORT_VSN

    def to_rpc(self) -> dict:
        return {"hostname": self.hostname, "date": self.date, "product_version": self.product_version,
                "product_brand": self.product_brand, "build_number": self.build_number,
                "xapi_major": str(self.xapi_major), "xapi_minor": str(self.xapi_minor),
                "export_vsn": str(self.export_vsn)}


@dataclass
class Obj:
    cls: str
    id: str
    snapshot: dict


@dataclass
class Header:
    version: Version
    objects: list = field(default_factory=list)

    def by_id(self) -> dict:
        return {o.id: o for o in self.objects}


def dumps(header: Header) -> bytes:
    value = {"version": header.version.to_rpc(),
             "objects": [{"class": o.cls, "id": o.id, "snapshot": o.snapshot} for o in header.objects]}
    return value_text(value).encode("utf-8")


_DECL = re.compile(rb"^\s*(<\?xml[^>]*\?>)?\s*", re.S)


def _int(v, what: str) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        raise OvaError(f"version_of_rpc: {what} is not an int ({v!r})") from None


def loads(data: bytes) -> Header:
    body = _DECL.sub(b"", bytes(data), count=1)
    doc = b'<?xml version="1.0"?><methodResponse><params><param>' + body + b"</param></params></methodResponse>"
    try:
        (value,), _ = rpc.loads(doc)
    except Exception as e:  # noqa: BLE001 - any parse failure is a malformed ova.xml
        raise OvaError(f"ova.xml is not an XML-RPC value: {e}") from None
    if not isinstance(value, dict):
        raise OvaError("ova.xml is not a struct")
    for key in ("version", "objects"):
        if key not in value:
            raise OvaError(f"Failed to find key '{key}' in header")
    v = value["version"]
    if not isinstance(v, dict):
        raise OvaError("version_of_rpc: malformed RPC")
    for key in VERSION_KEYS[:7]:
        if key not in v:
            raise OvaError(f"Failed to find key '{key}' in version data")
    version = Version(str(v["hostname"]), str(v["date"]), str(v["product_version"]),
                      str(v["product_brand"]), str(v["build_number"]),
                      _int(v["xapi_major"], "xapi_major"), _int(v["xapi_minor"], "xapi_minor"),
                      _int(v.get("export_vsn", 0), "export_vsn") if "export_vsn" in v else 0)
    objects = []
    if not isinstance(value["objects"], list):
        raise OvaError("objects is not an array")
    for o in value["objects"]:
        if not isinstance(o, dict) or not {"class", "id", "snapshot"} <= set(o):
            raise OvaError("an object lacks class, id or snapshot")
        if not isinstance(o["snapshot"], dict):
            raise OvaError(f"the snapshot of {o['id']} is not a struct")
        objects.append(Obj(str(o["class"]), str(o["id"]), o["snapshot"]))
    return Header(version, objects)
