"""xapi's row filter language, as `<Class>.get_all_records_where(expr)` takes it.

Grammar (xen-api `ocaml/database/db_filter_lex.mll`, `db_filter_parse.mly`):

    expr  := value "=" value | expr "and" expr | expr "or" expr | "not" expr
           | "true" | "false" | "(" expr ")"
    value := "field" STRING | STRING              STRING = '"' any chars but '"' '"'

* Tokens: blanks (space, tab, newline) between them, nothing else; keywords are lowercase and need no
  space around them (`field"x"="y"`). There is no escape inside a string, no `<>`, no numbers.
* `and` and `or` have the same precedence and group to the left: `a or b and c` is `(a or b) and c`.
* `not` binds weaker than both: it takes the whole rest of the expression to its right, up to the
  closing parenthesis (`not a and b` is `not (a and b)`).
* A comparison is between strings: a field's value as xapi's database stores it (`true`/`false`,
  decimal ints, refs, enum names as the datamodel spells them, sets and maps as S-expressions
  `('a' 'b')`, `(('k' 'v'))`), or a literal.

Errors are xapi's: a malformed expression is INVALID_VALUE [expr, the parser's exception], and a field
the table lacks is INTERNAL_ERROR ["missing field", name, ""] when a row is actually looked at.
Field names are the database's (`name__label`, `memory__static_max`, `_ref`); the wire names
(`name_label`) are accepted too.
"""
from __future__ import annotations

import functools
from xmlrpc.client import DateTime

from xapi import datamodel as dm
from xapi.datamodel.errors import XapiError

__all__ = ["parse", "compile_filter", "db_string", "ParseError"]

# xapi's messages for the two ways an expression fails to parse (Printexc.to_string of the exception)
_PARSE_ERROR = "Stdlib.Parsing.Parse_error"
_LEX_ERROR = 'Failure("lexing: empty token")'

_KEYWORDS = ("field", "true", "false", "and", "not", "or")


class ParseError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- lexer -----------------------------------------------------------------------------------------
def _tokens(text: str):
    """(kind, value) pairs, read on demand as xapi's parser does (so a bad character after a syntax
    error is not reached); kinds: = ( ) field true false and or not str end."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\n":
            i += 1
        elif c in "=()":
            yield (c, c)
            i += 1
        elif c == '"':
            j = text.find('"', i + 1)
            if j < 0:
                raise ParseError(_LEX_ERROR)
            yield ("str", text[i + 1:j])
            i = j + 1
        else:
            for kw in _KEYWORDS:
                if text.startswith(kw, i):
                    yield (kw, kw)
                    i += len(kw)
                    break
            else:
                raise ParseError(_LEX_ERROR)
    while True:
        yield ("end", "")


# -- parser ----------------------------------------------------------------------------------------
# AST: ("true",) ("false",) ("not", e) ("and", a, b) ("or", a, b) ("eq", v, v); v = ("field", name) | ("lit", s)
class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.next: tuple[str, str] | None = None

    def peek(self) -> str:
        if self.next is None:
            self.next = next(self.toks)
        return self.next[0]

    def take(self, kind: str | None = None) -> tuple[str, str]:
        self.peek()
        tok = self.next
        if kind is not None and tok[0] != kind:
            raise ParseError(_PARSE_ERROR)
        self.next = None
        return tok

    def expr(self):
        left = self.operand()
        while self.peek() in ("and", "or"):
            op = self.take()[0]
            left = (op, left, self.operand())
        return left

    def operand(self):
        kind = self.peek()
        if kind == "not":
            self.take()
            return ("not", self.expr())
        if kind in ("true", "false"):
            self.take()
            return (kind,)
        if kind == "(":
            self.take()
            e = self.expr()
            self.take(")")
            return e
        if kind in ("field", "str"):
            a = self.value()
            self.take("=")
            return ("eq", a, self.value())
        raise ParseError(_PARSE_ERROR)

    def value(self):
        if self.peek() == "field":
            self.take()
            return ("field", self.take("str")[1])
        return ("lit", self.take("str")[1])


@functools.lru_cache(maxsize=512)
def _parse_cached(text: str):
    try:
        p = _Parser(text)
        e = p.expr()
        p.take("end")
        return e, None
    except ParseError as err:
        return None, err.reason


def parse(text: str):
    """The expression's syntax tree; INVALID_VALUE [text, reason] when it is malformed."""
    ast, reason = _parse_cached(text)
    if reason is not None:
        raise XapiError("INVALID_VALUE", text, reason)
    return ast


