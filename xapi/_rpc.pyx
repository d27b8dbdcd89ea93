# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled XenAPI wire codec: XML-RPC and JSON-RPC.

Same API and behaviour as the pure-Python reference ``xapi.rpc_ref`` (read its
docstring for the accepted grammar); the tests run every case against both.

Decoding is a hand-written scanner over the raw buffer:

1. one pass over the whole input checks UTF-8 and XML 1.0 characters eight
   bytes at a time, and notes whether it is all ASCII and whether it holds a
   ``\\r`` (only then is a normalised copy made);
2. an iterative parser with an explicit frame stack (so depth costs no C stack)
   walks the tags, building dicts, lists and strings directly; text without
   references is turned into a str straight from the buffer, and struct member
   names go through a small cache so the same 87 field names are not decoded a
   thousand times.

Encoding writes into one growable C buffer, with a copy-as-is path for ASCII
strings that need no escaping.
"""
cimport cython
from libc.string cimport memcpy, memcmp, memchr, strlen
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.stdint cimport uint64_t

import binascii
import re
from datetime import datetime
from xmlrpc.client import Binary, DateTime, Fault

import orjson

from xapi.rpc_errors import CodecError

cdef extern from "Python.h":
    ctypedef struct PyObject
    PyObject* c_unicode_new "PyUnicode_New"(Py_ssize_t size, unsigned int maxchar) except NULL
    void* c_unicode_data "PyUnicode_DATA"(PyObject* o)
    PyObject* c_decode_utf8 "PyUnicode_DecodeUTF8"(const char* s, Py_ssize_t size, const char* errors) except NULL
    PyObject* c_dict_new "PyDict_New"() except NULL
    PyObject* c_dict_new_presized "_PyDict_NewPresized"(Py_ssize_t n) except NULL
    Py_ssize_t c_dict_size "PyDict_GET_SIZE"(PyObject* d)
    int c_dict_setitem "PyDict_SetItem"(PyObject* d, PyObject* k, PyObject* v) except -1
    PyObject* c_list_new "PyList_New"(Py_ssize_t n) except NULL
    int c_list_append_raw "PyList_Append"(PyObject* l, PyObject* x)
    int c_list_append "PyList_Append"(PyObject* l, PyObject* x) except -1
    PyObject* c_list_as_tuple "PyList_AsTuple"(PyObject* l) except NULL
    PyObject* c_long_from_ll "PyLong_FromLongLong"(long long v) except NULL
    PyObject* c_float_from_string "PyFloat_FromString"(object s) except NULL
    void c_incref "Py_INCREF"(PyObject* o)
    void c_decref "Py_DECREF"(PyObject* o)
    void c_xdecref "Py_XDECREF"(PyObject* o)
    PyObject* c_Py_None "Py_None"
    PyObject* c_Py_True "Py_True"
    PyObject* c_Py_False "Py_False"

    unsigned int PyUnicode_KIND(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    bint PyUnicode_IS_ASCII(object o)
    unsigned int PyUnicode_READ(unsigned int kind, void* data, Py_ssize_t i)
    long long PyLong_AsLongLongAndOverflow(object o, int* overflow) except? -1
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size) except NULL
    char* PyBytes_AS_STRING(object o)
    Py_ssize_t PyBytes_GET_SIZE(object o)
    bytes PyBytes_FromStringAndSize(const char* s, Py_ssize_t n)
    char* PyByteArray_AS_STRING(object o)
    Py_ssize_t PyByteArray_GET_SIZE(object o)

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

cdef object _DECL = re.compile(
    rb"<\?xml[ \t\r\n]+version[ \t\r\n]*=[ \t\r\n]*(?:\"1\.[0-9]+\"|'1\.[0-9]+')"
    rb"(?:[ \t\r\n]+encoding[ \t\r\n]*=[ \t\r\n]*(?:\"([A-Za-z][-A-Za-z0-9._]*)\"|'([A-Za-z][-A-Za-z0-9._]*)'))?"
    rb"(?:[ \t\r\n]+standalone[ \t\r\n]*=[ \t\r\n]*(?:\"(?:yes|no)\"|'(?:yes|no)'))?"
    rb"[ \t\r\n]*\?>")
cdef object _a2b_base64 = binascii.a2b_base64
cdef object _b2a_base64 = binascii.b2a_base64
cdef object _binascii_Error = binascii.Error
cdef object _Binary = Binary
cdef object _DateTime = DateTime
cdef object _Fault = Fault
cdef object _datetime = datetime
cdef object _CodecError = CodecError
cdef object _orjson_loads = orjson.loads
cdef object _orjson_dumps = orjson.dumps
cdef object _JSONDecodeError = orjson.JSONDecodeError
cdef object _JSONEncodeError = orjson.JSONEncodeError
# Non-str keys (XenAPI int maps) make orjson take a slower path for every dict,
# so a reply is first encoded without them and only retried with them.
cdef object _JSON_FAST_OPTS = orjson.OPT_PASSTHROUGH_DATETIME
cdef object _JSON_OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
cdef object _float_repr = float.__repr__
cdef object _int_repr = int.__repr__
cdef object _str_str = str.__str__

# --------------------------------------------------------------------------
# Character tables

cdef unsigned char TEXT_PLAIN[256]   # text bytes the scanner passes over: not '<', '&', ']' or NUL
cdef unsigned char NAME_START[256]   # [A-Za-z_:]
cdef unsigned char NAME_CHAR[256]    # [-A-Za-z0-9_.:]
cdef unsigned char IS_WS[256]        # XML whitespace, with \r (which only a reference can produce)
cdef unsigned char IS_WS3[256]       # whitespace inside tags (\r is normalised away by then)
cdef unsigned char DOUBLE_CHAR[256]  # [0-9+\-.eEinfatyINFATY]
cdef unsigned char ESC[128]          # encoding: 0 copy, 1 '&', 2 '<', 3 '>', 4 '\r', 5 not allowed


cdef void _init_tables() noexcept:
    cdef int c
    for c in range(256):
        TEXT_PLAIN[c] = 1
        NAME_START[c] = 0
        NAME_CHAR[c] = 0
        IS_WS[c] = 0
        IS_WS3[c] = 0
        DOUBLE_CHAR[c] = 0
    for c in (0, ord('<'), ord('&'), ord(']')):
        TEXT_PLAIN[c] = 0
    for c in range(ord('a'), ord('z') + 1):
        NAME_START[c] = 1
        NAME_START[c - 32] = 1
    NAME_START[ord('_')] = 1
    NAME_START[ord(':')] = 1
    for c in range(256):
        NAME_CHAR[c] = NAME_START[c]
    for c in range(ord('0'), ord('9') + 1):
        NAME_CHAR[c] = 1
        DOUBLE_CHAR[c] = 1
    NAME_CHAR[ord('-')] = 1
    NAME_CHAR[ord('.')] = 1
    for c in (ord(' '), ord('\t'), ord('\n')):
        IS_WS[c] = 1
        IS_WS3[c] = 1
    IS_WS[ord('\r')] = 1
    for c in b"+-.eEinfatyINFATY":
        DOUBLE_CHAR[c] = 1
    for c in range(128):
        ESC[c] = 5 if c < 0x20 else 0
    ESC[ord('\t')] = 0
    ESC[ord('\n')] = 0
    ESC[ord('&')] = 1
    ESC[ord('<')] = 2
    ESC[ord('>')] = 3
    ESC[ord('\r')] = 4


_init_tables()


cdef inline bint _valid_char(uint64_t cp) noexcept:
    return (cp == 0x9 or cp == 0xA or cp == 0xD or (0x20 <= cp <= 0xD7FF)
            or (0xE000 <= cp <= 0xFFFD) or (0x10000 <= cp <= 0x10FFFF))


# --------------------------------------------------------------------------
# Whole-document check: UTF-8 well-formed (as Python's strict decoder), only
# characters XML 1.0 allows.  Returns bit 1 for "has non-ASCII", bit 2 for "has \r".

cdef int _check_document(const unsigned char* s, Py_ssize_t n) except -1:
    cdef Py_ssize_t i = 0
    cdef uint64_t w
    cdef unsigned char c, c1, c2
    cdef int flags = 0
    while True:
        while i + 8 <= n:
            memcpy(&w, s + i, 8)
            if (w & 0x8080808080808080ULL) or ((w - 0x2020202020202020ULL) & ~w & 0x8080808080808080ULL):
                break
            i += 8
        if i >= n:
            return flags
        c = s[i]
        if c < 0x80:
            if c < 0x20:
                if c == 13:
                    flags |= 2
                elif c != 9 and c != 10:
                    raise CodecError(f"character not allowed in XML (at byte {i})")
            i += 1
            continue
        flags |= 1
        if c < 0xC2:
            raise CodecError(f"invalid UTF-8 (at byte {i})")
        if c < 0xE0:
            if i + 1 >= n or (s[i + 1] & 0xC0) != 0x80:
                raise CodecError(f"invalid UTF-8 (at byte {i})")
            i += 2
        elif c < 0xF0:
            if i + 2 >= n or (s[i + 1] & 0xC0) != 0x80 or (s[i + 2] & 0xC0) != 0x80:
                raise CodecError(f"invalid UTF-8 (at byte {i})")
            c1 = s[i + 1]
            c2 = s[i + 2]
            if (c == 0xE0 and c1 < 0xA0) or (c == 0xED and c1 >= 0xA0):
                raise CodecError(f"invalid UTF-8 (at byte {i})")
            if c == 0xEF and c1 == 0xBF and (c2 == 0xBE or c2 == 0xBF):
                raise CodecError(f"character not allowed in XML (at byte {i})")
            i += 3
        elif c < 0xF5:
            if (i + 3 >= n or (s[i + 1] & 0xC0) != 0x80 or (s[i + 2] & 0xC0) != 0x80
                    or (s[i + 3] & 0xC0) != 0x80):
                raise CodecError(f"invalid UTF-8 (at byte {i})")
            c1 = s[i + 1]
            if (c == 0xF0 and c1 < 0x90) or (c == 0xF4 and c1 >= 0x90):
                raise CodecError(f"invalid UTF-8 (at byte {i})")
            i += 4
        else:
            raise CodecError(f"invalid UTF-8 (at byte {i})")


cdef bytes _normalise_newlines(const unsigned char* s, Py_ssize_t n):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef unsigned char* d = <unsigned char*>PyBytes_AS_STRING(out)
    cdef Py_ssize_t i = 0, j = 0
    while i < n:
        if s[i] == 13:
            d[j] = 10
            if i + 1 < n and s[i + 1] == 10:
                i += 1
        else:
            d[j] = s[i]
        i += 1
        j += 1
    return out[:j]


# --------------------------------------------------------------------------
# The parser

cdef enum:
    K_CALL, K_RESP, K_PARAMS, K_PARAM, K_FAULT, K_VALUE, K_STRUCT, K_MEMBER, K_ARRAY, K_DATA

cdef enum:
    T_UNKNOWN, T_VALUE, T_STRUCT, T_MEMBER, T_NAME, T_ARRAY, T_DATA, T_STRING, T_INT, T_I4, T_I8
    T_BOOLEAN, T_DOUBLE, T_DATETIME, T_BASE64, T_NIL, T_PARAMS, T_PARAM, T_FAULT, T_METHODCALL
    T_METHODNAME, T_METHODRESPONSE

cdef enum:
    R_EOF, R_START, R_END

cdef struct Frame:
    int kind
    int state
    PyObject* obj            # owned
    PyObject* key            # owned (member name)
    const unsigned char* name
    Py_ssize_t namelen

# Struct member names repeat (the same 87 fields a thousand times): a small
# direct-mapped cache from their bytes to the str, shared by all calls.
cdef enum:
    NAME_CACHE_BITS = 12
    NAME_CACHE_MAX = 40

cdef struct NameEntry:
    PyObject* s              # owned
    Py_ssize_t n
    uint64_t a, b            # the first and last 8 bytes (or all of a short key)
    unsigned char key[NAME_CACHE_MAX]

cdef NameEntry _names[1 << NAME_CACHE_BITS]


cdef uint64_t W_VALUE, W_ARRAY, W_PARAM, W_FAULT, W_MEMBER, W_STRUCT, W_STRING, W_DOUBLE
cdef uint64_t W_BASE64, W_PARAMS, W_NAME, W_DATA, W_INT, W_NIL, W_I4, W_I8, W_BOOLEAN


cdef uint64_t _word(bytes b) noexcept:
    cdef uint64_t w = 0
    memcpy(&w, <const char*>b, len(b))
    return w


W_VALUE = _word(b"value")
W_ARRAY = _word(b"array")
W_PARAM = _word(b"param")
W_FAULT = _word(b"fault")
W_MEMBER = _word(b"member")
W_STRUCT = _word(b"struct")
W_STRING = _word(b"string")
W_DOUBLE = _word(b"double")
W_BASE64 = _word(b"base64")
W_PARAMS = _word(b"params")
W_NAME = _word(b"name")
W_DATA = _word(b"data")
W_INT = _word(b"int")
W_NIL = _word(b"nil")
W_I4 = _word(b"i4")
W_I8 = _word(b"i8")
W_BOOLEAN = _word(b"boolean")


cdef inline uint64_t _load(const unsigned char* s, Py_ssize_t n, const unsigned char* end) noexcept:
    """The first n <= 8 bytes at s as a zero-padded little-endian word, never reading past end."""
    cdef uint64_t w = 0
    cdef Py_ssize_t i
    if end - s >= 8:
        memcpy(&w, s, 8)
        if n < 8:
            w &= (<uint64_t>1 << (8 * n)) - 1
        return w
    for i in range(n):
        w |= (<uint64_t>s[i]) << (8 * i)
    return w


cdef inline int _tag_id(const unsigned char* s, Py_ssize_t n, const unsigned char* end) noexcept:
    cdef uint64_t w
    cdef const char* t = <const char*>s
    if n <= 8:
        w = _load(s, n, end)
        if n == 5:
            if w == W_VALUE: return T_VALUE
            if w == W_ARRAY: return T_ARRAY
            if w == W_PARAM: return T_PARAM
            if w == W_FAULT: return T_FAULT
        elif n == 6:
            if w == W_MEMBER: return T_MEMBER
            if w == W_STRUCT: return T_STRUCT
            if w == W_STRING: return T_STRING
            if w == W_DOUBLE: return T_DOUBLE
            if w == W_BASE64: return T_BASE64
            if w == W_PARAMS: return T_PARAMS
        elif n == 4:
            if w == W_NAME: return T_NAME
            if w == W_DATA: return T_DATA
        elif n == 3:
            if w == W_INT: return T_INT
            if w == W_NIL: return T_NIL
        elif n == 2:
            if w == W_I4: return T_I4
            if w == W_I8: return T_I8
        elif n == 7:
            if w == W_BOOLEAN: return T_BOOLEAN
    elif n == 10:
        if memcmp(t, b"methodCall", 10) == 0: return T_METHODCALL
        if memcmp(t, b"methodName", 10) == 0: return T_METHODNAME
    elif n == 14:
        if memcmp(t, b"methodResponse", 14) == 0: return T_METHODRESPONSE
    elif n == 16:
        if memcmp(t, b"dateTime.iso8601", 16) == 0: return T_DATETIME
    return T_UNKNOWN


cdef inline bint _all_ws(const unsigned char* s, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i
    for i in range(n):
        if not IS_WS[s[i]]:
            return False
    return True


@cython.final
cdef class _Parser:
    cdef const unsigned char* s0
    cdef const unsigned char* p
    cdef const unsigned char* end
    cdef object keep                 # the bytes being parsed
    cdef Frame* fr
    cdef Py_ssize_t nfr, capfr
    cdef unsigned char* sc           # scratch for text with references, CDATA, comments
    cdef Py_ssize_t sclen, sccap
    cdef const unsigned char* tptr   # the text read_text found
    cdef Py_ssize_t tlen
    cdef bint thigh                  # it may hold non-ASCII bytes
    cdef bint ascii                  # the whole document is ASCII
    cdef const unsigned char* tname  # the last start tag's raw name
    cdef Py_ssize_t tnamelen
    cdef int tag
    cdef bint empty
    cdef int max_depth
    cdef Py_ssize_t* sizes           # size of the last struct finished at each depth
    cdef object result
    cdef object methodname
    cdef object fault
    cdef bint has_fault

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.fr != NULL:
            for i in range(self.nfr):
                c_xdecref(self.fr[i].obj)
                c_xdecref(self.fr[i].key)
            free(self.fr)
        if self.sc != NULL:
            free(self.sc)
        if self.sizes != NULL:
            free(self.sizes)

    cdef PyObject* new_struct(self, int depth) except NULL:
        """A dict presized like the last struct at this depth (records of one class all have the same fields)."""
        cdef Py_ssize_t n
        if self.sizes == NULL:
            self.sizes = <Py_ssize_t*>calloc(self.max_depth + 2, sizeof(Py_ssize_t))
            if self.sizes == NULL:
                raise MemoryError()
        n = self.sizes[depth]
        if n > 8:
            return c_dict_new_presized(n if n < 256 else 256)
        return c_dict_new()

    cdef int fail(self, str msg) except -1:
        raise CodecError(f"{msg} (at byte {self.p - self.s0})")

    cdef int fail_at(self, str msg, const unsigned char* q) except -1:
        self.p = q
        return self.fail(msg)

    # ---- scratch buffer

    cdef int sc_put(self, const unsigned char* s, Py_ssize_t n) except -1:
        cdef Py_ssize_t cap
        cdef unsigned char* nd
        if self.sclen + n > self.sccap:
            cap = self.sccap * 2
            if cap < self.sclen + n:
                cap = self.sclen + n
            if cap < 256:
                cap = 256
            nd = <unsigned char*>realloc(self.sc, cap)
            if nd == NULL:
                raise MemoryError()
            self.sc = nd
            self.sccap = cap
        memcpy(self.sc + self.sclen, s, n)
        self.sclen += n
        return 0

    cdef int sc_put_cp(self, uint64_t cp) except -1:
        cdef unsigned char b[4]
        cdef Py_ssize_t k
        if cp < 0x80:
            b[0] = <unsigned char>cp
            k = 1
        elif cp < 0x800:
            b[0] = <unsigned char>(0xC0 | (cp >> 6))
            b[1] = <unsigned char>(0x80 | (cp & 0x3F))
            k = 2
        elif cp < 0x10000:
            b[0] = <unsigned char>(0xE0 | (cp >> 12))
            b[1] = <unsigned char>(0x80 | ((cp >> 6) & 0x3F))
            b[2] = <unsigned char>(0x80 | (cp & 0x3F))
            k = 3
        else:
            b[0] = <unsigned char>(0xF0 | (cp >> 18))
            b[1] = <unsigned char>(0x80 | ((cp >> 12) & 0x3F))
            b[2] = <unsigned char>(0x80 | ((cp >> 6) & 0x3F))
            b[3] = <unsigned char>(0x80 | (cp & 0x3F))
            k = 4
        if cp >= 0x80:
            self.thigh = True
        return self.sc_put(b, k)

    # ---- frames

    cdef Frame* push(self, int kind, PyObject* obj) except NULL:
        """Pushes a frame named after the last start tag; steals obj (which may be NULL)."""
        cdef Frame* nf
        cdef Py_ssize_t cap
        if self.nfr == self.capfr:
            cap = self.capfr * 2 if self.capfr else 32
            nf = <Frame*>realloc(self.fr, cap * sizeof(Frame))
            if nf == NULL:
                c_xdecref(obj)
                raise MemoryError()
            self.fr = nf
            self.capfr = cap
        nf = &self.fr[self.nfr]
        self.nfr += 1
        nf.kind = kind
        nf.state = 0
        nf.obj = obj
        nf.key = NULL
        nf.name = self.tname
        nf.namelen = self.tnamelen
        return nf

    cdef int deliver(self, Frame* f, PyObject* o) except -1:
        """Hands a finished value to the frame holding it; steals o."""
        cdef int r
        if f.kind == K_DATA:
            r = c_list_append_raw(f.obj, o)
            c_decref(o)
            return r
        f.obj = o
        f.state = 2 if f.kind == K_MEMBER else 1
        return 0

    # ---- lexical pieces

    cdef const unsigned char* ref(self, const unsigned char* p, bint store) except NULL:
        """Decodes the reference at p == '&' (into the scratch if store); returns the position after it."""
        cdef const unsigned char* q = p + 1
        cdef const unsigned char* d
        cdef uint64_t cp = 0
        cdef unsigned char c
        cdef Py_ssize_t left = self.end - q
        if q[0] == c'#':
            q += 1
            if q[0] == c'x':
                q += 1
                d = q
                while True:
                    c = q[0]
                    if c'0' <= c <= c'9':
                        cp = cp * 16 + (c - c'0')
                    elif c'a' <= c <= c'f':
                        cp = cp * 16 + (c - c'a' + 10)
                    elif c'A' <= c <= c'F':
                        cp = cp * 16 + (c - c'A' + 10)
                    else:
                        break
                    if cp >= 0x110000:
                        self.fail_at("character reference out of range", p)
                    q += 1
            else:
                d = q
                while c'0' <= q[0] <= c'9':
                    cp = cp * 10 + (q[0] - c'0')
                    if cp >= 0x110000:
                        self.fail_at("character reference out of range", p)
                    q += 1
            if q == d or q[0] != c';':
                self.fail_at("malformed character reference", p)
            if not _valid_char(cp):
                self.fail_at("character reference to a character XML does not allow", p)
            if store:
                self.sc_put_cp(cp)
            return q + 1
        if left >= 4 and memcmp(q, b"amp;", 4) == 0:
            cp = c'&'
            q += 4
        elif left >= 3 and memcmp(q, b"lt;", 3) == 0:
            cp = c'<'
            q += 3
        elif left >= 3 and memcmp(q, b"gt;", 3) == 0:
            cp = c'>'
            q += 3
        elif left >= 5 and memcmp(q, b"quot;", 5) == 0:
            cp = c'"'
            q += 5
        elif left >= 5 and memcmp(q, b"apos;", 5) == 0:
            cp = c"'"
            q += 5
        else:
            self.fail_at("unknown entity or malformed reference", p)
        if store:
            self.sc_put_cp(cp)
        return q

    cdef const unsigned char* skip_comment(self, const unsigned char* p) except NULL:
        """p is at '<!--'; returns the position after '-->'."""
        cdef const unsigned char* q = p + 4
        while True:
            q = <const unsigned char*>memchr(q, c'-', self.end - q)
            if q == NULL:
                self.fail_at("unterminated comment", p)
            if q + 1 < self.end and q[1] == c'-':
                if q + 2 < self.end and q[2] == c'>':
                    return q + 3
                self.fail_at("'--' inside a comment", q)
            q += 1

    cdef const unsigned char* skip_pi(self, const unsigned char* p) except NULL:
        """p is at '<?'; returns the position after '?>'."""
        cdef const unsigned char* q = p + 2
        cdef const unsigned char* t = q
        if not NAME_START[q[0]]:
            self.fail_at("malformed processing instruction", p)
        q += 1
        while NAME_CHAR[q[0]]:
            q += 1
        if (q - t == 3 and (t[0] | 0x20) == c'x' and (t[1] | 0x20) == c'm'
                and (t[2] | 0x20) == c'l'):
            self.fail_at("XML declaration not at the start of the document", p)
        if q[0] == c'?' and q[1] == c'>':
            return q + 2
        if not IS_WS3[q[0]]:
            self.fail_at("malformed processing instruction", p)
        while True:
            q = <const unsigned char*>memchr(q, c'?', self.end - q)
            if q == NULL:
                self.fail_at("unterminated processing instruction", p)
            if q + 1 < self.end and q[1] == c'>':
                return q + 2
            q += 1

    cdef int top_misc(self) except -1:
        """Skips whitespace, comments and PIs outside the root; returns R_START or R_EOF."""
        cdef const unsigned char* p = self.p
        cdef unsigned char c
        while True:
            c = p[0]
            if IS_WS3[c]:
                p += 1
            elif c == 0:
                self.p = p
                return R_EOF
            elif c == c'<':
                c = p[1]
                if c == c'!':
                    if self.end - p >= 4 and memcmp(p, b"<!--", 4) == 0:
                        p = self.skip_comment(p)
                    else:
                        self.fail_at("DOCTYPE, CDATA outside the root, or another unsupported declaration", p)
                elif c == c'?':
                    p = self.skip_pi(p)
                elif c == c'/':
                    self.fail_at("unexpected end tag", p)
                else:
                    self.p = p
                    return R_START
            else:
                self.fail_at("text outside the root element", p)

    cdef int read_text(self) except -1:
        """Reads character data up to the next element tag; returns R_START or R_END.

        Leaves the text in tptr/tlen (in the buffer, or in the scratch when it had
        references or CDATA), and self.p at the '<'.
        """
        cdef const unsigned char* p = self.p
        cdef const unsigned char* s = p
        cdef unsigned char c
        while TEXT_PLAIN[p[0]]:
            p += 1
        if p[0] == c'<':
            c = p[1]
            if c != c'!' and c != c'?':
                self.tptr = s
                self.tlen = p - s
                self.thigh = not self.ascii
                self.p = p
                return R_END if c == c'/' else R_START
        return self.read_text_slow(s, p)

    cdef int read_text_slow(self, const unsigned char* s, const unsigned char* p) except -1:
        cdef unsigned char c
        cdef const unsigned char* q
        cdef int r
        self.sclen = 0
        self.thigh = not self.ascii
        while True:
            if p > s:
                self.sc_put(s, p - s)
            c = p[0]
            if c == 0:
                self.fail_at("truncated document", p)
            elif c == c']':
                if self.end - p >= 3 and p[1] == c']' and p[2] == c'>':
                    self.fail_at("']]>' in text", p)
                self.sc_put(p, 1)
                p += 1
            elif c == c'&':
                p = self.ref(p, True)
            else:  # '<'
                c = p[1]
                if c == c'/':
                    r = R_END
                    break
                elif c == c'!':
                    if self.end - p >= 4 and memcmp(p, b"<!--", 4) == 0:
                        p = self.skip_comment(p)
                    elif self.end - p >= 9 and memcmp(p, b"<![CDATA[", 9) == 0:
                        q = p + 9
                        while True:
                            q = <const unsigned char*>memchr(q, c']', self.end - q)
                            if q == NULL:
                                self.fail_at("unterminated CDATA section", p)
                            if q + 2 < self.end and q[1] == c']' and q[2] == c'>':
                                break
                            q += 1
                        self.sc_put(p + 9, q - (p + 9))
                        p = q + 3
                    else:
                        self.fail_at("DOCTYPE, CDATA outside the root, or another unsupported declaration", p)
                elif c == c'?':
                    p = self.skip_pi(p)
                else:
                    r = R_START
                    break
            s = p
            while TEXT_PLAIN[p[0]]:
                p += 1
        self.p = p
        self.tptr = <const unsigned char*>self.sc if self.sclen else p
        self.tlen = self.sclen
        return r

    cdef int start_tag(self) except -1:
        """Parses the start tag at self.p == '<': sets tname, tag and empty, and moves past it."""
        cdef const unsigned char* p = self.p + 1
        cdef const unsigned char* n0 = p
        cdef const unsigned char* local
        if not NAME_START[p[0]]:
            self.fail("malformed start tag")
        p += 1
        while NAME_CHAR[p[0]]:
            p += 1
        self.tname = n0
        self.tnamelen = p - n0
        if p[0] == c'>':
            self.empty = False
            self.p = p + 1
        elif p[0] == c'/' and p[1] == c'>':
            self.empty = True
            self.p = p + 2
        else:
            self.p = self.attributes(p)
        self.tag = _tag_id(n0, p - n0, self.end)
        if self.tag == T_UNKNOWN:
            # a namespace prefix (<ex:nil/>) is ignored, as xmlrpc.client does
            local = n0
            while n0 < p:
                if n0[0] == c':':
                    local = n0 + 1
                n0 += 1
            if local != self.tname:
                self.tag = _tag_id(local, p - local, self.end)
        return 0

    cdef const unsigned char* attributes(self, const unsigned char* k) except NULL:
        """Checks the attributes after a tag name (they are ignored); returns the position after the tag."""
        cdef const unsigned char* q
        cdef const unsigned char* a
        cdef const unsigned char* v
        cdef unsigned char quote
        seen = set()
        while True:
            q = k
            if not IS_WS3[q[0]]:
                break
            while IS_WS3[q[0]]:
                q += 1
            if not NAME_START[q[0]]:
                break
            a = q
            q += 1
            while NAME_CHAR[q[0]]:
                q += 1
            an = PyBytes_FromStringAndSize(<const char*>a, q - a)
            while IS_WS3[q[0]]:
                q += 1
            if q[0] != c'=':
                break
            q += 1
            while IS_WS3[q[0]]:
                q += 1
            quote = q[0]
            if quote != c'"' and quote != c"'":
                break
            q += 1
            v = q
            while q[0] != quote and q[0] != c'<' and q[0] != 0:
                q += 1
            if q[0] != quote:
                break
            if an in seen:
                self.fail_at("duplicate attribute", a)
            seen.add(an)
            while v < q:
                if v[0] == c'&':
                    v = self.ref(v, False)
                else:
                    v += 1
            k = q + 1
        while IS_WS3[k[0]]:
            k += 1
        if k[0] == c'/' and k[1] == c'>':
            self.empty = True
            return k + 2
        if k[0] == c'>':
            self.empty = False
            return k + 1
        self.fail_at("malformed start tag", k)

    cdef int end_tag(self, const unsigned char* name, Py_ssize_t n) except -1:
        """Checks the end tag at self.p == '</' closes `name`, and moves past it."""
        cdef const unsigned char* p = self.p + 2
        cdef const unsigned char* q
        cdef bint same
        if n <= 8 and self.end - p >= 8:
            same = _load(p, n, self.end) == _load(name, n, self.end)
        else:
            same = self.end - p >= n and memcmp(p, name, n) == 0
        if same:
            q = p + n
            if q[0] == c'>':
                self.p = q + 1
                return 0
            if IS_WS3[q[0]]:
                while IS_WS3[q[0]]:
                    q += 1
                if q[0] == c'>':
                    self.p = q + 1
                    return 0
        self.fail("mismatched or malformed end tag, expected </%s>" % (<bytes>PyBytes_FromStringAndSize(<const char*>name, n)).decode("ascii"))

    cdef int leaf_text(self) except -1:
        """Reads the text of the leaf element whose start tag was just parsed, and its end tag."""
        cdef const unsigned char* name = self.tname
        cdef Py_ssize_t namelen = self.tnamelen
        if self.empty:
            self.tlen = 0
            self.tptr = self.p
            self.thigh = False
            return 0
        if self.read_text() != R_END:
            self.fail("unexpected element inside a leaf element")
        return self.end_tag(name, namelen)

    # ---- values

    cdef inline PyObject* text_str(self) except NULL:
        cdef PyObject* o
        if not self.thigh:
            o = c_unicode_new(self.tlen, 127)
            memcpy(c_unicode_data(o), self.tptr, self.tlen)
            return o
        return c_decode_utf8(<const char*>self.tptr, self.tlen, NULL)

    cdef PyObject* name_str(self) except NULL:
        cdef Py_ssize_t n = self.tlen
        cdef const unsigned char* s = self.tptr
        cdef uint64_t a = 0, b = 0, h
        cdef Py_ssize_t i
        cdef NameEntry* e
        cdef PyObject* o
        if n == 0 or n > NAME_CACHE_MAX:
            return self.text_str()
        if n >= 8:
            memcpy(&a, s, 8)
            memcpy(&b, s + n - 8, 8)
        else:
            for i in range(n):
                a = (a << 8) | s[i]
        h = (a * 0x9E3779B97F4A7C15ULL) ^ (b * 0xC2B2AE3D27D4EB4FULL) ^ <uint64_t>n
        h ^= h >> 29
        h *= 0xBF58476D1CE4E5B9ULL
        e = &_names[h >> (64 - NAME_CACHE_BITS)]
        if e.n == n and e.a == a and e.b == b and e.s != NULL and (n <= 16 or memcmp(e.key, s, n) == 0):
            c_incref(e.s)
            return e.s
        o = self.text_str()
        c_xdecref(e.s)
        c_incref(o)
        e.s = o
        e.n = n
        e.a = a
        e.b = b
        memcpy(e.key, s, n)
        return o

    cdef PyObject* leaf_value(self, int tag) except NULL:
        """Converts the text of a typed scalar element; returns a new reference."""
        cdef const unsigned char* s = self.tptr
        cdef Py_ssize_t n = self.tlen
        cdef Py_ssize_t i, j, k
        cdef PyObject* o
        if tag == T_STRING:
            return self.text_str()
        if tag == T_INT or tag == T_I4 or tag == T_I8:
            return self.int_value(s, n)
        if tag == T_BOOLEAN:
            if n == 1:
                if s[0] == c'1':
                    c_incref(c_Py_True)
                    return c_Py_True
                if s[0] == c'0':
                    c_incref(c_Py_False)
                    return c_Py_False
            self.fail("bad boolean")
        if tag == T_NIL:
            if not _all_ws(s, n):
                self.fail("text inside <nil/>")
            c_incref(c_Py_None)
            return c_Py_None
        if tag == T_DOUBLE:
            i = 0
            j = n
            while i < j and IS_WS[s[i]]:
                i += 1
            while j > i and IS_WS[s[j - 1]]:
                j -= 1
            if i == j:
                self.fail("bad double")
            for k in range(i, j):
                if not DOUBLE_CHAR[s[k]]:
                    self.fail("bad double")
            txt = PyBytes_FromStringAndSize(<const char*>s + i, j - i).decode("ascii")
            try:
                return c_float_from_string(txt)
            except ValueError:
                self.fail("bad double")
        if tag == T_DATETIME:
            o = self.text_str()
            txt = <object>o
            c_decref(o)
            v = _DateTime(txt.strip())
            c_incref(<PyObject*>v)
            return <PyObject*>v
        # base64
        for i in range(n):
            if s[i] >= 0x80:
                self.fail("bad base64")
        try:
            data = _a2b_base64(PyBytes_FromStringAndSize(<const char*>s, n))
        except (_binascii_Error, ValueError):
            self.fail("bad base64")
        v = _Binary(data)
        c_incref(<PyObject*>v)
        return <PyObject*>v

    cdef PyObject* int_value(self, const unsigned char* s, Py_ssize_t n) except NULL:
        cdef Py_ssize_t i = 0, j = n
        cdef bint neg = False
        cdef uint64_t acc = 0, d
        cdef long long v
        while i < j and IS_WS[s[i]]:
            i += 1
        while j > i and IS_WS[s[j - 1]]:
            j -= 1
        if i < j and (s[i] == c'+' or s[i] == c'-'):
            neg = s[i] == c'-'
            i += 1
        if i == j:
            self.fail("bad integer")
        while i < j:
            d = <uint64_t>s[i] - 48
            if d > 9:
                self.fail("bad integer")
            if acc > 922337203685477580ULL:
                self.fail("integer out of 64-bit range")
            acc = acc * 10 + d
            if acc > 9223372036854775808ULL:
                self.fail("integer out of 64-bit range")
            i += 1
        if neg:
            v = <long long>(0 - acc)
        else:
            if acc > 9223372036854775807ULL:
                self.fail("integer out of 64-bit range")
            v = <long long>acc
        return c_long_from_ll(v)

    # ---- the grammar

    cdef object run(self):
        cdef Frame* f
        cdef Frame* parent
        cdef int kind = 0, state, tag, r
        cdef int depth = 0
        cdef PyObject* o
        cdef const unsigned char* vname
        cdef Py_ssize_t vnamelen
        if self.top_misc() != R_START:
            self.fail("no root element")
        self.start_tag()
        tag = self.tag
        if tag == T_METHODCALL:
            kind = K_CALL
        elif tag == T_METHODRESPONSE:
            kind = K_RESP
        elif tag == T_PARAMS:
            kind = K_PARAMS
        else:
            self.fail("unknown root element")
        if self.empty:
            if kind != K_PARAMS:
                self.fail("empty root element")
            self.result = ()
        elif kind == K_PARAMS:
            self.push(kind, c_list_new(0))
        else:
            self.push(kind, NULL)
        while self.nfr > 0:
            f = &self.fr[self.nfr - 1]
            kind = f.kind
            r = self.read_text()
            if self.tlen and not _all_ws(self.tptr, self.tlen):
                self.fail("unexpected text")
            state = f.state
            if r == R_END:
                self.end_tag(f.name, f.namelen)
                parent = &self.fr[self.nfr - 2] if self.nfr >= 2 else NULL
                if kind == K_VALUE:
                    if state != 1:
                        self.fail("empty typed <value>")
                    depth -= 1
                    o = f.obj
                    f.obj = NULL
                    self.nfr -= 1
                    self.deliver(parent, o)
                elif kind == K_MEMBER:
                    if state != 2:
                        self.fail("<member> needs a <name> and a <value>")
                    c_dict_setitem(parent.obj, f.key, f.obj)
                    self.nfr -= 1
                    c_decref(f.key)
                    c_decref(f.obj)
                elif kind == K_STRUCT or kind == K_DATA:
                    if kind == K_STRUCT:
                        self.sizes[depth] = c_dict_size(f.obj)
                    parent.obj = f.obj
                    parent.state = 1
                    self.nfr -= 1
                elif kind == K_ARRAY:
                    if state != 1:
                        self.fail("<array> needs a <data>")
                    parent.obj = f.obj
                    parent.state = 1
                    self.nfr -= 1
                elif kind == K_PARAM:
                    if state != 1:
                        self.fail("<param> needs a <value>")
                    c_list_append(parent.obj, f.obj)
                    self.nfr -= 1
                    c_decref(f.obj)
                elif kind == K_PARAMS:
                    o = c_list_as_tuple(f.obj)
                    self.nfr -= 1
                    c_decref(f.obj)
                    if parent != NULL:
                        parent.obj = o
                        parent.state = 2 if parent.kind == K_CALL else 1
                    else:
                        self.result = <object>o
                        c_decref(o)
                elif kind == K_FAULT:
                    if state != 1:
                        self.fail("<fault> needs a <value>")
                    self.fault = <object>f.obj
                    self.has_fault = True
                    self.nfr -= 1
                    c_decref(f.obj)
                    parent.state = 1
                elif kind == K_CALL or kind == K_RESP:
                    if state == 0:
                        self.fail("<methodCall> needs a <methodName>" if kind == K_CALL
                                  else "<methodResponse> needs <params> or <fault>")
                    if f.obj != NULL:
                        self.result = <object>f.obj
                    else:
                        self.result = ()
                    self.nfr -= 1
                    c_xdecref(f.obj)
                continue
            # a start tag
            self.start_tag()
            tag = self.tag
            if tag == T_VALUE and (kind == K_DATA or (state == 0 and (kind == K_PARAM or kind == K_FAULT))
                                   or (state == 1 and kind == K_MEMBER)):
                depth += 1
                if depth > self.max_depth:
                    self.fail("nesting too deep")
                if self.empty:
                    depth -= 1
                    self.deliver(f, c_unicode_new(0, 0))
                    continue
                vname = self.tname
                vnamelen = self.tnamelen
                r = self.read_text()
                if r == R_END:
                    self.end_tag(vname, vnamelen)
                    depth -= 1
                    # short strings repeat (OpaqueRef:NULL, enum names, "true"): share them
                    self.deliver(f, self.name_str() if self.tlen <= 16 else self.text_str())
                else:
                    if self.tlen and not _all_ws(self.tptr, self.tlen):
                        self.fail("text mixed with an element inside <value>")
                    self.push(K_VALUE, NULL)
            elif kind == K_VALUE and state == 0:
                if tag == T_STRUCT:
                    if self.empty:
                        f.obj = c_dict_new()
                        f.state = 1
                    else:
                        self.push(K_STRUCT, self.new_struct(depth))
                elif tag == T_ARRAY:
                    if self.empty:
                        self.fail("<array> needs a <data>")
                    self.push(K_ARRAY, NULL)
                elif T_STRING <= tag <= T_NIL:
                    self.leaf_text()
                    f.obj = self.leaf_value(tag)
                    f.state = 1
                else:
                    self.fail("unknown value type")
            elif tag == T_MEMBER and kind == K_STRUCT:
                if self.empty:
                    self.fail("empty <member/>")
                self.push(K_MEMBER, NULL)
            elif tag == T_NAME and kind == K_MEMBER and state == 0:
                self.leaf_text()
                f.key = self.name_str()
                f.state = 1
            elif tag == T_DATA and kind == K_ARRAY and state == 0:
                if self.empty:
                    f.obj = c_list_new(0)
                    f.state = 1
                else:
                    self.push(K_DATA, c_list_new(0))
            elif tag == T_PARAM and kind == K_PARAMS:
                if self.empty:
                    self.fail("empty <param/>")
                self.push(K_PARAM, NULL)
            elif tag == T_METHODNAME and kind == K_CALL and state == 0:
                self.leaf_text()
                o = self.text_str()
                self.methodname = <object>o
                c_decref(o)
                f.state = 1
            elif tag == T_PARAMS and ((kind == K_CALL and state == 1) or (kind == K_RESP and state == 0)):
                if self.empty:
                    f.obj = <PyObject*>()
                    c_incref(f.obj)
                    f.state = 2 if kind == K_CALL else 1
                else:
                    self.push(K_PARAMS, c_list_new(0))
            elif tag == T_FAULT and kind == K_RESP and state == 0:
                if self.empty:
                    self.fail("empty <fault/>")
                self.push(K_FAULT, NULL)
            else:
                self.fail("unexpected element")
        if self.top_misc() != R_EOF:
            self.fail("trailing content after the root element")
        if self.has_fault:
            fault = self.fault
            if type(fault) is not dict or "faultCode" not in fault or "faultString" not in fault:
                raise CodecError("malformed <fault>")
            raise _Fault(fault["faultCode"], fault["faultString"])
        return (self.result, self.methodname)


cdef tuple c_loads(object data):
    cdef bytes buf
    cdef Py_ssize_t n, pos = 0
    cdef const unsigned char* s
    cdef int flags
    cdef bint ascii_only = False
    cdef _Parser ps
    max_size = MAX_SIZE
    if type(data) is bytes:
        buf = <bytes>data
    elif isinstance(data, str):
        if len(<str>data) > max_size:
            raise CodecError("document too large")
        try:
            buf = (<str>data).encode("utf-8")
        except UnicodeEncodeError:
            raise CodecError("lone surrogate in the document") from None
    elif isinstance(data, (bytes, bytearray, memoryview)):
        buf = bytes(data)
    else:
        raise TypeError(f"expected bytes or str, not {type(data).__name__}")
    n = PyBytes_GET_SIZE(buf)
    if n == 0:
        raise CodecError("empty document")
    if n > max_size:
        raise CodecError("document too large")
    s = <const unsigned char*>PyBytes_AS_STRING(buf)
    if n >= 3 and s[0] == 0xEF and s[1] == 0xBB and s[2] == 0xBF:
        pos = 3
    flags = _check_document(s + pos, n - pos)
    if flags & 2:
        buf = _normalise_newlines(s, n)
        n = PyBytes_GET_SIZE(buf)
        s = <const unsigned char*>PyBytes_AS_STRING(buf)
    if n - pos >= 6 and memcmp(s + pos, b"<?xml", 5) == 0 and IS_WS[s[pos + 5]]:
        if n - pos >= 21 and memcmp(s + pos, b'<?xml version="1.0"?>', 21) == 0:
            pos += 21
        elif n - pos >= 21 and memcmp(s + pos, b"<?xml version='1.0'?>", 21) == 0:
            pos += 21
        elif n - pos >= 38 and (memcmp(s + pos, b'<?xml version="1.0" encoding="UTF-8"?>', 38) == 0
                                or memcmp(s + pos, b'<?xml version="1.0" encoding="utf-8"?>', 38) == 0):
            pos += 38
        else:
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
    if ascii_only and (flags & 1):
        raise CodecError("non-ASCII byte in a US-ASCII document")
    ps = _Parser.__new__(_Parser)
    ps.keep = buf
    ps.s0 = s
    ps.p = s + pos
    ps.end = s + n
    ps.ascii = not (flags & 1)
    ps.max_depth = MAX_DEPTH
    return ps.run()


def loads(data):
    """Decodes an XML-RPC methodCall or methodResponse: returns (params, methodname or None).

    Same results as ``xmlrpc.client.loads(data)``; a <fault> raises
    ``xmlrpc.client.Fault``; anything malformed raises CodecError.
    """
    return c_loads(data)


# --------------------------------------------------------------------------
# Encoding

cdef struct Enc:
    char* d
    Py_ssize_t n
    Py_ssize_t cap
    int max_depth
    bint allow_none
    bint ints_as_strings


cdef int _grow(Enc* e, Py_ssize_t extra) except -1:
    cdef Py_ssize_t cap = e.cap * 2
    cdef char* nd
    if cap < e.n + extra:
        cap = e.n + extra + 4096
    nd = <char*>realloc(e.d, cap)
    if nd == NULL:
        raise MemoryError()
    e.d = nd
    e.cap = cap
    return 0


cdef inline int _reserve(Enc* e, Py_ssize_t extra) except -1:
    if e.n + extra > e.cap:
        return _grow(e, extra)
    return 0


cdef inline void _put(Enc* e, const char* s, Py_ssize_t k) noexcept:
    memcpy(e.d + e.n, s, k)
    e.n += k


cdef inline int _lit(Enc* e, const char* s) except -1:
    cdef Py_ssize_t k = strlen(s)
    if e.n + k > e.cap:
        _grow(e, k)
    memcpy(e.d + e.n, s, k)
    e.n += k
    return 0


cdef int _init_enc(Enc* e, Py_ssize_t cap, bint allow_none, bint ints_as_strings) except -1:
    e.d = <char*>malloc(cap)
    if e.d == NULL:
        raise MemoryError()
    e.n = 0
    e.cap = cap
    e.max_depth = MAX_DEPTH
    e.allow_none = allow_none
    e.ints_as_strings = ints_as_strings
    return 0


cdef inline void _put_ll(Enc* e, long long x) noexcept:
    """Writes x in decimal; the caller reserved 20 bytes."""
    cdef char tmp[24]
    cdef int i = 24
    cdef unsigned long long u = (0ULL - <unsigned long long>x) if x < 0 else <unsigned long long>x
    while True:
        i -= 1
        tmp[i] = <char>(48 + u % 10)
        u //= 10
        if u == 0:
            break
    if x < 0:
        i -= 1
        tmp[i] = c'-'
    _put(e, tmp + i, 24 - i)


cdef int _text(Enc* e, str s) except -1:
    """Writes s escaped for XML text, or raises CodecError for a character XML cannot carry."""
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(s)
    cdef Py_ssize_t i = 0, j, stop
    cdef const unsigned char* d
    cdef unsigned char c
    cdef unsigned int kind
    cdef void* data
    cdef unsigned int u
    cdef char* w
    if PyUnicode_IS_ASCII(s):
        d = <const unsigned char*>PyUnicode_DATA(s)
        while True:
            j = i
            while j < n and ESC[d[j]] == 0:
                j += 1
            _reserve(e, j - i + 5)
            _put(e, <const char*>d + i, j - i)
            if j == n:
                return 0
            c = ESC[d[j]]
            if c == 1:
                _put(e, b"&amp;", 5)
            elif c == 2:
                _put(e, b"&lt;", 4)
            elif c == 3:
                _put(e, b"&gt;", 4)
            elif c == 4:
                _put(e, b"&#13;", 5)
            else:
                raise CodecError("string holds a character XML cannot carry")
            i = j + 1
    kind = PyUnicode_KIND(s)
    data = PyUnicode_DATA(s)
    while i < n:
        stop = i + 1024
        if stop > n:
            stop = n
        _reserve(e, (stop - i) * 5)
        w = e.d + e.n
        while i < stop:
            u = PyUnicode_READ(kind, data, i)
            i += 1
            if u < 0x80:
                c = ESC[u]
                if c == 0:
                    w[0] = <char>u
                    w += 1
                elif c == 1:
                    memcpy(w, b"&amp;", 5)
                    w += 5
                elif c == 2:
                    memcpy(w, b"&lt;", 4)
                    w += 4
                elif c == 3:
                    memcpy(w, b"&gt;", 4)
                    w += 4
                elif c == 4:
                    memcpy(w, b"&#13;", 5)
                    w += 5
                else:
                    raise CodecError("string holds a character XML cannot carry")
            elif u < 0x800:
                w[0] = <char>(0xC0 | (u >> 6))
                w[1] = <char>(0x80 | (u & 0x3F))
                w += 2
            elif u < 0x10000:
                if 0xD800 <= u <= 0xDFFF or u == 0xFFFE or u == 0xFFFF:
                    raise CodecError("string holds a character XML cannot carry")
                w[0] = <char>(0xE0 | (u >> 12))
                w[1] = <char>(0x80 | ((u >> 6) & 0x3F))
                w[2] = <char>(0x80 | (u & 0x3F))
                w += 3
            else:
                w[0] = <char>(0xF0 | (u >> 18))
                w[1] = <char>(0x80 | ((u >> 12) & 0x3F))
                w[2] = <char>(0x80 | ((u >> 6) & 0x3F))
                w[3] = <char>(0x80 | (u & 0x3F))
                w += 4
        e.n = w - e.d
    return 0


cdef int _ascii_obj(Enc* e, str s) except -1:
    """Copies an ASCII-only str (a repr) as is."""
    cdef Py_ssize_t k
    cdef const char* p = PyUnicode_AsUTF8AndSize(s, &k)
    _reserve(e, k)
    _put(e, p, k)
    return 0


cdef int _int(Enc* e, object v) except -1:
    cdef int ovf = 0
    cdef long long x = PyLong_AsLongLongAndOverflow(v, &ovf)
    if ovf:
        raise CodecError("int exceeds 64 bits")
    _reserve(e, 48)
    if e.ints_as_strings:
        _put(e, b"<value>", 7)
        _put_ll(e, x)
        _put(e, b"</value>", 8)
    elif -2147483648 <= x <= 2147483647:
        _put(e, b"<value><int>", 12)
        _put_ll(e, x)
        _put(e, b"</int></value>", 14)
    else:
        _put(e, b"<value><i8>", 11)
        _put_ll(e, x)
        _put(e, b"</i8></value>", 13)
    return 0


cdef int _key(Enc* e, object k) except -1:
    cdef int ovf = 0
    cdef long long x
    if isinstance(k, str):
        return _text(e, <str>k)
    if isinstance(k, int) and not isinstance(k, bool):
        x = PyLong_AsLongLongAndOverflow(k, &ovf)
        if not ovf:
            _reserve(e, 24)
            _put_ll(e, x)
            return 0
        try:
            r = _int_repr(k)
        except ValueError:
            raise CodecError("int key too large") from None
        return _ascii_obj(e, r)
    raise CodecError(f"struct key must be str or int, not {type(k).__name__}")


cdef int _b64(Enc* e, object data) except -1:
    if not isinstance(data, (bytes, bytearray)):
        raise CodecError("Binary.data must be bytes")
    enc = _b2a_base64(data, newline=False)
    _lit(e, b"<value><base64>")
    _reserve(e, PyBytes_GET_SIZE(enc))
    _put(e, PyBytes_AS_STRING(enc), PyBytes_GET_SIZE(enc))
    _lit(e, b"</base64></value>")
    return 0


cdef int _dict(Enc* e, object v, int depth) except -1:
    _lit(e, b"<value><struct>")
    if type(v) is dict:
        for k, x in (<dict>v).items():
            _lit(e, b"<member><name>")
            if type(k) is str:
                _text(e, <str>k)
            else:
                _key(e, k)
            _lit(e, b"</name>")
            _value(e, x, depth)
            _lit(e, b"</member>")
    else:
        for k, x in v.items():
            _lit(e, b"<member><name>")
            _key(e, k)
            _lit(e, b"</name>")
            _value(e, x, depth)
            _lit(e, b"</member>")
    _lit(e, b"</struct></value>")
    return 0


cdef int _array(Enc* e, object v, int depth) except -1:
    _lit(e, b"<value><array><data>")
    if type(v) is list:
        for x in <list>v:
            _value(e, x, depth)
    elif type(v) is tuple:
        for x in <tuple>v:
            _value(e, x, depth)
    else:
        for x in v:
            _value(e, x, depth)
    _lit(e, b"</data></array></value>")
    return 0


cdef int _value(Enc* e, object v, int depth) except -1:
    """Writes <value>…</value> for v, at nesting depth `depth`."""
    if depth > e.max_depth:
        raise CodecError("nesting too deep (or a self-referencing container)")
    cdef type t = type(v)
    if t is str:
        _reserve(e, 7)
        _put(e, b"<value>", 7)
        _text(e, <str>v)
        _reserve(e, 8)
        _put(e, b"</value>", 8)
        return 0
    if v is None:
        if not e.allow_none:
            raise CodecError("cannot marshal None unless allow_none is enabled")
        return _lit(e, b"<value><nil/></value>")
    if t is bool:
        return _lit(e, b"<value><boolean>1</boolean></value>" if v is True
                    else b"<value><boolean>0</boolean></value>")
    if t is dict:
        return _dict(e, v, depth + 1)
    if t is int:
        return _int(e, v)
    if t is list:
        return _array(e, v, depth + 1)
    if isinstance(v, int):
        return _int(e, v)
    if isinstance(v, str):
        _lit(e, b"<value>")
        _text(e, <str>v)
        return _lit(e, b"</value>")
    if isinstance(v, float):
        _lit(e, b"<value><double>")
        _ascii_obj(e, _float_repr(v))
        return _lit(e, b"</double></value>")
    if isinstance(v, dict):
        return _dict(e, v, depth + 1)
    if isinstance(v, (list, tuple)):
        return _array(e, v, depth + 1)
    if isinstance(v, _DateTime):
        s = v.value
        if not isinstance(s, str):
            raise CodecError("DateTime.value must be str")
        _lit(e, b"<value><dateTime.iso8601>")
        _text(e, <str>s)
        return _lit(e, b"</dateTime.iso8601></value>")
    if isinstance(v, _datetime):
        s = _DateTime(v).value
        if not isinstance(s, str):
            raise CodecError("cannot format the datetime")
        _lit(e, b"<value><dateTime.iso8601>")
        _text(e, <str>s)
        return _lit(e, b"</dateTime.iso8601></value>")
    if isinstance(v, _Binary):
        return _b64(e, v.data)
    if isinstance(v, (bytes, bytearray)):
        return _b64(e, v)
    raise CodecError(f"cannot marshal {type(v).__name__} objects")


cdef bytes _finish(Enc* e):
    return PyBytes_FromStringAndSize(e.d, e.n)


def dumps(params, methodname=None, methodresponse=False, allow_none=True, *, ints_as_strings=False):
    """Encodes params (a tuple, or a Fault) as compact UTF-8 XML-RPC, the way xapi writes it.

    methodCall when methodname is given, methodResponse when methodresponse is
    true (params must then hold exactly one value) or params is a Fault, else a
    bare <params> document.  Strings go as bare <value>s; ints as <int> (32-bit)
    or <i8> (64-bit), or as bare strings with ints_as_strings, as xapi sends its
    int64s.  A fault's faultCode is always a typed int.
    """
    cdef Enc e
    _init_enc(&e, 1024, allow_none, ints_as_strings)
    try:
        _lit(&e, b'<?xml version="1.0"?>')
        if isinstance(params, _Fault):
            if methodname:
                raise CodecError("a Fault can only be sent in a methodResponse")
            _lit(&e, b"<methodResponse><fault>")
            e.ints_as_strings = False
            _value(&e, {"faultCode": params.faultCode, "faultString": params.faultString}, 1)
            _lit(&e, b"</fault></methodResponse>")
            return _finish(&e)
        if not isinstance(params, (tuple, list)):
            raise TypeError("params must be a tuple or a Fault")
        if methodname:
            if not isinstance(methodname, str):
                raise CodecError("methodname must be str")
            _lit(&e, b"<methodCall><methodName>")
            _text(&e, <str>methodname)
            _lit(&e, b"</methodName>")
            tail = b"</methodCall>"
        elif methodresponse:
            if len(params) != 1:
                raise CodecError("response tuple must be a singleton")
            _lit(&e, b"<methodResponse>")
            tail = b"</methodResponse>"
        else:
            tail = b""
        _lit(&e, b"<params>")
        for v in params:
            _lit(&e, b"<param>")
            _value(&e, v, 1)
            _lit(&e, b"</param>")
        _lit(&e, b"</params>")
        _lit(&e, <bytes>tail)
        return _finish(&e)
    finally:
        free(e.d)


cdef bytes c_dumps_success(object value, bint ints_as_strings):
    cdef Enc e
    _init_enc(&e, 1024, True, ints_as_strings)
    try:
        _lit(&e, b'<?xml version="1.0"?><methodResponse><params><param><value><struct>'
                 b'<member><name>Status</name><value>Success</value></member><member><name>Value</name>')
        _value(&e, value, 2)
        _lit(&e, b"</member></struct></value></param></params></methodResponse>")
        return _finish(&e)
    finally:
        free(e.d)


cdef bytes c_dumps_failure(object description):
    cdef Enc e
    if not isinstance(description, (list, tuple)):
        raise CodecError("ErrorDescription must be a list")
    _init_enc(&e, 1024, True, False)
    try:
        _lit(&e, b'<?xml version="1.0"?><methodResponse><params><param><value><struct>'
                 b'<member><name>Status</name><value>Failure</value></member><member><name>ErrorDescription</name>'
                 b'<value><array><data>')
        for x in description:
            _lit(&e, b"<value>")
            _text(&e, str(x))
            _lit(&e, b"</value>")
        _lit(&e, b"</data></array></value></member></struct></value></param></params></methodResponse>")
        return _finish(&e)
    finally:
        free(e.d)


def dumps_success(value, ints_as_strings=True):
    """xapi's success reply: ``dumps(({"Status": "Success", "Value": value},), methodresponse=True)``."""
    return c_dumps_success(value, ints_as_strings)


