"""Pure-Python reference for the XenAPI wire codec: XML-RPC and JSON-RPC.

``xapi._rpc`` is the compiled twin of this module; both have the same API and
behaviour and the tests run every case against both.  The XML side does not use
expat or ``xmlrpc.client``: it scans the text itself, so comparing it with
``xmlrpc.client`` is a comparison of two independent implementations.

XML-RPC input accepted by ``loads``:

* one XML 1.0 document in UTF-8 (or US-ASCII), with an optional BOM, XML
  declaration, comments, processing instructions, CDATA sections, the five
  predefined entities and character references; ``\\r\\n`` and ``\\r`` in the
  raw text become ``\\n`` as expat does;
* no DOCTYPE (so no entity can ever be expanded), no unknown entities, no
  characters XML 1.0 forbids, no text outside the root or between container
  tags other than whitespace, at most ``MAX_DEPTH`` nested ``<value>``s and
  ``MAX_SIZE`` bytes;
* element and attribute names are ASCII; attributes are checked and ignored; a
  namespace prefix on a tag (``<ex:nil/>``) is ignored, as xmlrpc.client does;
* the strict XML-RPC grammar: ``methodCall`` (``methodName`` then optional
  ``params``), ``methodResponse`` (``params`` or ``fault``), or a bare ``params``
  root; ``param`` holds one ``value``; ``member`` is ``name`` then ``value``;
  ``array`` holds one ``data``.

Anything else raises :class:`CodecError` (a ``ValueError``).
"""
import base64
import binascii
import re
from datetime import datetime
from xmlrpc.client import Binary, DateTime, Fault

import orjson

from xapi.rpc_errors import CodecError

__all__ = [
    "CodecError", "MAX_DEPTH", "MAX_SIZE",
    "loads", "dumps", "dumps_success", "dumps_failure",
    "json_loads_request", "json_dumps_success", "json_dumps_failure",
]

#: Deepest nesting of ``<value>`` elements (or of containers in ``dumps``): a
#: top-level parameter is at depth 1.  Read at every call, so it can be patched.
MAX_DEPTH = 256
#: Largest document ``loads`` and ``json_loads_request`` accept, in bytes.
MAX_SIZE = 256 * 1024 * 1024

_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

# --------------------------------------------------------------------------
# XML-RPC decoding

_WS = " \t\n\r"
_DECL = re.compile(
    rb"<\?xml[ \t\r\n]+version[ \t\r\n]*=[ \t\r\n]*(?:\"1\.[0-9]+\"|'1\.[0-9]+')"
    rb"(?:[ \t\r\n]+encoding[ \t\r\n]*=[ \t\r\n]*(?:\"([A-Za-z][-A-Za-z0-9._]*)\"|'([A-Za-z][-A-Za-z0-9._]*)'))?"
    rb"(?:[ \t\r\n]+standalone[ \t\r\n]*=[ \t\r\n]*(?:\"(?:yes|no)\"|'(?:yes|no)'))?"
    rb"[ \t\r\n]*\?>")
_INVALID_XML_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NAME = re.compile(r"[A-Za-z_:][-A-Za-z0-9_.:]*")
_ATTR = re.compile(r"[ \t\n]+([A-Za-z_:][-A-Za-z0-9_.:]*)[ \t\n]*=[ \t\n]*(?:\"([^<\"]*)\"|'([^<']*)')")
_TAG_CLOSE = re.compile(r"[ \t\n]*(/?)>")
_END_CLOSE = re.compile(r"[ \t\n]*>")
_PI_TARGET = re.compile(r"<\?([A-Za-z_:][-A-Za-z0-9_.:]*)")
_REF = re.compile(r"&(?:(amp|lt|gt|quot|apos)|#([0-9]+)|#x([0-9a-fA-F]+));")
_INT = re.compile(r"[ \t\n\r]*([+-]?[0-9]+)[ \t\n\r]*")
_DOUBLE_CHARS = re.compile(r"[0-9+\-.eEinfatyINFATY]+")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}

# What _read_text stopped at.
_EOF, _START, _END = 0, 1, 2

# Element kinds on the parse stack.
(_K_CALL, _K_RESP, _K_PARAMS, _K_PARAM, _K_FAULT, _K_VALUE, _K_STRUCT, _K_MEMBER,
 _K_ARRAY, _K_DATA) = range(10)

