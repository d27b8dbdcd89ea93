"""xapi's filter expressions (get_all_records_where): the grammar, values as the database stores them,
and the errors xapi gives."""
import pytest
from hypothesis import given, settings, strategies as st
from xmlrpc.client import DateTime

from xapi import datamodel as dm
from xapi.actions import where
from xapi.actions.accessors import accessor
from xapi.datamodel.errors import XapiError
from xapi.db.schema import insert, new_database

PARSE = "Stdlib.Parsing.Parse_error"
LEX = 'Failure("lexing: empty token")'


def err(fn, *args):
    with pytest.raises(XapiError) as e:
        fn(*args)
    return [e.value.code, *e.value.args[1:]]


# -- grammar -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,tree", [
    ("true", ("true",)),
    ("false", ("false",)),
    ('field "power_state"="Halted"', ("eq", ("field", "power_state"), ("lit", "Halted"))),
    ('"Halted" = field "power_state"', ("eq", ("lit", "Halted"), ("field", "power_state"))),
    ('field"a"=field"b"', ("eq", ("field", "a"), ("field", "b"))),
    ('"x"="y"', ("eq", ("lit", "x"), ("lit", "y"))),
    ('  \ttrue\n', ("true",)),
    ('(((true)))', ("true",)),
    ('field "a"="with spaces and = ( ) \' chars"', ("eq", ("field", "a"), ("lit", "with spaces and = ( ) ' chars"))),
    ('field "a"=""', ("eq", ("field", "a"), ("lit", ""))),
    # and/or: one precedence, grouped to the left
    ("true or false and false", ("and", ("or", ("true",), ("false",)), ("false",))),
    ("false and true or true", ("or", ("and", ("false",), ("true",)), ("true",))),
    # not takes everything to its right
    ("not true and false", ("not", ("and", ("true",), ("false",)))),
    ("true and not false or true", ("and", ("true",), ("not", ("or", ("false",), ("true",))))),
    ("(not true) and false", ("and", ("not", ("true",)), ("false",))),
    ("not not true", ("not", ("not", ("true",)))),
    ("nottrue", ("not", ("true",))),   # keywords need no blanks around them
])
def test_grammar(text, tree):
    assert where.parse(text) == tree


@pytest.mark.parametrize("text,reason", [
    ("", PARSE),
    ("   ", PARSE),
    ("=", PARSE),
    ("()", PARSE),
    ("(true", PARSE),
    ("true)", PARSE),
    ("true true", PARSE),
    ("and", PARSE),
    ("true and", PARSE),
    ("not", PARSE),
    ('"a"', PARSE),
    ('field "a"', PARSE),
    ('field "a" = ', PARSE),
    ('field "a" = field', PARSE),
    ('field = "a"', PARSE),
    ('"a" = "b" = "c"', PARSE),
    ("TRUE", LEX),                       # keywords are lowercase
    ('field "a" <> "b"', LEX),           # there is no <>
    ("trueish", LEX),
    ('field "a" = "b', LEX),             # unterminated string
    ("field 'a' = 'b'", LEX),            # only double quotes
    ('field "a" = 1', LEX),              # no numbers
    ("true\r", LEX),                     # \r is not a blank to xapi
    ("= @", PARSE),                      # the parser fails before the lexer reaches '@'
])
def test_malformed_expressions_are_invalid_value(text, reason):
    assert err(where.parse, text) == ["INVALID_VALUE", text, reason]
    assert err(where.compile_filter, "VM", text) == ["INVALID_VALUE", text, reason]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='fieldtruasno()="x \t\n@\\', max_size=40))
def test_any_text_parses_or_fails_with_invalid_value(text):
    try:
        pred = where.compile_filter("network", text)
    except XapiError as e:
        assert e.code == "INVALID_VALUE" and e.args[1] == text
        return
    try:
        assert pred("OpaqueRef:x", {f: fld.initial() for f, fld in dm.CLASSES["network"].fields.items()}) \
            in (True, False)
    except XapiError as e:
        assert e.code == "INTERNAL_ERROR" and e.args[1] == "missing field"


def test_parse_and_compile_are_cached():
    text = 'field "name__label" = "cached"'
    assert where.compile_filter("VM", text) is where.compile_filter("VM", text)
    assert where.compile_filter("VM", text) is not where.compile_filter("network", text)


