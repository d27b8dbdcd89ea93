"""The XenAPI XML-RPC codec, run against both implementations.

Every test takes the ``rpc`` fixture, which is the compiled ``xapi._rpc`` and
the pure-Python ``xapi.rpc_ref`` in turn (imported directly, so both run
whatever XAPI_PURE says).  The helpers here (``canon``, the hypothesis
strategies) are shared by the other ``test_rpc_*`` modules.
"""
import collections
import enum
import importlib
import math
import os
import time
import xmlrpc.client
from datetime import datetime
from xmlrpc.client import Binary, DateTime, Fault

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from xapi.rpc_errors import CodecError

IMPLS = [pytest.param("xapi._rpc", id="compiled"), pytest.param("xapi.rpc_ref", id="reference")]
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(params=IMPLS, scope="module")
def rpc(request):
    return importlib.import_module(request.param)


# ---------------------------------------------------------------------------
# shared helpers

def canon(v):
    """A comparable form that tells bool from int, keeps dict order, and equates NaNs."""
    t = type(v)
    if t is float:
        return ("float", repr(v))
    if t is DateTime:
        return ("datetime", v.value)
    if t is Binary:
        return ("binary", bytes(v.data))
    if t is dict:
        return ("dict", [(canon(k), canon(x)) for k, x in v.items()])
    if t is list or t is tuple:
        return (t.__name__, [canon(x) for x in v])
    return (t.__name__, v)


def outcome(fn, doc):
    """What loads does with doc: its value, a Fault, or a CodecError (anything else propagates)."""
    try:
        return ("ok", canon(fn(doc)))
    except Fault as e:
        return ("fault", canon(e.faultCode), canon(e.faultString))
    except CodecError:
        return ("error",)


def ints_to_strings(v):
    if type(v) is bool:
        return v
    if type(v) is int:
        return str(v)
    if type(v) is dict:
        return {k: ints_to_strings(x) for k, x in v.items()}
    if type(v) is list:
        return [ints_to_strings(x) for x in v]
    return v


xml_chars = st.one_of(
    st.sampled_from("\t\n\r &<>]\"';#x"),
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    st.characters(min_codepoint=0x80, max_codepoint=0xD7FF),
    st.characters(min_codepoint=0xE000, max_codepoint=0xFFFD),
    st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF),
)
xml_text = st.text(xml_chars, max_size=24)
date_times = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(
    lambda d: DateTime(d.replace(microsecond=0)))
binaries = st.binary(max_size=24).map(Binary)


def xenapi_values(ints=st.integers(-(1 << 63), (1 << 63) - 1), floats=st.floats(allow_nan=False)):
    scalars = st.one_of(xml_text, ints, st.booleans(), floats, st.none(), date_times, binaries)
    return st.recursive(
        scalars,
        lambda ch: st.one_of(st.lists(ch, max_size=4), st.dictionaries(xml_text, ch, max_size=4)),
        max_leaves=16)


values64 = xenapi_values()
values32 = xenapi_values(ints=st.integers(-(1 << 31), (1 << 31) - 1))
method_names = st.text(st.sampled_from("abcxyzXYZ_.0123456789"), min_size=1, max_size=20)


def wrap(value: str) -> bytes:
    return (f'<?xml version="1.0"?><methodResponse><params><param>{value}</param></params>'
            "</methodResponse>").encode()


# ---------------------------------------------------------------------------
# the facade

def test_facade_selects_implementation():
    from xapi import rpc
    pure = os.environ.get("XAPI_PURE", "") not in ("", "0")
    assert rpc.IMPLEMENTATION == ("xapi.rpc_ref" if pure else "xapi._rpc")
    assert rpc.CodecError is CodecError
    for name in ("loads", "dumps", "dumps_success", "dumps_failure", "json_loads_request",
                 "json_dumps_success", "json_dumps_failure"):
        assert callable(getattr(rpc, name))
    assert issubclass(CodecError, ValueError)


def test_same_api(rpc):
    assert rpc.CodecError is CodecError
    assert rpc.MAX_DEPTH == 256
    assert rpc.MAX_SIZE == 256 * 1024 * 1024


# ---------------------------------------------------------------------------
# round trips and agreement with xmlrpc.client