def dumps_failure(description):
    """xapi's failure reply: ``{"Status": "Failure", "ErrorDescription": [str(x) for x in description]}``."""
    return c_dumps_failure(description)


# --------------------------------------------------------------------------
# JSON-RPC (orjson does the work; these are thin checks around it)

def _json_default(o):
    if isinstance(o, _DateTime):
        return o.value
    if isinstance(o, _datetime):
        return _DateTime(o).value
    if isinstance(o, _Binary):
        o = o.data
    if isinstance(o, (bytes, bytearray)):
        return (<bytes>_b2a_base64(o, newline=False)).decode("ascii")
    raise TypeError(f"cannot encode {type(o).__name__} objects")


def json_loads_request(data):
    """Decodes a JSON-RPC v1 or v2 request: returns (method, params, id, version).

    v2 is a request with ``"jsonrpc": "2.0"``; its params may be omitted (→ [])
    or be an object.  Errors raise CodecError, with ``err.id`` set when the id
    could be read.
    """
    if isinstance(data, str):
        data = (<str>data).encode("utf-8", "surrogatepass")
    elif not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, not {type(data).__name__}")
    if len(data) > MAX_SIZE:
        raise CodecError("request too large")
    try:
        req = _orjson_loads(data)
    except _JSONDecodeError as e:
        raise CodecError(f"invalid JSON: {e}") from None
    if type(req) is not dict:
        raise CodecError("a JSON-RPC request must be an object")
    cdef dict d = <dict>req
    rid = d.get("id")
    if not (rid is None or type(rid) is str or type(rid) is int):
        raise CodecError("id must be a string, an integer or null")
    if "id" not in d:
        raise CodecError("missing id")
    method = d.get("method")
    if type(method) is not str:
        raise CodecError("method must be a string", rid)
    v = d.get("jsonrpc")
    if v is None and "jsonrpc" not in d:
        params = d.get("params")
        if type(params) is not list:
            raise CodecError("params must be a list", rid)
        return method, params, rid, 1
    if v != "2.0":
        raise CodecError('jsonrpc must be "2.0"', rid)
    params = d.get("params", [])
    if type(params) is not list and type(params) is not dict:
        raise CodecError("params must be a list or an object", rid)
    return method, params, rid, 2


def json_dumps_success(result, id, version):
    """The JSON-RPC success reply for the request's version."""
    if version == 2:
        doc = {"jsonrpc": "2.0", "result": result, "id": id}
    elif version == 1:
        doc = {"result": result, "error": None, "id": id}
    else:
        raise CodecError("version must be 1 or 2")
    try:
        return _orjson_dumps(doc, default=_json_default, option=_JSON_FAST_OPTS)
    except _JSONEncodeError:
        pass
    try:
        return _orjson_dumps(doc, default=_json_default, option=_JSON_OPTS)
    except _JSONEncodeError as e:
        raise CodecError(f"cannot encode the result: {e}") from None


def json_dumps_failure(description, id, version):
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
        return _orjson_dumps(doc)
    except _JSONEncodeError as e:
        raise CodecError(f"cannot encode the error: {e}") from None