# -- values --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value,text", [
    ("s", "s"), (True, "true"), (False, "false"), (0, "0"), (-1, "-1"), (1 << 40, "1099511627776"),
    ([], "()"), (["a", "b"], "('a' 'b')"), ({}, "()"), ({"k": "v", "x": "y"}, "(('k' 'v') ('x' 'y'))"),
    (["it's", 'a"b', "c\\d"], "('it\\'s' 'a\\\"b' 'c\\\\d')"),
    ({1: 0.5}, "(('1' '0.5'))"),
    (DateTime("20250319T04:16:24Z"), "20250319T04:16:24Z"),
])
def test_db_strings(value, text):
    assert where.db_string(value) == text


# -- evaluation over a table ---------------------------------------------------------------------------
@pytest.fixture
def db():
    d = new_database()
    insert(d, "VM", ref="OpaqueRef:halted", name_label="web", power_state="Halted", is_a_template=False,
           memory_static_max=1 << 30, tags=["a", "b"], other_config={"k": "v"})
    insert(d, "VM", ref="OpaqueRef:tpl", name_label="Debian", power_state="Halted", is_a_template=True,
           memory_static_max=2 << 30)
    insert(d, "VM", ref="OpaqueRef:run", name_label="db", power_state="Running", is_a_template=False,
           memory_static_max=1 << 30, resident_on="OpaqueRef:host")
    return d


def where_(db, cls, expr):
    return accessor(dm.CLASSES[cls].messages["get_all_records_where"], db)(None, None, expr)


@pytest.mark.parametrize("expr,refs", [
    ("true", {"halted", "tpl", "run"}),
    ("false", set()),
    ('field "is_a_template"="true"', {"tpl"}),
    ('field "is_a_template"="false"', {"halted", "run"}),
    ('field "is_a_template"="True"', set()),                # compared as strings
    ('field "power_state"="Running"', {"run"}),
    ('field "power_state"="running"', set()),
    ('field "name__label"="web"', {"halted"}),              # the database's column name ...
    ('field "name_label"="web"', {"halted"}),               # ... and the wire name
    ('field "memory__static_max"="1073741824"', {"halted", "run"}),
    ('field "memory_static_max"="2147483648"', {"tpl"}),
    ('field "resident_on"="OpaqueRef:host"', {"run"}),
    ('field "resident_on"="OpaqueRef:NULL"', {"halted", "tpl"}),
    ('field "_ref"="OpaqueRef:tpl"', {"tpl"}),
    ('field "tags"="(\'a\' \'b\')"', {"halted"}),
    ('field "other_config"="((\'k\' \'v\'))"', {"halted"}),
    ('field "tags"="()"', {"tpl", "run"}),
    ('not field "is_a_template"="true"', {"halted", "run"}),
    ('field "is_a_template"="false" and field "power_state"="Halted"', {"halted"}),
    ('field "name__label"="web" or field "name__label"="db"', {"halted", "run"}),
    ('field "name__label"="web" or field "name__label"="db" and field "power_state"="Running"', {"run"}),
    ('"a"="a"', {"halted", "tpl", "run"}),
    ('"a"="b"', set()),
    ('field "name__label" = field "name__label"', {"halted", "tpl", "run"}),
])
def test_evaluation(db, expr, refs):
    got = where_(db, "VM", expr)
    assert set(got) == {f"OpaqueRef:{r}" for r in refs}
    for ref, row in got.items():
        assert row == db.table("VM").get(ref)


def test_unknown_field_is_xapis_internal_error_when_a_row_is_read(db):
    assert err(where_, db, "VM", 'field "no_such"="x"') == ["INTERNAL_ERROR", "missing field", "no_such", ""]
    assert err(where_, db, "VM", 'true and field "nAme__label"="x"') == \
        ["INTERNAL_ERROR", "missing field", "nAme__label", ""]
    # never read: no rows, or cut short by and/or
    assert where_(db, "network", 'field "no_such"="x"') == {}
    assert where_(db, "VM", 'false and field "no_such"="x"') == {}
    assert len(where_(db, "VM", 'true or field "no_such"="x"')) == 3


def test_malformed_through_the_accessor(db):
    assert err(where_, db, "VM", "field") == ["INVALID_VALUE", "field", PARSE]


def test_every_class_with_records_has_get_all_records_where():
    for c in dm.CLASSES.values():
        if "get_all_records" in c.messages:
            m = c.messages["get_all_records_where"]
            assert [p.name for p in m.params] == ["expr"] and m.takes_session
            assert m.result == c.messages["get_all_records"].result
            assert accessor(m, new_database()) is not None