@SETTINGS
@given(v=values64)
def test_round_trip_response(rpc, v):
    assert canon(rpc.loads(rpc.dumps((v,), methodresponse=True))) == canon(((v,), None))


@SETTINGS
@given(params=st.lists(values64, max_size=3), name=method_names)
def test_round_trip_call(rpc, params, name):
    doc = rpc.dumps(tuple(params), name)
    assert canon(rpc.loads(doc)) == canon((tuple(params), name))
    assert canon(rpc.loads(rpc.dumps(tuple(params)))) == canon((tuple(params), None))


@SETTINGS
@given(v=values64)
def test_round_trip_ints_as_strings(rpc, v):
    doc = rpc.dumps((v,), methodresponse=True, ints_as_strings=True)
    assert canon(rpc.loads(doc)) == canon(((ints_to_strings(v),), None))
    assert doc == rpc.dumps((ints_to_strings(v),), methodresponse=True)


def test_round_trip_nan_and_inf(rpc):
    (vals,), _ = rpc.loads(rpc.dumps(([math.nan, math.inf, -math.inf, -0.0, 1e300, 5e-324],),
                                     methodresponse=True))
    assert math.isnan(vals[0])
    assert vals[1:] == [math.inf, -math.inf, 0.0, 1e300, 5e-324]
    assert math.copysign(1, vals[3]) == -1


@SETTINGS
@given(v=values32, name=method_names)
def test_loads_agrees_with_xmlrpc_client(rpc, v, name):
    for doc in (xmlrpc.client.dumps((v,), methodresponse=True, allow_none=True),
                xmlrpc.client.dumps((v, v), name, allow_none=True)):
        expected = canon(xmlrpc.client.loads(doc))
        assert canon(rpc.loads(doc)) == expected
        assert canon(rpc.loads(doc.encode("utf-8"))) == expected


@SETTINGS
@given(v=values64)
def test_xmlrpc_client_reads_our_dumps(rpc, v):
    assert canon(xmlrpc.client.loads(rpc.dumps((v,), methodresponse=True))) == canon(((v,), None))
    assert (canon(xmlrpc.client.loads(rpc.dumps((v,), methodresponse=True, ints_as_strings=True)))
            == canon(((ints_to_strings(v),), None)))
    assert canon(xmlrpc.client.loads(rpc.dumps_success(v))) == canon(
        (({"Status": "Success", "Value": ints_to_strings(v)},), None))


@SETTINGS
@given(desc=st.lists(st.one_of(xml_text, st.integers(-(1 << 63), (1 << 63) - 1))))
def test_helpers_match_dumps(rpc, desc):
    assert rpc.dumps_failure(desc) == rpc.dumps(
        ({"Status": "Failure", "ErrorDescription": [str(x) for x in desc]},), methodresponse=True)
    assert rpc.dumps_success(desc) == rpc.dumps(({"Status": "Success", "Value": desc},),
                                                methodresponse=True, ints_as_strings=True)
    assert rpc.dumps_success(desc, ints_as_strings=False) == rpc.dumps(
        ({"Status": "Success", "Value": desc},), methodresponse=True)


# ---------------------------------------------------------------------------
# dumps: exact output

def test_dumps_compact_xapi_style(rpc):
    doc = rpc.dumps(("s<&>\r\n", 1, True, None, 1.5, [], {}), "VM.get_record")
    assert doc == (b'<?xml version="1.0"?><methodCall><methodName>VM.get_record</methodName><params>'
                   b"<param><value>s&lt;&amp;&gt;&#13;\n</value></param>"
                   b"<param><value><int>1</int></value></param>"
                   b"<param><value><boolean>1</boolean></value></param>"
                   b"<param><value><nil/></value></param>"
                   b"<param><value><double>1.5</double></value></param>"
                   b"<param><value><array><data></data></array></value></param>"
                   b"<param><value><struct></struct></value></param>"
                   b"</params></methodCall>")
    assert rpc.dumps(("",), methodresponse=True) == (
        b'<?xml version="1.0"?><methodResponse><params><param><value></value></param></params>'
        b"</methodResponse>")
    assert rpc.dumps(()) == b'<?xml version="1.0"?><params></params>'