_NO_FAULT = object()
_LEAF_TYPES = frozenset(("string", "int", "i4", "i8", "boolean", "double",
                         "dateTime.iso8601", "base64", "nil"))


def _valid_char(cp: int) -> bool:
    return (cp in (0x9, 0xA, 0xD) or 0x20 <= cp <= 0xD7FF or 0xE000 <= cp <= 0xFFFD
            or 0x10000 <= cp <= 0x10FFFF)


def _unescape(seg: str) -> str:
    """Replaces the entity and character references in a run of raw text."""
    out = []
    i = 0
    while True:
        j = seg.find("&", i)
        if j < 0:
            out.append(seg[i:])
            return "".join(out)
        out.append(seg[i:j])
        m = _REF.match(seg, j)
        if m is None:
            raise CodecError("unknown entity or malformed reference")
        name, dec, hexa = m.groups()
        if name is not None:
            out.append(_ENTITIES[name])
        else:
            digits = (dec if dec is not None else hexa).lstrip("0")
            if len(digits) > 7:
                raise CodecError("character reference out of range")
            cp = int(digits or "0", 10 if dec is not None else 16)
            if not _valid_char(cp):
                raise CodecError("character reference to a character XML does not allow")
            out.append(chr(cp))
        i = m.end()


def _skip_comment(text: str, j: int) -> int:
    k = text.find("--", j + 4)
    if k < 0:
        raise CodecError("unterminated comment")
    if text[k + 2:k + 3] != ">":
        raise CodecError("'--' inside a comment")
    return k + 3


def _skip_pi(text: str, j: int) -> int:
    m = _PI_TARGET.match(text, j)
    if m is None:
        raise CodecError("malformed processing instruction")
    if m.group(1).lower() == "xml":
        raise CodecError("XML declaration not at the start of the document")
    k = m.end()
    if text.startswith("?>", k):
        return k + 2
    if text[k:k + 1] not in (" ", "\t", "\n"):
        raise CodecError("malformed processing instruction")
    e = text.find("?>", k)
    if e < 0:
        raise CodecError("unterminated processing instruction")
    return e + 2


def _read_text(text: str, pos: int, top: bool):
    """Reads character data up to the next element tag.

    Returns (content, position of the '<', what it is: _START, _END or _EOF).
    Comments and PIs are skipped, CDATA is included, references are replaced.
    Outside the root (top) only whitespace, comments and PIs may appear.
    """
    parts = []
    n = len(text)
    while True:
        j = text.find("<", pos)
        if j < 0:
            j = n
        if j > pos:
            seg = text[pos:j]
            if top:
                if seg.strip(" \t\n"):
                    raise CodecError("text outside the root element")
            else:
                if "]]>" in seg:
                    raise CodecError("']]>' in text")
                if "&" in seg:
                    seg = _unescape(seg)
                parts.append(seg)
        if j == n:
            if top:
                return "", n, _EOF
            raise CodecError("truncated document")
        c = text[j + 1:j + 2]
        if c == "/":
            return "".join(parts), j, _END
        if c == "!":
            if text.startswith("<!--", j):
                pos = _skip_comment(text, j)
                continue
            if text.startswith("<![CDATA[", j) and not top:
                k = text.find("]]>", j + 9)
                if k < 0:
                    raise CodecError("unterminated CDATA section")
                parts.append(text[j + 9:k])
                pos = k + 3
                continue
            raise CodecError("DOCTYPE, CDATA outside the root, or another unsupported declaration")
        if c == "?":
            pos = _skip_pi(text, j)
            continue
        return "".join(parts), j, _START


def _start_tag(text: str, j: int):
    """Parses the start tag at text[j] == '<'; returns (name, position after it, is empty element)."""
    m = _NAME.match(text, j + 1)
    if m is None:
        raise CodecError("malformed start tag")
    name = m.group()
    k = m.end()
    c = text[k:k + 1]
    if c == ">":
        return name, k + 1, False
    if c == "/" and text[k + 1:k + 2] == ">":
        return name, k + 2, True
    seen = set()
    while True:
        am = _ATTR.match(text, k)
        if am is None:
            break
        an = am.group(1)
        if an in seen:
            raise CodecError("duplicate attribute")
        seen.add(an)
        av = am.group(2) if am.group(2) is not None else am.group(3)
        if "&" in av:
            _unescape(av)
        k = am.end()
    em = _TAG_CLOSE.match(text, k)
    if em is None:
        raise CodecError("malformed start tag")
    return name, em.end(), bool(em.group(1))


