"""Turns wire values into the datamodel's types, or fails with FIELD_TYPE_ERROR [param].

XML-RPC clients send int64 as strings (xapi does too), so ints accept decimal strings; enums accept
any case; datetimes accept plain strings.
"""
from __future__ import annotations

from xmlrpc.client import DateTime

from xapi.datamodel import ENUMS
from xapi.datamodel.errors import XapiError
from xapi.datamodel.types import Type


def converter(t: Type, name: str):
    """A function value -> converted value for type t; None when the value passes as it is."""
    k = t.kind
    if k in ("string", "ref"):
        def conv(v):
            if type(v) is not str:
                raise XapiError("FIELD_TYPE_ERROR", name)
            return v
        return conv
    if k == "int":
        def conv(v):
            if type(v) is int:
                return v
            if type(v) is str:
                try:
                    return int(v)
                except ValueError:
                    pass
            raise XapiError("FIELD_TYPE_ERROR", name)
        return conv
    if k == "float":
        def conv(v):
            if type(v) in (float, int, str):
                try:
                    return float(v)
                except ValueError:
                    pass
            raise XapiError("FIELD_TYPE_ERROR", name)
        return conv
    if k == "bool":
        def conv(v):
            if type(v) is bool:
                return v
            raise XapiError("FIELD_TYPE_ERROR", name)
        return conv
    if k == "datetime":
        def conv(v):
            if isinstance(v, DateTime):
                return v
            if type(v) is str:
                return DateTime(v)
            raise XapiError("FIELD_TYPE_ERROR", name)
        return conv
    if k == "enum":
        canon = {value.lower(): value for value in ENUMS.get(t.name, ())}

        def conv(v):
            if type(v) is str:
                c = canon.get(v.lower())
                if c is not None:
                    return c
            raise XapiError("FIELD_TYPE_ERROR", name)
        return conv
    if k == "set":
        elem = converter(t.elem, name)

        def conv(v):
            if type(v) not in (list, tuple):
                raise XapiError("FIELD_TYPE_ERROR", name)
            return [elem(x) for x in v]
        return conv
    if k == "map":
        key, val = converter(t.key, name), converter(t.elem, name)

        def conv(v):
            if type(v) is not dict:
                raise XapiError("FIELD_TYPE_ERROR", name)
            return {key(a): val(b) for a, b in v.items()}
        return conv
    if k == "record":
        def conv(v):
            if type(v) is not dict:
                raise XapiError("FIELD_TYPE_ERROR", name)
            return v
        return conv
    return lambda v: v