def test_dumps_success_and_failure(rpc):
    assert rpc.dumps_success({"a": 5, "b": False}) == (
        b'<?xml version="1.0"?><methodResponse><params><param><value><struct>'
        b"<member><name>Status</name><value>Success</value></member>"
        b"<member><name>Value</name><value><struct><member><name>a</name><value>5</value></member>"
        b"<member><name>b</name><value><boolean>0</boolean></value></member></struct></value></member>"
        b"</struct></value></param></params></methodResponse>")
    assert rpc.dumps_failure(["HANDLE_INVALID", "VM", 3]) == (
        b'<?xml version="1.0"?><methodResponse><params><param><value><struct>'
        b"<member><name>Status</name><value>Failure</value></member>"
        b"<member><name>ErrorDescription</name><value><array><data><value>HANDLE_INVALID</value>"
        b"<value>VM</value><value>3</value></data></array></value></member>"
        b"</struct></value></param></params></methodResponse>")


@pytest.mark.parametrize("v, plain, as_string", [
    (0, b"<int>0</int>", b"0"),
    ((1 << 31) - 1, b"<int>2147483647</int>", b"2147483647"),
    (-(1 << 31), b"<int>-2147483648</int>", b"-2147483648"),
    (1 << 31, b"<i8>2147483648</i8>", b"2147483648"),
    ((1 << 63) - 1, b"<i8>9223372036854775807</i8>", b"9223372036854775807"),
    (-(1 << 63), b"<i8>-9223372036854775808</i8>", b"-9223372036854775808"),
    (True, b"<boolean>1</boolean>", b"<boolean>1</boolean>"),
])
def test_dumps_ints(rpc, v, plain, as_string):
    assert rpc.dumps((v,)) == b'<?xml version="1.0"?><params><param><value>' + plain + b"</value></param></params>"
    assert rpc.dumps((v,), ints_as_strings=True) == (
        b'<?xml version="1.0"?><params><param><value>' + as_string + b"</value></param></params>")


@pytest.mark.parametrize("v", [1 << 63, -(1 << 63) - 1, 1 << 200])
def test_dumps_int_overflow(rpc, v):
    with pytest.raises(CodecError):
        rpc.dumps((v,))
    with pytest.raises(CodecError):
        rpc.dumps((v,), ints_as_strings=True)


def test_dumps_other_types(rpc):
    def body(v, **kw):
        doc = rpc.dumps((v,), **kw)
        return doc[len(b'<?xml version="1.0"?><params><param>'):-len(b"</param></params>")]

    assert body(DateTime("20250319T04:16:24Z")) == b"<value><dateTime.iso8601>20250319T04:16:24Z</dateTime.iso8601></value>"
    assert body(datetime(2025, 3, 19, 4, 16, 24, 999)) == b"<value><dateTime.iso8601>20250319T04:16:24</dateTime.iso8601></value>"
    assert body(datetime(99, 1, 2)) == b"<value><dateTime.iso8601>00990102T00:00:00</dateTime.iso8601></value>"
    assert body(Binary(b"x" * 100)) == b"<value><base64>" + b"eHh4" * 33 + b"eA==</base64></value>"
    assert body(b"abc") == body(bytearray(b"abc")) == b"<value><base64>YWJj</base64></value>"
    assert body((1, "a")) == body([1, "a"]) == b"<value><array><data><value><int>1</int></value><value>a</value></data></array></value>"
    assert body({1: "a", "b": 2}) == (b"<value><struct><member><name>1</name><value>a</value></member>"
                                      b"<member><name>b</name><value><int>2</int></value></member></struct></value>")
    assert body(0.1) == b"<value><double>0.1</double></value>"
    assert body(float("nan")) == b"<value><double>nan</double></value>"
    assert body(-float("inf")) == b"<value><double>-inf</double></value>"
    assert body("\u00e9\u4e2d\U0001F600") == "<value>\u00e9\u4e2d\U0001F600</value>".encode()
    assert body("a]]>b") == b"<value>a]]&gt;b</value>"


