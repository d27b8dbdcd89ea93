"""XenAPI type expressions ("VM ref set", "(string -> string) map", "enum vm_power_state") as values."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from xmlrpc.client import DateTime

SCALARS = ("string", "int", "float", "bool", "datetime", "void")


@dataclass(frozen=True, slots=True)
class Type:
    kind: str                 # string int float bool datetime void enum ref set map record option event_batch
    name: str = ""            # enum name, or the class of a ref / record
    elem: "Type | None" = None  # set element, map value
    key: "Type | None" = None   # map key

    def __str__(self) -> str:
        if self.kind in SCALARS:
            return self.kind
        if self.kind == "enum":
            return f"enum {self.name}"
        if self.kind in ("ref", "record"):
            return f"{self.name} {self.kind}"
        if self.kind == "set":
            return f"{self.elem} set"
        if self.kind == "option":
            return f"{self.elem} option"
        if self.kind == "event_batch":
            return "an event batch"
        return f"({self.key} -> {self.elem}) map"


_MAP = re.compile(r"\((.+?) -> (.+)\) map")


def parse(text: str) -> Type:
    text = text.strip()
    if text in SCALARS:
        return Type(text)
    if text == "an event batch":       # event.from's result: a struct of events, counts and token
        return Type("event_batch")
    if text.endswith(" set"):
        return Type("set", elem=parse(text[:-4]))
    if text.endswith(" option"):
        return Type("option", elem=parse(text[:-7]))
    m = _MAP.fullmatch(text)
    if m:
        return Type("map", key=parse(m.group(1)), elem=parse(m.group(2)))
    if text.startswith("enum "):
        return Type("enum", name=text[5:])
    if text.endswith(" ref"):
        return Type("ref", name=text[:-4])
    if text.endswith(" record"):
        return Type("record", name=text[:-7])
    raise ValueError(f"unknown XenAPI type {text!r}")


EPOCH = "19700101T00:00:00Z"


def zero(t: Type):
    """The value a field of this type has when nothing was said."""
    k = t.kind
    if k == "string":
        return ""
    if k == "int":
        return 0
    if k == "float":
        return 0.0
    if k == "bool":
        return False
    if k == "datetime":
        return DateTime(EPOCH)
    if k == "ref":
        return "OpaqueRef:NULL"
    if k == "set":
        return []
    if k == "map":
        return {}
    return ""


def datetime_now() -> DateTime:
    """Now, in xapi's wire form (UTC, 'Z' suffix)."""
    return DateTime(time.strftime("%Y%m%dT%H:%M:%SZ", time.gmtime()))