def _end_tag(text: str, j: int, rawname: str) -> int:
    """Checks the end tag at text[j:] == '</...' closes rawname; returns the position after it."""
    k = j + 2
    if text.startswith(rawname, k):
        e = k + len(rawname)
        c = text[e:e + 1]
        if c == ">":
            return e + 1
        if c in (" ", "\t", "\n"):
            m = _END_CLOSE.match(text, e)
            if m is not None:
                return m.end()
    raise CodecError(f"mismatched or malformed end tag, expected </{rawname}>")


def _local(name: str) -> str:
    return name.rpartition(":")[2]


def _parse_int(s: str) -> int:
    m = _INT.fullmatch(s)
    if m is None:
        raise CodecError("bad integer")
    num = m.group(1)
    sign = num[0] if num[0] in "+-" else ""
    digits = num[len(sign):].lstrip("0") or "0"
    if len(digits) > 19:  # never hand int() a huge numeral (quadratic without the digit limit)
        raise CodecError("integer out of 64-bit range")
    v = int(sign + digits)
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise CodecError("integer out of 64-bit range")
    return v


def _parse_double(s: str) -> float:
    s = s.strip(_WS)
    if not _DOUBLE_CHARS.fullmatch(s):
        raise CodecError("bad double")
    try:
        return float(s)
    except ValueError:
        raise CodecError("bad double") from None


def _leaf(tag: str, content: str):
    """Converts the text of a typed scalar element."""
    if tag == "string":
        return content
    if tag in ("int", "i4", "i8"):
        return _parse_int(content)
    if tag == "boolean":
        if content == "1":
            return True
        if content == "0":
            return False
        raise CodecError("bad boolean")
    if tag == "double":
        return _parse_double(content)
    if tag == "dateTime.iso8601":
        return DateTime(content.strip())
    if tag == "base64":
        try:
            return Binary(binascii.a2b_base64(content.encode("ascii")))
        except (UnicodeEncodeError, binascii.Error, ValueError):
            raise CodecError("bad base64") from None
    # nil
    if content.strip(_WS):
        raise CodecError("text inside <nil/>")
    return None


def _leaf_text(text: str, pos: int, name: str, empty: bool):
    """Reads the text content of a leaf element whose start tag ended at pos."""
    if empty:
        return "", pos
    content, j, kind = _read_text(text, pos, False)
    if kind != _END:
        raise CodecError(f"unexpected element inside <{name}>")
    return content, _end_tag(text, j, name)


def _deliver(fr, obj) -> None:
    """Hands a finished value to the frame that contains it."""
    k = fr[0]
    if k == _K_DATA:
        fr[3].append(obj)
    elif k == _K_MEMBER:
        fr[3] = obj
        fr[2] = 2
    else:  # param, fault
        fr[3] = obj
        fr[2] = 1