def test_dumps_subclasses_encode_as_their_base(rpc):
    class Colour(enum.IntEnum):
        RED = 7

    class Power(str, enum.Enum):
        HALTED = "Halted"

    class F(float):
        def __repr__(self):
            return "nope"

    od = collections.OrderedDict([("b", 1), ("a", 2)])
    od.move_to_end("b")
    assert rpc.dumps((Colour.RED, Power.HALTED, F(2.5), od, {Colour.RED: 1})) == rpc.dumps(
        (7, "Halted", 2.5, {"a": 2, "b": 1}, {7: 1}))
    assert rpc.dumps((collections.defaultdict(list, a=[1]),)) == rpc.dumps(({"a": [1]},))


def _bad_datetime():
    d = DateTime()
    d.value = 5
    return d


def _bad_binary():
    b = Binary()
    b.data = "not bytes"
    return b


@pytest.mark.parametrize("v", [
    "a\x00b", "\x08", "\x0b", "\x0c", "\x1f", "\ud800", "x\udfffy", "\ufffe", "\uffff",
    {"a\x01": 1}, {True: 1}, {1.5: 1}, {None: 1}, {(1,): 1},
    {1, 2}, frozenset(), object(), 1j, memoryview(b"x"), Fault(1, "x"), _bad_datetime(), _bad_binary(),
    DateTime("a\x00"), [1, 2, {"a": ["\x00"]}],
])
def test_dumps_rejects(rpc, v):
    with pytest.raises(CodecError):
        rpc.dumps((v,))
    with pytest.raises(CodecError):
        rpc.dumps_success([v])


def test_dumps_arguments(rpc):
    with pytest.raises(CodecError):
        rpc.dumps((None,), allow_none=False)
    assert rpc.dumps((None,), allow_none=True).count(b"<nil/>") == 1
    with pytest.raises(CodecError):
        rpc.dumps((1, 2), methodresponse=True)
    with pytest.raises(CodecError):
        rpc.dumps((1,), "bad\x00name")
    with pytest.raises(CodecError):
        rpc.dumps((1,), 5)
    with pytest.raises(TypeError):
        rpc.dumps("not a tuple")
    with pytest.raises(CodecError):
        rpc.dumps(Fault(1, "x"), "method")
    with pytest.raises(CodecError):
        rpc.dumps_failure("not a list")
    assert rpc.dumps((1,), "a<b", methodresponse=True).startswith(
        b'<?xml version="1.0"?><methodCall><methodName>a&lt;b</methodName>')
    assert rpc.dumps([1, 2]) == rpc.dumps((1, 2))


def test_dumps_fault(rpc):
    doc = rpc.dumps(Fault(42, "it <broke>"), ints_as_strings=True)
    assert doc == (b'<?xml version="1.0"?><methodResponse><fault><value><struct>'
                   b"<member><name>faultCode</name><value><int>42</int></value></member>"
                   b"<member><name>faultString</name><value>it &lt;broke&gt;</value></member>"
                   b"</struct></value></fault></methodResponse>")
    for reader in (rpc.loads, xmlrpc.client.loads):
        with pytest.raises(Fault) as e:
            reader(doc)
        assert (e.value.faultCode, e.value.faultString) == (42, "it <broke>")


def test_dumps_depth_limit(rpc):
    def nested(n):
        v = []
        for _ in range(n - 1):
            v = [v]
        return v

    ok = rpc.dumps((nested(256),), methodresponse=True)
    assert canon(rpc.loads(ok)) == canon(((nested(256),), None))
    with pytest.raises(CodecError):
        rpc.dumps((nested(257),))
    # dumps_success puts Value one level down
    rpc.dumps_success(nested(255))
    with pytest.raises(CodecError):
        rpc.dumps_success(nested(256))
    # the same limit on decoding
    assert ok.count(b"<value>") == 256
    deeper = ok.replace(b"<data></data>", b"<data><value><array><data></data></array></value></data>")
    with pytest.raises(CodecError):
        rpc.loads(deeper)
    assert canon(rpc.loads(deeper.replace(b"<value><array><data></data></array></value></data>",
                                          b"</data>"))) == canon(((nested(256),), None))


def test_self_referencing_containers(rpc):
    a = []
    a.append(a)
    d = {}
    d["d"] = d
    for v in (a, d):
        with pytest.raises(CodecError):
            rpc.dumps((v,))