# -- values as the database stores them ------------------------------------------------------------
def _sexpr_escape(s: str) -> str:
    if "\\" in s or "'" in s or '"' in s:
        s = s.replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'")
    return s


def _atom(v) -> str:
    return "'" + _sexpr_escape(db_string(v)) + "'"


def db_string(v) -> str:
    """A value as xapi's database holds it (what filter expressions compare against)."""
    t = type(v)
    if t is str:
        return v
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return str(v)
    if t is float:
        return repr(v)
    if t is list or t is tuple:
        return "(" + " ".join(_atom(x) for x in v) + ")"
    if t is dict:
        return "(" + " ".join(f"({_atom(k)} {_atom(x)})" for k, x in v.items()) + ")"
    if isinstance(v, DateTime):
        return v.value
    if v is None:
        return ""
    return str(v)


# -- evaluation ------------------------------------------------------------------------------------
def _columns(cls: str) -> dict[str, str]:
    """Database column name (and wire name) -> field name, for one class."""
    cols: dict[str, str] = {}
    for name in dm.CLASSES[cls].fields:
        cols[name] = name
        # namespaced fields are stored as <namespace>__<field>: accept any one '_' doubled
        for i, c in enumerate(name):
            if c == "_" and 0 < i < len(name) - 1:
                cols.setdefault(name[:i] + "_" + name[i:], name)
    return cols


@functools.lru_cache(maxsize=None)
def _columns_cached(cls: str) -> dict[str, str]:
    return _columns(cls)


def _missing(name: str) -> XapiError:
    return XapiError("INTERNAL_ERROR", "missing field", name, "")


def _compile_value(v, cols):
    if v[0] == "lit":
        s = v[1]
        return lambda ref, row: s
    name = v[1]
    if name == "_ref":
        return lambda ref, row: ref
    field = cols.get(name)
    if field is None:
        def missing(ref, row):
            raise _missing(name)
        return missing
    return lambda ref, row: db_string(row[field])


def _compile(e, cols):
    kind = e[0]
    if kind == "true":
        return lambda ref, row: True
    if kind == "false":
        return lambda ref, row: False
    if kind == "not":
        inner = _compile(e[1], cols)
        return lambda ref, row: not inner(ref, row)
    if kind == "and":
        a, b = _compile(e[1], cols), _compile(e[2], cols)
        return lambda ref, row: a(ref, row) and b(ref, row)
    if kind == "or":
        a, b = _compile(e[1], cols), _compile(e[2], cols)
        return lambda ref, row: a(ref, row) or b(ref, row)
    # eq: a literal-only comparison is decided once
    x, y = e[1], e[2]
    if x[0] == "lit" and y[0] == "lit":
        same = x[1] == y[1]
        return lambda ref, row: same
    fx, fy = _compile_value(x, cols), _compile_value(y, cols)
    return lambda ref, row: fx(ref, row) == fy(ref, row)


@functools.lru_cache(maxsize=1024)
def _compiled(cls: str, text: str):
    ast, reason = _parse_cached(text)
    if reason is not None:
        return None
    return _compile(ast, _columns_cached(cls))


def compile_filter(cls: str, text: str):
    """`predicate(ref, row) -> bool` for rows of class `cls`; parsed and compiled once per text.

    Raises INVALID_VALUE for a malformed expression; the predicate raises INTERNAL_ERROR
    ["missing field", name, ""] when it reads a field the class lacks."""
    pred = _compiled(cls, text)
    if pred is None:
        parse(text)   # raises the error
    return pred


def select(cls: str, text: str, records: dict) -> dict:
    """The records (ref -> row) for which the expression holds."""
    pred = compile_filter(cls, text)
    return {ref: row for ref, row in records.items() if pred(ref, row)}