def _parse(text: str, pos: int, max_depth: int):
    _, j, kind = _read_text(text, pos, True)
    if kind != _START:
        raise CodecError("no root element")
    name, pos, empty = _start_tag(text, j)
    local = _local(name)
    methodname = None
    if local == "methodCall":
        root = [_K_CALL, name, 0, (), None]
    elif local == "methodResponse":
        root = [_K_RESP, name, 0, (), None]
    elif local == "params":
        root = [_K_PARAMS, name, 0, [], None]
    else:
        raise CodecError(f"unknown root element <{name}>")
    if empty:
        if root[0] != _K_PARAMS:
            raise CodecError(f"empty <{name}/>")
        stack = []
        result = ()
    else:
        stack = [root]
    depth = 0
    fault = _NO_FAULT
    while stack:
        fr = stack[-1]
        k = fr[0]
        content, j, kind = _read_text(text, pos, False)
        if content and content.strip(_WS):
            raise CodecError(f"unexpected text inside <{fr[1]}>")
        if kind == _END:
            pos = _end_tag(text, j, fr[1])
            state = fr[2]
            stack.pop()
            if k == _K_VALUE:
                if state != 1:
                    raise CodecError("empty typed <value>")
                depth -= 1
                _deliver(stack[-1], fr[3])
            elif k == _K_MEMBER:
                if state != 2:
                    raise CodecError("<member> needs a <name> and a <value>")
                stack[-1][3][fr[4]] = fr[3]
            elif k == _K_STRUCT:
                parent = stack[-1]
                parent[3] = fr[3]
                parent[2] = 1
            elif k == _K_DATA:
                parent = stack[-1]
                parent[3] = fr[3]
                parent[2] = 1
            elif k == _K_ARRAY:
                if state != 1:
                    raise CodecError("<array> needs a <data>")
                parent = stack[-1]
                parent[3] = fr[3]
                parent[2] = 1
            elif k == _K_PARAM:
                if state != 1:
                    raise CodecError("<param> needs a <value>")
                stack[-1][3].append(fr[3])
            elif k == _K_PARAMS:
                params = tuple(fr[3])
                if stack:
                    parent = stack[-1]
                    parent[3] = params
                    parent[2] = 2 if parent[0] == _K_CALL else 1
                else:
                    result = params
            elif k == _K_FAULT:
                if state != 1:
                    raise CodecError("<fault> needs a <value>")
                fault = fr[3]
                stack[-1][2] = 1
            elif k == _K_CALL:
                if state == 0:
                    raise CodecError("<methodCall> needs a <methodName>")
                result = fr[3]
            else:  # _K_RESP
                if state == 0:
                    raise CodecError("<methodResponse> needs <params> or <fault>")
                result = fr[3]
            continue
        # a start tag
        name, pos, empty = _start_tag(text, j)
        local = _local(name)
        state = fr[2]
        if local == "value" and (k == _K_DATA or (state == 0 and k in (_K_PARAM, _K_FAULT))
                                 or (state == 1 and k == _K_MEMBER)):
            depth += 1
            if depth > max_depth:
                raise CodecError("nesting too deep")
            if empty:
                depth -= 1
                _deliver(fr, "")
                continue
            content, j, kind = _read_text(text, pos, False)
            if kind == _END:
                pos = _end_tag(text, j, name)
                depth -= 1
                _deliver(fr, content)
            else:
                if content.strip(_WS):
                    raise CodecError("text mixed with an element inside <value>")
                stack.append([_K_VALUE, name, 0, None, None])
                pos = j
        elif k == _K_VALUE and state == 0:
            if local in _LEAF_TYPES:
                content, pos = _leaf_text(text, pos, name, empty)
                fr[3] = _leaf(local, content)
                fr[2] = 1
            elif local == "struct":
                if empty:
                    fr[3] = {}
                    fr[2] = 1
                else:
                    stack.append([_K_STRUCT, name, 0, {}, None])
            elif local == "array":
                if empty:
                    raise CodecError("<array> needs a <data>")
                stack.append([_K_ARRAY, name, 0, None, None])
            else:
                raise CodecError(f"unknown value type <{name}>")
        elif local == "member" and k == _K_STRUCT:
            if empty:
                raise CodecError("empty <member/>")
            stack.append([_K_MEMBER, name, 0, None, None])
        elif local == "name" and k == _K_MEMBER and state == 0:
            fr[4], pos = _leaf_text(text, pos, name, empty)
            fr[2] = 1
        elif local == "data" and k == _K_ARRAY and state == 0:
            if empty:
                fr[3] = []
                fr[2] = 1
            else:
                stack.append([_K_DATA, name, 0, [], None])
        elif local == "param" and k == _K_PARAMS:
            if empty:
                raise CodecError("empty <param/>")
            stack.append([_K_PARAM, name, 0, None, None])
        elif local == "methodName" and k == _K_CALL and state == 0:
            methodname, pos = _leaf_text(text, pos, name, empty)
            fr[2] = 1
        elif local == "params" and ((k == _K_CALL and state == 1) or (k == _K_RESP and state == 0)):
            if empty:
                fr[3] = ()
                fr[2] = 2 if k == _K_CALL else 1
            else:
                stack.append([_K_PARAMS, name, 0, [], None])
        elif local == "fault" and k == _K_RESP and state == 0:
            if empty:
                raise CodecError("empty <fault/>")
            stack.append([_K_FAULT, name, 0, None, None])
        else:
            raise CodecError(f"unexpected element <{name}>")
    _, j, kind = _read_text(text, pos, True)
    if kind != _EOF:
        raise CodecError("trailing content after the root element")
    if fault is not _NO_FAULT:
        if not isinstance(fault, dict) or "faultCode" not in fault or "faultString" not in fault:
            raise CodecError("malformed <fault>")
        raise Fault(fault["faultCode"], fault["faultString"])
    return result, methodname