def test_depth_limit_is_a_module_attribute(rpc, monkeypatch):
    monkeypatch.setattr(rpc, "MAX_DEPTH", 2)
    rpc.dumps(([1],))
    with pytest.raises(CodecError):
        rpc.dumps(([[1]],))
    assert rpc.loads(rpc.dumps(([1],))) == (([1],), None)
    with pytest.raises(CodecError):
        rpc.loads(wrap("<value><array><data><value><array><data><value/></data></array></value></data>"
                       "</array></value>"))


# ---------------------------------------------------------------------------
# loads: valid documents

VALID = [
    ("<value/>", ""),
    ("<value></value>", ""),
    ("<value><string/></value>", ""),
    ("<value><string></string></value>", ""),
    ("<value>  spaced \t\n out  </value>", "  spaced \t\n out  "),
    ("<value>\n  <int> 7 </int>\n</value>", 7),
    ("<value><i4>-5</i4></value>", -5),
    ("<value><int>+3</int></value>", 3),
    ("<value><int>007</int></value>", 7),
    ("<value><int>-" + "0" * 100_000 + "12</int></value>", -12),
    ("<value><double>" + "0" * 100_000 + "1.5</double></value>", 1.5),
    ("<value><i8>9223372036854775807</i8></value>", (1 << 63) - 1),
    ("<value><int>-9223372036854775808</int></value>", -(1 << 63)),
    ("<value><int>&#49;2</int></value>", 12),
    ("<value><boolean>0</boolean></value>", False),
    ("<value><boolean>1</boolean></value>", True),
    ("<value><double>-1.5e3</double></value>", -1500.0),
    ("<value><double> 2 </double></value>", 2.0),
    ("<value><double>.5</double></value>", 0.5),
    ("<value><double>inf</double></value>", math.inf),
    ("<value><double>-Infinity</double></value>", -math.inf),
    ("<value><dateTime.iso8601> 20250319T04:16:24Z </dateTime.iso8601></value>", DateTime("20250319T04:16:24Z")),
    ("<value><dateTime.iso8601/></value>", DateTime("")),
    ("<value><base64>YWJj\nZGVm</base64></value>", Binary(b"abcdef")),
    ("<value><base64/></value>", Binary(b"")),
    ("<value><nil/></value>", None),
    ("<value><nil></nil></value>", None),
    ("<value><nil> </nil></value>", None),
    ("<value><ex:nil/></value>", None),
    ("<value><ex:i8>12</ex:i8></value>", 12),
    ("<value><struct/></value>", {}),
    ("<value><struct></struct></value>", {}),
    ("<value><array><data/></array></value>", []),
    ("<value><struct><member><name>a&amp;b</name><value>1</value></member>"
     "<member><name>a&amp;b</name><value>2</value></member>"
     "<member><name/><value/></member></struct></value>", {"a&b": "2", "": ""}),
    ("<value>a&lt;b&gt;c&amp;d&quot;e&apos;f&#65;&#x42;&#x1F600;&#xe9;</value>", "a<b>c&d\"e'fAB\U0001F600\u00e9"),
    ("<value>x&#13;y\r\nz\rw</value>", "x\ry\nz\nw"),
    ("<value><![CDATA[<&>\r\n]]></value>", "<&>\n"),
    ("<value>a<![CDATA[]]>b<![CDATA[]]]]><![CDATA[>]]></value>", "ab]]>"),
    ("<value>a<!-- c -->b<?pi x?>c<!---->d</value>", "abcd"),
    ("<value> <!-- c --> <struct> <!-- c --> </struct> </value>", {}),
    ("<value>]>]</value>", "]>]"),
    ("<value >x</value\t>", "x"),
    ("<value a='1' b=\"&amp;&#65;\"\n>x</value>", "x"),
    ("<value>\u00e9\u4e2d\U0001F600\u0085</value>", "\u00e9\u4e2d\U0001F600\u0085"),
    ("<value><array><data><value>1</value><value><array><data><value><int>2</int></value></data></array>"
     "</value></data></array></value>", ["1", [2]]),
]


@pytest.mark.parametrize("value, expected", VALID)
def test_loads_values(rpc, value, expected):
    doc = wrap(value)
    assert canon(rpc.loads(doc)) == canon(((expected,), None))
    assert canon(rpc.loads(doc.decode("utf-8"))) == canon(((expected,), None))
    assert canon(rpc.loads(bytearray(doc))) == canon(((expected,), None))


