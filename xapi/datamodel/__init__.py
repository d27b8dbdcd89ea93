"""The XenAPI datamodel: the single source for dispatch, accessors, system.listMethods, RBAC and errors.

The facts live in `generated.py` (from xen-api's published datamodel); this module gives them shape.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from xmlrpc.client import DateTime

from . import generated, hidden
from .types import Type, parse, zero

ROLES = ("pool-admin", "pool-operator", "vm-power-admin", "vm-admin", "vm-operator", "read-only")

# The API version this server speaks (xapi-api-version of the matching xapi release).
API_VERSION_MAJOR = 2
API_VERSION_MINOR = 21


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: Type
    qualifier: str            # RW, RO/constructor, RO/runtime
    default: object           # None when the datamodel gives none

    def initial(self):
        """A fresh copy of the value a new row starts with."""
        if self.default is None:
            return zero(self.type)
        if self.type.kind == "datetime":
            return DateTime(self.default)
        return copy.copy(self.default) if isinstance(self.default, (list, dict)) else self.default


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    type: Type


@dataclass(frozen=True, slots=True)
class Message:
    cls: str
    name: str
    params: tuple[Param, ...]          # without the session
    takes_session: bool
    result: Type
    roles: frozenset[str]
    errors: tuple[str, ...]
    implicit: bool

    @property
    def wire_name(self) -> str:
        return f"{self.cls}.{self.name}"

    @property
    def permission(self) -> str:
        """RBAC permission name, as xapi spells it: the whole wire name in lowercase (vm.set_vcpus_max)."""
        return self.wire_name.lower()


@dataclass(slots=True)
class Class:
    name: str
    fields: dict[str, Field] = field(default_factory=dict)
    messages: dict[str, Message] = field(default_factory=dict)

    @property
    def has_records(self) -> bool:
        return "get_all_records" in self.messages or "get_record" in self.messages


def _build() -> dict[str, Class]:
    classes: dict[str, Class] = {}
    for cname, (fields, messages) in generated.CLASSES.items():
        c = Class(cname)
        for fname, ftype, qual, default in fields:
            c.fields[fname] = Field(fname, parse(ftype), qual, default)
        for mname, params, result, roleset, errors, implicit in messages:
            ps = tuple(Param(pname, parse(ptype)) for ptype, pname in params)
            takes_session = bool(ps) and ps[0].name == "session_id" and ps[0].type.kind == "ref"
            if takes_session:
                ps = ps[1:]
            c.messages[mname] = Message(cname, mname, ps, takes_session, parse(result),
                                        frozenset(generated.ROLE_SETS[roleset]), errors, implicit)
        classes[cname] = c
    hidden.add_hidden(classes, Message, Param, parse)
    return classes


CLASSES: dict[str, Class] = _build()
ENUMS: dict[str, tuple[str, ...]] = generated.ENUMS
# Table names are case-insensitive on the wire (event classes are lowercase): map any case to ours.
CLASS_BY_LOWER: dict[str, str] = {name.lower(): name for name in CLASSES}