def _as_bytes(data) -> bytes:
    if isinstance(data, str):
        if len(data) > MAX_SIZE:
            raise CodecError("document too large")
        try:
            return data.encode("utf-8")
        except UnicodeEncodeError:
            raise CodecError("lone surrogate in the document") from None
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"expected bytes or str, not {type(data).__name__}")


def loads(data):
    """Decodes an XML-RPC methodCall or methodResponse: returns (params, methodname or None).

    Same results as ``xmlrpc.client.loads(data)``; a <fault> raises
    ``xmlrpc.client.Fault``; anything malformed raises CodecError.
    """
    buf = _as_bytes(data)
    n = len(buf)
    if n == 0:
        raise CodecError("empty document")
    if n > MAX_SIZE:
        raise CodecError("document too large")
    pos = 3 if buf.startswith(b"\xef\xbb\xbf") else 0
    ascii_only = False
    if buf.startswith(b"<?xml", pos) and buf[pos + 5:pos + 6] in (b" ", b"\t", b"\r", b"\n"):
        m = _DECL.match(buf, pos)
        if m is None:
            raise CodecError("malformed XML declaration")
        enc = m.group(1) or m.group(2)
        if enc is not None:
            enc = enc.lower()
            if enc == b"us-ascii":
                ascii_only = True
            elif enc != b"utf-8":
                raise CodecError("unsupported encoding (only UTF-8 and US-ASCII)")
        pos = m.end()
    try:
        text = buf[pos:].decode("ascii" if ascii_only else "utf-8")
    except UnicodeDecodeError:
        raise CodecError("invalid UTF-8" if not ascii_only else "non-ASCII byte in a US-ASCII document") from None
    if _INVALID_XML_CHAR.search(text):
        raise CodecError("character not allowed in XML")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _parse(text, 0, MAX_DEPTH)


# --------------------------------------------------------------------------
# XML-RPC encoding

_NEEDS_ESCAPE = re.compile("[&<>\r]")


def _esc(s: str) -> str:
    if _INVALID_XML_CHAR.search(s):
        raise CodecError("string holds a character XML cannot carry")
    if _NEEDS_ESCAPE.search(s):
        s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    return s


def _int_xml(v: int, ints_as_strings: bool) -> str:
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise CodecError("int exceeds 64 bits")
    if ints_as_strings:
        return "<value>%d</value>" % v
    if _INT32_MIN <= v <= _INT32_MAX:
        return "<value><int>%d</int></value>" % v
    return "<value><i8>%d</i8></value>" % v


def _key(k) -> str:
    if isinstance(k, str):
        return _esc(str.__str__(k))
    if isinstance(k, int) and not isinstance(k, bool):
        try:
            return int.__repr__(k)
        except ValueError:
            raise CodecError("int key too large") from None
    raise CodecError(f"struct key must be str or int, not {type(k).__name__}")


def _b64(data) -> str:
    if not isinstance(data, (bytes, bytearray)):
        raise CodecError("Binary.data must be bytes")
    return "<value><base64>%s</base64></value>" % base64.b64encode(data).decode("ascii")