@pytest.mark.parametrize("doc, expected", [
    ("<methodCall><methodName>VM.start</methodName></methodCall>", ((), "VM.start")),
    ("<methodCall><methodName>a&amp;b</methodName><params/></methodCall>", ((), "a&b")),
    ("<methodCall><methodName/><params></params></methodCall>", ((), "")),
    ("<methodCall>\n <methodName>m</methodName>\n <params>\n  <param>\n   <value>x</value>\n  </param>\n"
     " </params>\n</methodCall>\n", (("x",), "m")),
    ("<params><param><value>1</value></param><param><value>2</value></param></params>", (("1", "2"), None)),
    ("<params/>", ((), None)),
    ("<methodResponse><params/></methodResponse>", ((), None)),
    ('<?xml version="1.0"?><methodResponse><params></params></methodResponse>', ((), None)),
    ("\ufeff<?xml version='1.0' encoding='UTF-8' standalone='yes'?><params/>", ((), None)),
    ('<?xml version = "1.1"  encoding = "us-ascii" ?>\n<params/>', ((), None)),
    ('<?xml version="1.0" encoding="utf-8"?><params/>', ((), None)),
    ("<?xml version=\"1.0\"?>\r\n<!-- before --><?pi before?>\n<params/>\n<!-- after --><?pi?>\n \n", ((), None)),
    ("<?xml-stylesheet href='x'?><params/>", ((), None)),
    ('<methodResponse xmlns:ex="http://ws.apache.org/xmlrpc/namespaces/extensions"><params><param>'
     "<value><ex:nil/></value></param></params></methodResponse>", ((None,), None)),
])
def test_loads_documents(rpc, doc, expected):
    assert canon(rpc.loads(doc)) == canon(expected)
    assert canon(rpc.loads(doc.encode("utf-8"))) == canon(expected)
    assert canon(xmlrpc.client.loads(doc)) == canon(expected)


def test_loads_fault(rpc):
    doc = ("<methodResponse><fault><value><struct><member><name>faultCode</name><value><int>4</int></value>"
           "</member><member><name>faultString</name><value>no</value></member><member><name>x</name>"
           "<value/></member></struct></value></fault></methodResponse>")
    with pytest.raises(Fault) as e:
        rpc.loads(doc)
    assert (e.value.faultCode, e.value.faultString) == (4, "no")


# ---------------------------------------------------------------------------
# loads: malformed documents

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<methodResponse><params><param><value>&lol9;</value></param></params></methodResponse>"""

MALFORMED_DOCS = [
    b"", b"   ", b"\n", b"\xef\xbb\xbf", b'<?xml version="1.0"?>', b"<!-- only a comment -->",
    b"<methodResponse>", b"<methodResponse/>", b"<methodCall/>", b"<foo/>", b"<value>x</value>",
    b"x<params/>", b"<params/>x", b"<params/><params/>", b"<params/></x>", b"<params/>&amp;",
    b"<![CDATA[x]]><params/>", b"<params/><![CDATA[]]>",
    b"<!DOCTYPE methodResponse><params/>", b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><params/>",
    BILLION_LAUGHS,
    b" <?xml version='1.0'?><params/>", b"<params/><?xml version='1.0'?>", b"<?XML version='1.0'?><params/>",
    b"<?xml version='2.0'?><params/>", b"<?xml encoding='utf-8'?><params/>", b"<?xml?><params/>",
    b"<?xml version='1.0' encoding='latin-1'?><params/>", b"<?xml version='1.0' encoding='utf-16'?><params/>",
    b"<?xml version='1.0' standalone='maybe'?><params/>", b"<?xml version='1.0\"?><params/>",
    "<?xml version='1.0' encoding='us-ascii'?><methodCall><methodName>\u00e9</methodName></methodCall>".encode(),
    b"<methodCall><params/></methodCall>",
    b"<methodCall><methodName>a</methodName><methodName>b</methodName></methodCall>",
    b"<methodCall><methodName>a</methodName><params/><params/></methodCall>",
    b"<methodCall><methodName>a<b/></methodName></methodCall>",
    b"<methodCall><methodName>a</methodName>x</methodCall>",
    b"<methodResponse></methodResponse>", b"<methodResponse><params/><params/></methodResponse>",
    b"<methodResponse><fault/></methodResponse>",
    b"<methodResponse><fault><value><int>1</int></value></fault></methodResponse>",
    b"<methodResponse><fault><value><struct><member><name>faultCode</name><value><int>1</int></value>"
    b"</member></struct></value></fault></methodResponse>",
    b"<methodResponse><fault></fault></methodResponse>",
    b"<params><value>1</value></params>", b"<params><param/></params>", b"<params><param></param></params>",
    b"<params><param><value>1</value><value>2</value></param></params>", b"<params><params/></params>",
    b"<params> x <param><value>1</value></param></params>",
]
MALFORMED_VALUES = [
    "<value>x</string>", "<value>x</valuex>", "<value>x</ value>", "<value>x</value", "<value>x",
    "< value>x</value>", "<value/ >", "<välue>x</välue>", "<1value>x</1value>",
    "<value><foo>1</foo></value>", "<value><int>1</int><int>2</int></value>", "<value>abc<int>1</int></value>",
    "<value><int>1</int>abc</value>", "<value><value>1</value></value>", "<value><data/></value>",
    "<value><member/></value>", "<value><param/></value>",
    "<value><struct><member><value>1</value></member></struct></value>",
    "<value><struct><member><name>a</name></member></struct></value>",
    "<value><struct><member><name>a</name><value>1</value><value>2</value></member></struct></value>",
    "<value><struct><member><name>a</name><name>b</name><value>1</value></member></struct></value>",
    "<value><struct><member/></struct></value>", "<value><struct><value>1</value></struct></value>",
    "<value><struct>x</struct></value>", "<value><struct><member><name><b/></name><value/></member></struct></value>",
    "<value><array><value>1</value></array></value>", "<value><array/></value>", "<value><array></array></value>",
    "<value><array><data/><data/></array></value>", "<value><array><data>x</data></array></value>",
    "<value><array><data><int>1</int></data></array></value>",
    "<value><int>abc</int></value>", "<value><int></int></value>", "<value><int/></value>",
    "<value><int>1.5</int></value>", "<value><int>1_000</int></value>", "<value><int>\u0663</int></value>",
    "<value><int>1 2</int></value>", "<value><int>+</int></value>", "<value><int>--1</int></value>",
    "<value><i8>9223372036854775808</i8></value>", "<value><int>-9223372036854775809</int></value>",
    "<value><i4>99999999999999999999999999</i4></value>", "<value><int>0x10</int></value>",
    "<value><int>" + "1" * 100_000 + "</int></value>",
    "<value><double>abc</double></value>", "<value><double></double></value>",
    "<value><double>1_0</double></value>", "<value><double>1.5.5</double></value>",
    "<value><double>\u0661.5</double></value>", "<value><double>0x1p3</double></value>",
    "<value><boolean>2</boolean></value>", "<value><boolean>true</boolean></value>",
    "<value><boolean> 1</boolean></value>", "<value><boolean/></value>", "<value><boolean>01</boolean></value>",
    "<value><base64>YWJ</base64></value>", "<value><base64>\u00e9</base64></value>",
    "<value><nil>x</nil></value>", "<value><nil><int>1</int></nil></value>",
    "<value>&foo;</value>", "<value>&amp</value>", "<value>a & b</value>", "<value>&AMP;</value>",
    "<value>&#0;</value>", "<value>&#x110000;</value>", "<value>&#xD800;</value>", "<value>&#xFFFE;</value>",
    "<value>&#1;</value>", "<value>&#;</value>", "<value>&#x;</value>", "<value>&#X41;</value>",
    "<value>&#99999999999999999999;</value>", "<value>&#65</value>", "<value>&#x41 ;</value>",
    "<value>a\x00b</value>", "<value>\x01</value>", "<value>\x0b</value>", "<value>\x0c</value>",
    "<value>\x1f</value>", "<value>\ufffe</value>", "<value>\uffff</value>",
    "<value>a]]>b</value>", "<value><![CDATA[x</value>", "<value><![CDATA[x]]</value>",
    "<value><!-- a -- b --></value>", "<value><!-- a ---></value>", "<value><!-- a </value>",
    "<value><!- a --></value>", "<value><?xml version='1.0'?></value>", "<value><?pi</value>",
    "<value><??></value>", "<value><?pi-x?</value>", "<value><!ELEMENT x ANY></value>",
    "<value a='1' a='2'>x</value>", "<value a=1>x</value>", "<value a>x</value>", "<value a='x<y'>x</value>",
    "<value a='&bad;'>x</value>", "<value a='1'b='2'>x</value>", "<value a='1>x</value>",
    "<value/><value/>",
]


@pytest.mark.parametrize("doc", MALFORMED_DOCS)
def test_loads_rejects_documents(rpc, doc):
    with pytest.raises(CodecError):
        rpc.loads(doc)


@pytest.mark.parametrize("value", MALFORMED_VALUES)
def test_loads_rejects_values(rpc, value):
    with pytest.raises(CodecError):
        rpc.loads(wrap(value))


@pytest.mark.parametrize("bad", [
    b"\xff", b"\xfe", b"\x80", b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf",
    b"\xf0\x80\x80\xaf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xe4\xb8", b"\xc3", b"\xf0\x9f\x98",
    b"\xc3(", b"\xe4(\xad",
])
def test_loads_rejects_invalid_utf8(rpc, bad):
    with pytest.raises(CodecError):
        rpc.loads(wrap("<value>a") + bad)  # truncated after the bad bytes, too
    with pytest.raises(CodecError):
        rpc.loads(wrap("<value>a" + "\x00" + "</value>").replace(b"\x00", bad))
    for where in ("<value>a<!--X--></value>", "<value a='X'>a</value>", "<value>a<?pi X?></value>",
                  "<value><![CDATA[X]]></value>", "<value><string>X</string></value>"):
        with pytest.raises(CodecError):
            rpc.loads(wrap(where).replace(b"X", bad))
    with pytest.raises(CodecError):
        rpc.loads(b"<!--" + bad + b"--><params/>")


def test_loads_rejects_lone_surrogate_in_str(rpc):
    with pytest.raises(CodecError):
        rpc.loads(wrap("<value>a</value>").decode().replace("a", "\ud800"))


def test_loads_rejects_wrong_input_type(rpc):
    with pytest.raises(TypeError):
        rpc.loads(123)


def test_loads_truncated_at_every_offset(rpc):
    docs = [
        rpc.dumps(({"a": [1, "x<y", True, None, 1.5, DateTime("20250101T00:00:00"), Binary(b"xy")],
                    "\u00e9": {"n": -(1 << 40)}},), "VM.do"),
        wrap("<value><![CDATA[c]]>&amp;&#x41;<!-- c --><?pi x?></value>"),
        rpc.dumps_failure(["X", "y"]),
    ]
    for doc in docs:
        rpc.loads(doc)
        for i in range(len(doc)):
            with pytest.raises(CodecError):
                rpc.loads(doc[:i])


@pytest.mark.parametrize("opening, closing", [
    (b"<value><array><data>", b"</data></array></value>"),
    (b"<value><struct><member><name>a</name>", b"</member></struct></value>"),
    (b"<value>", b"</value>"),
    (b"<data>", b"</data>"),
])
def test_loads_deep_nesting_fails_fast(rpc, opening, closing):
    n = 100_000
    doc = (b"<methodResponse><params><param>" + opening * n + b"<value>x</value>" + closing * n
           + b"</param></params></methodResponse>")
    t0 = time.perf_counter()
    with pytest.raises(CodecError):
        rpc.loads(doc)
    assert time.perf_counter() - t0 < 0.5


def test_loads_billion_laughs_fails_fast(rpc):
    t0 = time.perf_counter()
    with pytest.raises(CodecError):
        rpc.loads(BILLION_LAUGHS)
    assert time.perf_counter() - t0 < 0.1


def test_loads_size_limit(rpc, monkeypatch):
    doc = rpc.dumps(("x" * 200,))
    rpc.loads(doc)
    monkeypatch.setattr(rpc, "MAX_SIZE", 100)
    with pytest.raises(CodecError):
        rpc.loads(doc)
    with pytest.raises(CodecError):
        rpc.loads(doc.decode())
    assert rpc.loads(rpc.dumps(("x",))) == (("x",), None)