def _enc(v, out, depth: int, ctx) -> None:
    max_depth, allow_none, ints_as_strings = ctx
    if depth > max_depth:
        raise CodecError("nesting too deep (or a self-referencing container)")
    t = type(v)
    if t is str:
        out.append("<value>%s</value>" % _esc(v))
    elif v is None:
        if not allow_none:
            raise CodecError("cannot marshal None unless allow_none is enabled")
        out.append("<value><nil/></value>")
    elif t is bool:
        out.append("<value><boolean>1</boolean></value>" if v else "<value><boolean>0</boolean></value>")
    elif isinstance(v, int):
        out.append(_int_xml(v, ints_as_strings))
    elif isinstance(v, str):
        out.append("<value>%s</value>" % _esc(str.__str__(v)))
    elif isinstance(v, float):
        out.append("<value><double>%s</double></value>" % float.__repr__(v))
    elif isinstance(v, dict):
        out.append("<value><struct>")
        for k, x in v.items():
            out.append("<member><name>%s</name>" % _key(k))
            _enc(x, out, depth + 1, ctx)
            out.append("</member>")
        out.append("</struct></value>")
    elif isinstance(v, (list, tuple)):
        out.append("<value><array><data>")
        for x in v:
            _enc(x, out, depth + 1, ctx)
        out.append("</data></array></value>")
    elif isinstance(v, DateTime):
        s = v.value
        if not isinstance(s, str):
            raise CodecError("DateTime.value must be str")
        out.append("<value><dateTime.iso8601>%s</dateTime.iso8601></value>" % _esc(str.__str__(s)))
    elif isinstance(v, datetime):
        s = DateTime(v).value
        if not isinstance(s, str):
            raise CodecError("cannot format the datetime")
        out.append("<value><dateTime.iso8601>%s</dateTime.iso8601></value>" % _esc(str.__str__(s)))
    elif isinstance(v, Binary):
        out.append(_b64(v.data))
    elif isinstance(v, (bytes, bytearray)):
        out.append(_b64(v))
    else:
        raise CodecError(f"cannot marshal {type(v).__name__} objects")


_HEADER = '<?xml version="1.0"?>'


def dumps(params, methodname=None, methodresponse=False, allow_none=True, *, ints_as_strings=False) -> bytes:
    """Encodes params (a tuple, or a Fault) as compact UTF-8 XML-RPC, the way xapi writes it.

    methodCall when methodname is given, methodResponse when methodresponse is
    true (params must then hold exactly one value) or params is a Fault, else a
    bare <params> document.  Strings go as bare <value>s; ints as <int> (32-bit)
    or <i8> (64-bit), or as bare strings with ints_as_strings, as xapi sends its
    int64s.  A fault's faultCode is always a typed int.
    """
    ctx = (MAX_DEPTH, allow_none, ints_as_strings)
    out = [_HEADER]
    if isinstance(params, Fault):
        if methodname:
            raise CodecError("a Fault can only be sent in a methodResponse")
        out.append("<methodResponse><fault>")
        _enc({"faultCode": params.faultCode, "faultString": params.faultString}, out, 1,
             (ctx[0], allow_none, False))
        out.append("</fault></methodResponse>")
        return "".join(out).encode("utf-8")
    if not isinstance(params, (tuple, list)):
        raise TypeError("params must be a tuple or a Fault")
    if methodname:
        if not isinstance(methodname, str):
            raise CodecError("methodname must be str")
        out.append("<methodCall><methodName>%s</methodName>" % _esc(str.__str__(methodname)))
        tail = "</methodCall>"
    elif methodresponse:
        if len(params) != 1:
            raise CodecError("response tuple must be a singleton")
        out.append("<methodResponse>")
        tail = "</methodResponse>"
    else:
        tail = ""
    out.append("<params>")
    for v in params:
        out.append("<param>")
        _enc(v, out, 1, ctx)
        out.append("</param>")
    out.append("</params>")
    out.append(tail)
    return "".join(out).encode("utf-8")


_SUCCESS_HEAD = (_HEADER + "<methodResponse><params><param><value><struct>"
                 "<member><name>Status</name><value>Success</value></member><member><name>Value</name>")
_FAILURE_HEAD = (_HEADER + "<methodResponse><params><param><value><struct>"
                 "<member><name>Status</name><value>Failure</value></member><member><name>ErrorDescription</name>")
_TAIL = "</member></struct></value></param></params></methodResponse>"


def dumps_success(value, ints_as_strings=True) -> bytes:
    """xapi's success reply: ``dumps(({"Status": "Success", "Value": value},), methodresponse=True)``."""
    out = [_SUCCESS_HEAD]
    _enc(value, out, 2, (MAX_DEPTH, True, ints_as_strings))
    out.append(_TAIL)
    return "".join(out).encode("utf-8")


def dumps_failure(description) -> bytes:
    """xapi's failure reply: ``{"Status": "Failure", "ErrorDescription": [str(x) for x in description]}``."""
    if not isinstance(description, (list, tuple)):
        raise CodecError("ErrorDescription must be a list")
    out = [_FAILURE_HEAD, "<value><array><data>"]
    for x in description:
        out.append("<value>%s</value>" % _esc(str(x)))
    out.append("</data></array></value>")
    out.append(_TAIL)
    return "".join(out).encode("utf-8")


# --------------------------------------------------------------------------
# JSON-RPC

# Non-str keys (XenAPI int maps) make orjson take a slower path for every dict,
# so a reply is first encoded without them and only retried with them.
_JSON_FAST_OPTS = orjson.OPT_PASSTHROUGH_DATETIME
_JSON_OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


def _json_default(o):
    if isinstance(o, DateTime):
        return o.value
    if isinstance(o, datetime):
        return DateTime(o).value
    if isinstance(o, Binary):
        o = o.data
    if isinstance(o, (bytes, bytearray)):
        return base64.b64encode(o).decode("ascii")
    raise TypeError(f"cannot encode {type(o).__name__} objects")


def _valid_id(rid) -> bool:
    return rid is None or type(rid) is str or type(rid) is int


def json_loads_request(data):
    """Decodes a JSON-RPC v1 or v2 request: returns (method, params, id, version).

    v2 is a request with ``"jsonrpc": "2.0"``; its params may be omitted (→ [])
    or be an object.  Errors raise CodecError, with ``err.id`` set when the id
    could be read.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    elif not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, not {type(data).__name__}")
    if len(data) > MAX_SIZE:
        raise CodecError("request too large")
    try:
        req = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise CodecError(f"invalid JSON: {e}") from None
    if type(req) is not dict:
        raise CodecError("a JSON-RPC request must be an object")
    rid = req.get("id")
    if not _valid_id(rid):
        raise CodecError("id must be a string, an integer or null")
    if "id" not in req:
        raise CodecError("missing id")
    method = req.get("method")
    if type(method) is not str:
        raise CodecError("method must be a string", rid)
    v = req.get("jsonrpc")
    if v is None and "jsonrpc" not in req:
        params = req.get("params")
        if type(params) is not list:
            raise CodecError("params must be a list", rid)
        return method, params, rid, 1
    if v != "2.0":
        raise CodecError('jsonrpc must be "2.0"', rid)
    params = req.get("params", [])
    if type(params) is not list and type(params) is not dict:
        raise CodecError("params must be a list or an object", rid)
    return method, params, rid, 2


def json_dumps_success(result, id, version) -> bytes:
    """The JSON-RPC success reply for the request's version."""
    if version == 2:
        doc = {"jsonrpc": "2.0", "result": result, "id": id}
    elif version == 1:
        doc = {"result": result, "error": None, "id": id}
    else:
        raise CodecError("version must be 1 or 2")
    try:
        return orjson.dumps(doc, default=_json_default, option=_JSON_FAST_OPTS)
    except orjson.JSONEncodeError:
        pass
    try:
        return orjson.dumps(doc, default=_json_default, option=_JSON_OPTS)
    except orjson.JSONEncodeError as e:
        raise CodecError(f"cannot encode the result: {e}") from None


def json_dumps_failure(description, id, version) -> bytes:
    """The JSON-RPC failure reply: v1 ``error`` is [code, params…]; v2 ``{code: 1, message, data}``."""
    if not isinstance(description, (list, tuple)):
        raise CodecError("ErrorDescription must be a list")
    desc = [str(x) for x in description]
    if version == 2:
        doc = {"jsonrpc": "2.0",
               "error": {"code": 1, "message": desc[0] if desc else "", "data": desc[1:]},
               "id": id}
    elif version == 1:
        doc = {"result": None, "error": desc, "id": id}
    else:
        raise CodecError("version must be 1 or 2")
    try:
        return orjson.dumps(doc)
    except orjson.JSONEncodeError as e:
        raise CodecError(f"cannot encode the error: {e}") from None
