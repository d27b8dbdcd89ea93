# cython: language_level=3
"""Compiled reader and row encoder of state.db, behind the pure-Python reference ``xapi.db.persist`` (read its
module doc for the format): the same rows and warnings, several times faster (a pool's file is
tens of MiB and millions of attributes; the daemon reads it at every start).

It reads what xapi and the reference write, and only that: well-formed UTF-8 XML of
``<database>``, ``<manifest>``/``<pair>`` and ``<table>``/``<row>`` elements, attributes and
whitespace, the five predefined entities and character references.  For anything else (a
comment, a DOCTYPE, another encoding, text, a malformed or truncated file...) it raises
``Fallback`` before returning, and the reference reads the file: the same result or the same
error, from lxml.

An attribute becomes a Python object only when its value is decoded: its name is compared
(``memcmp``) with the column seen at the same place in the previous row of the table (the rows
of a table list their columns in the same order); references and whitespace protection are
undone in C; strings, ints, bools and the plain sets and maps of strings (quoted strings without
escapes, the usual case) are built in C, a string equal to the previous row's in its column is
shared.  Any other value goes through the reference's decoder, on the same text.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Contains, PyDict_SetItem
from cpython.list cimport PyList_Append
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memchr, memcmp, memcpy

cdef extern from "Python.h":
    dict _PyDict_NewPresized(Py_ssize_t)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    void* PyUnicode_DATA(object)

import logging
import re

log = logging.getLogger("xapi.persist")

class Fallback(Exception):
    """The file holds something this reader leaves to the reference."""


# Column kinds
cdef enum:
    K_SKIP, K_STR, K_INT, K_BOOL, K_SET, K_MAP, K_OTHER, K_UNKNOWN

_STRINGY = frozenset(("string", "ref", "enum"))


cdef class _Col:
    cdef bytes name
    cdef int kind
    cdef int role           # 1 ref, 2 __ctime, 3 __mtime (kind K_SKIP)
    cdef str field
    cdef object dec
    cdef object last        # the last string decoded (compact ASCII), shared when it comes again
    cdef long long seen     # the row it was last seen in: an attribute given twice is malformed


cdef class _Plan:
    """One table: its columns by name, the columns in the order the last row had them, and the
    defaults of the fields a row may leave out."""
    cdef str cls
    cdef dict columns       # column (str) -> _Col
    cdef list order         # position in the row -> _Col (a guess, checked by memcmp)
    cdef list defaults      # (field, mode, value): 0 the value itself, 1 a new list, 2 a new dict, 3 call it
    cdef list resets        # the same, of the fields reset at load (never read from the file)
    cdef Py_ssize_t nfields

    def __init__(self, str cls, object ref_module):
        import xapi.datamodel as dm
        from xapi.datamodel.db_names import db_column, reset_on_load
        self.cls = cls
        self.columns = {}
        self.order = []
        self.defaults = []
        self.resets = []
        self.nfields = len(dm.CLASSES[cls].fields)
        cdef _Col c
        for f in dm.CLASSES[cls].fields.values():
            c = _Col()
            c.name = db_column(cls, f.name).encode()
            c.field = f.name
            c.dec = ref_module.decoder(f.type)
            t = f.type
            if reset_on_load(cls, f.name):
                c.kind = K_SKIP
            elif t.kind in _STRINGY:
                c.kind = K_STR
            elif t.kind == "int":
                c.kind = K_INT
            elif t.kind == "bool":
                c.kind = K_BOOL
            elif t.kind == "set" and t.elem.kind in _STRINGY:
                c.kind = K_SET
            elif t.kind == "map" and t.key.kind in _STRINGY and t.elem.kind in _STRINGY:
                c.kind = K_MAP
            else:
                c.kind = K_OTHER
            self.columns[c.name.decode()] = c
            init = f.initial()
            if type(init) is list and not init:
                default = (f.name, 1, None)
            elif type(init) is dict and not init:
                default = (f.name, 2, None)
            elif init is None or type(init) in (str, int, float, bool):
                default = (f.name, 0, init)
            else:
                default = (f.name, 3, f.initial)
            (self.resets if c.kind == K_SKIP else self.defaults).append(default)
        for role, name in enumerate(("_ref", "ref", "__ctime", "__mtime")):
            c = _Col()
            c.name = name.encode()
            c.kind = K_SKIP
            c.role = role
            self.columns[name] = c

    cdef _Col col(self, Py_ssize_t i, const char* name, Py_ssize_t n):
        cdef _Col c
        if i < len(self.order):
            c = <_Col>self.order[i]
            if len(c.name) == n and memcmp(<const char*>c.name, name, n) == 0:
                return c
        key = name[:n].decode("ascii")
        c = self.columns.get(key)
        if c is None:           # unknown to this schema: read and ignored
            c = _Col()
            c.name = name[:n]
            c.kind = K_UNKNOWN
            c.field = key
            self.columns[key] = c
        while len(self.order) <= i:
            self.order.append(c)
        self.order[i] = c
        return c


cdef inline bint _ws(char ch):
    return ch == b' ' or ch == b'\t' or ch == b'\r' or ch == b'\n'


cdef enum:
    T_NONE, T_DATABASE, T_MANIFEST, T_PAIR, T_TABLE, T_ROW

# the element each element may sit in
cdef int[6] _PARENT
_PARENT[T_DATABASE] = T_NONE
_PARENT[T_MANIFEST] = T_DATABASE
_PARENT[T_PAIR] = T_MANIFEST
_PARENT[T_TABLE] = T_DATABASE
_PARENT[T_ROW] = T_TABLE

cdef enum:
    F_AMP = 1       # holds an entity or character reference
    F_PCT = 2       # holds a '%' (whitespace protection)
    F_HIGH = 4      # holds non-ASCII bytes

cdef struct Attr:
    const char* name
    Py_ssize_t name_len
    const char* value
    Py_ssize_t value_len
    int flags

_DECL = re.compile(rb"<\?xml\s+version\s*=\s*(['\"])1\.[0-9]+\1(\s+encoding\s*=\s*(['\"])utf-8\3)?"
                   rb"(\s+standalone\s*=\s*(['\"])(yes|no)\5)?\s*\?>", re.I)


cdef inline bint _name_char(unsigned char ch):
    return (b'a' <= ch <= b'z') or (b'A' <= ch <= b'Z') or (b'0' <= ch <= b'9') or ch == b'_' \
        or ch == b'-' or ch == b'.' or ch == b':'


cdef inline int _utf8(char* out, unsigned int cp):
    if cp < 0x80:
        out[0] = <char>cp
        return 1
    if cp < 0x800:
        out[0] = <char>(0xC0 | (cp >> 6))
        out[1] = <char>(0x80 | (cp & 0x3F))
        return 2
    if cp < 0x10000:
        out[0] = <char>(0xE0 | (cp >> 12))
        out[1] = <char>(0x80 | ((cp >> 6) & 0x3F))
        out[2] = <char>(0x80 | (cp & 0x3F))
        return 3
    out[0] = <char>(0xF0 | (cp >> 18))
    out[1] = <char>(0x80 | ((cp >> 12) & 0x3F))
    out[2] = <char>(0x80 | ((cp >> 6) & 0x3F))
    out[3] = <char>(0x80 | (cp & 0x3F))
    return 4


cdef class _Reader:
    cdef object ref             # the reference module (xapi.db.persist)
    cdef dict plans
    cdef dict manifest
    cdef list rows
    cdef set warned
    cdef long long row_no       # rows read, to catch an attribute given twice
    cdef char* buf              # a value with its references resolved and its protection undone
    cdef Py_ssize_t cap
    cdef Attr* attrs
    cdef Py_ssize_t attrs_cap

    def __cinit__(self):
        self.buf = NULL
        self.cap = 0
        self.attrs = NULL
        self.attrs_cap = 0

    def __dealloc__(self):
        PyMem_Free(self.buf)
        PyMem_Free(self.attrs)

    cdef int reserve(self, Py_ssize_t n) except -1:
        cdef char* p
        if n > self.cap:
            p = <char*>PyMem_Realloc(self.buf, n)
            if p == NULL:
                raise MemoryError()
            self.buf = p
            self.cap = n
        return 0

    cdef Attr* attr_slot(self, Py_ssize_t i) except NULL:
        cdef Attr* p
        if i >= self.attrs_cap:
            p = <Attr*>PyMem_Realloc(self.attrs, (i * 2 + 64) * sizeof(Attr))
            if p == NULL:
                raise MemoryError()
            self.attrs = p
            self.attrs_cap = i * 2 + 64
        return &self.attrs[i]

    cdef _Plan plan_of(self, str cls):
        p = self.plans.get(cls)
        if p is None:
            p = _Plan(cls, self.ref)
            self.plans[cls] = p
        return <_Plan>p

    cdef Py_ssize_t text(self, Attr* a, bint unprotect, const char** out) except -1:
        """The value of `a` as the reference sees it (references resolved, and with `unprotect`,
        whitespace protection undone): *out and its length."""
        cdef const char* v = a.value
        cdef Py_ssize_t n = a.value_len, i = 0, j = 0, k
        cdef unsigned int cp
        cdef char ch
        if not (a.flags & F_AMP) and not (unprotect and (a.flags & F_PCT)):
            out[0] = v
            return n
        self.reserve(n + 1)
        if a.flags & F_AMP:
            while i < n:
                ch = v[i]
                if ch != b'&':
                    self.buf[j] = ch
                    j += 1
                    i += 1
                    continue
                k = i + 1
                while k < n and v[k] != b';':
                    k += 1
                if k >= n:
                    raise Fallback("unterminated reference")
                if k - i == 3 and memcmp(v + i, b"&lt;", 4) == 0:
                    self.buf[j] = b'<'
                elif k - i == 3 and memcmp(v + i, b"&gt;", 4) == 0:
                    self.buf[j] = b'>'
                elif k - i == 4 and memcmp(v + i, b"&amp;", 5) == 0:
                    self.buf[j] = b'&'
                elif k - i == 5 and memcmp(v + i, b"&quot;", 6) == 0:
                    self.buf[j] = b'"'
                elif k - i == 5 and memcmp(v + i, b"&apos;", 6) == 0:
                    self.buf[j] = b"'"
                elif k - i >= 3 and v[i + 1] == b'#':
                    cp = _char_ref(v + i + 2, k - i - 2)
                    if not (cp == 0x9 or cp == 0xA or cp == 0xD or 0x20 <= cp <= 0xD7FF
                            or 0xE000 <= cp <= 0xFFFD or 0x10000 <= cp <= 0x10FFFF):
                        raise Fallback("character reference")
                    j += _utf8(self.buf + j, cp) - 1
                else:
                    raise Fallback("entity")
                j += 1
                i = k + 1
            n = j
            v = self.buf
        if unprotect and memchr(v, b'%', n) != NULL:
            # Xml_spaces undone in place: %_ two spaces, %. space, %t %n %r, %%; an unknown %x stays
            if v != self.buf:
                memcpy(self.buf, v, n)
            i = j = 0
            while i < n:
                ch = self.buf[i]
                if ch == b'%' and i + 1 < n:
                    ch = self.buf[i + 1]
                    if ch == b'_':      # two characters for two: in place is safe
                        self.buf[j] = b' '
                        self.buf[j + 1] = b' '
                        j += 2
                        i += 2
                        continue
                    i += 2
                    if ch == b'.':
                        ch = b' '
                    elif ch == b't':
                        ch = b'\t'
                    elif ch == b'n':
                        ch = b'\n'
                    elif ch == b'r':
                        ch = b'\r'
                    elif ch != b'%':
                        ch = b'%'
                        i -= 1
                    self.buf[j] = ch
                    j += 1
                else:
                    self.buf[j] = ch
                    j += 1
                    i += 1
            n = j
            v = self.buf
        out[0] = v
        return n

    cdef str attr_str(self, Attr* a):
        cdef const char* v
        cdef Py_ssize_t n = self.text(a, False, &v)
        return _decode(v, n)

    cdef int parse(self, bytes data) except -1:
        cdef const char* s = PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data), i = 0, k, na, start
        cdef int[8] stack
        cdef int depth = 0, tag, flags
        cdef bint root_done = False, closes
        cdef unsigned char ch, q
        cdef Attr* a
        cdef _Plan plan = None
        if n >= 3 and memcmp(s, b"\xef\xbb\xbf", 3) == 0:
            i = 3
        if n - i >= 5 and memcmp(s + i, b"<?xml", 5) == 0:
            k = i
            while k + 1 < n and not (s[k] == b'?' and s[k + 1] == b'>'):
                k += 1
            if k + 1 >= n or _DECL.fullmatch(data, i, k + 2) is None:
                raise Fallback("XML declaration")
            i = k + 2
        while True:
            while i < n and _ws(s[i]):
                i += 1
            if i >= n:
                break
            if s[i] != b'<' or i + 1 >= n:
                raise Fallback("text")
            if s[i + 1] == b'/':
                i += 2
                start = i
                while i < n and _name_char(s[i]):
                    i += 1
                tag = _tag(s + start, i - start)
                while i < n and _ws(s[i]):
                    i += 1
                if i >= n or s[i] != b'>' or depth == 0 or stack[depth - 1] != tag:
                    raise Fallback("end tag")
                i += 1
                depth -= 1
                if tag == T_TABLE:
                    plan = None
                elif tag == T_DATABASE:
                    root_done = True
                continue
            if root_done:
                raise Fallback("after the root")
            i += 1
            start = i
            while i < n and _name_char(s[i]):
                i += 1
            tag = _tag(s + start, i - start)
            if tag == T_NONE or _PARENT[tag] != (stack[depth - 1] if depth else T_NONE):
                raise Fallback("element")
            na = 0
            while True:
                k = i
                while i < n and _ws(s[i]):
                    i += 1
                if i >= n:
                    raise Fallback("truncated")
                if s[i] == b'>' or s[i] == b'/':
                    break
                if i == k:
                    raise Fallback("attributes not separated")
                a = self.attr_slot(na)
                a.name = s + i
                start = i
                while i < n and _name_char(s[i]):
                    i += 1
                a.name_len = i - start
                if a.name_len == 0 or (b'0' <= s[start] <= b'9') or s[start] == b'-' or s[start] == b'.':
                    raise Fallback("attribute name")
                while i < n and _ws(s[i]):
                    i += 1
                if i >= n or s[i] != b'=':
                    raise Fallback("attribute")
                i += 1
                while i < n and _ws(s[i]):
                    i += 1
                if i >= n or (s[i] != b'"' and s[i] != b"'"):
                    raise Fallback("attribute value")
                q = s[i]
                i += 1
                a.value = s + i
                flags = 0
                while True:
                    if i >= n:
                        raise Fallback("truncated")
                    ch = s[i]
                    if ch == q:
                        break
                    if ch < 0x20 or ch == b'<':
                        raise Fallback("character in a value")
                    if ch == b'&':
                        flags |= F_AMP
                    elif ch == b'%':
                        flags |= F_PCT
                    elif ch >= 0x80:
                        flags |= F_HIGH
                        if ch == 0xEF and i + 2 < n and <unsigned char>s[i + 1] == 0xBF \
                                and (<unsigned char>s[i + 2] == 0xBE or <unsigned char>s[i + 2] == 0xBF):
                            raise Fallback("U+FFFE or U+FFFF: not an XML character")
                    i += 1
                a.value_len = s + i - a.value
                a.flags = flags
                i += 1
                na += 1
            closes = s[i] == b'/'
            if closes:
                i += 1
                if i >= n or s[i] != b'>':
                    raise Fallback("tag")
            i += 1
            if tag == T_ROW:
                if plan is not None:
                    self.row(plan, na)
                else:
                    self.ignored_row(na)
            elif tag == T_TABLE:
                plan = self.table(na)
            elif tag == T_PAIR:
                self.pair(na)
            elif na:
                raise Fallback("attributes")
            if not closes:
                if depth == 8:
                    raise Fallback("depth")
                stack[depth] = tag
                depth += 1
        if depth or not root_done:
            raise Fallback("unbalanced")
        return 0

    cdef int check(self, Attr* a) except -1:
        """A value that is not kept must still be well-formed: valid UTF-8, known references."""
        if a.flags & (F_AMP | F_HIGH):
            self.attr_str(a)
        return 0

    cdef int check_unique(self, Py_ssize_t na) except -1:
        """Fallback if an attribute is given twice (malformed), or a value is malformed."""
        cdef Py_ssize_t i, j
        for i in range(na):
            self.check(&self.attrs[i])
            for j in range(i):
                if self.attrs[i].name_len == self.attrs[j].name_len and \
                        memcmp(self.attrs[i].name, self.attrs[j].name, self.attrs[i].name_len) == 0:
                    raise Fallback("attribute given twice")
        return 0

    cdef int ignored_row(self, Py_ssize_t na) except -1:
        self.check_unique(na)
        for i in range(na):
            if self.attrs[i].name[:self.attrs[i].name_len] == b"ref":
                return 0
        raise Fallback("row without a ref")

    cdef int pair(self, Py_ssize_t na) except -1:
        self.check_unique(na)
        key = value = None
        for i in range(na):
            name = self.attrs[i].name[:self.attrs[i].name_len]
            if name == b"key":
                key = self.attr_str(&self.attrs[i])
            elif name == b"value":
                value = self.attr_str(&self.attrs[i])
        self.manifest[key] = value
        return 0

    cdef _Plan table(self, Py_ssize_t na):
        self.check_unique(na)
        cls = None
        for i in range(na):
            if self.attrs[i].name[:self.attrs[i].name_len] == b"name":
                cls = self.attr_str(&self.attrs[i])
        if cls is None:
            raise Fallback("table without a name")
        if cls in self.ref.dm.CLASSES and cls not in self.ref.NOT_IN_DB:
            return self.plan_of(cls)
        log.info("state.db: ignoring table %s, unknown to this schema", cls)
        return None

    cdef int row(self, _Plan plan, Py_ssize_t na) except -1:
        cdef Py_ssize_t i
        cdef Attr* a
        cdef _Col c
        cdef const char* v
        cdef Py_ssize_t n
        cdef str ref = None
        self.row_no += 1
        for i in range(na):         # the ref first (warnings name it): it is the first attribute
            a = &self.attrs[i]
            if a.name_len == 3 and memcmp(a.name, b"ref", 3) == 0:
                ref = self.attr_str(a)
                break
        if ref is None:
            raise Fallback("row without a ref")
        ctime = mtime = 0
        cdef dict row = _PyDict_NewPresized(plan.nfields)
        for i in range(na):
            a = &self.attrs[i]
            c = plan.col(i, a.name, a.name_len)
            if c.seen == self.row_no:
                raise Fallback("attribute given twice")
            c.seen = self.row_no
            if c.kind == K_SKIP:
                if c.role == 2 or c.role == 3:
                    n = self.text(a, False, &v)
                    if c.role == 2:
                        ctime = _int(v, n)
                    else:
                        mtime = _int(v, n)
                else:
                    self.check(a)
                continue
            if c.kind == K_UNKNOWN:
                self.check(a)
                if (plan.cls, c.field) not in self.warned:
                    self.warned.add((plan.cls, c.field))
                    log.info("state.db: ignoring column %s.%s, unknown to this schema", plan.cls, c.field)
                continue
            n = self.text(a, True, &v)
            self.value(row, plan, ref, c, v, n, a.flags)
        # the fields xapi resets at load, then (rarely) the fields the row left out
        for field, mode, value in plan.resets:
            _default(row, field, mode, value)
        if len(row) < plan.nfields:
            for field, mode, value in plan.defaults:
                if not PyDict_Contains(row, field):
                    _default(row, field, mode, value)
        PyList_Append(self.rows, (plan.cls, ref, ctime, mtime, row))
        return 0

    cdef int value(self, dict row, _Plan plan, str ref, _Col c, const char* s, Py_ssize_t n,
                   int flags) except -1:
        cdef object v
        cdef int kind = c.kind
        if kind == K_STR:
            v = c.last
            if not (flags & F_HIGH) and v is not None and PyUnicode_GET_LENGTH(v) == n \
                    and memcmp(PyUnicode_DATA(v), s, n) == 0:
                row[c.field] = v          # as the previous row's (compact ASCII): shared
                return 0
            v = _decode(s, n)
            if not (flags & F_HIGH):
                c.last = v
            row[c.field] = v
            return 0
        if kind == K_BOOL:
            if n == 4 and memcmp(s, b"true", 4) == 0:
                row[c.field] = True
                return 0
            if n == 5 and memcmp(s, b"false", 5) == 0:
                row[c.field] = False
                return 0
        elif kind == K_INT:
            v = _fast_int(s, n)
            if v is not None:
                row[c.field] = v
                return 0
        elif kind == K_SET:
            v = _plain_set(s, n)
            if v is not None:
                row[c.field] = v
                return 0
        elif kind == K_MAP:
            v = _plain_map(s, n)
            if v is not None:
                row[c.field] = v
                return 0
        # everything else, and what the shortcuts above don't read: the reference's decoder
        text_str = _decode(s, n)
        try:
            row[c.field] = c.dec(text_str)
        except (ValueError, TypeError) as e:
            log.warning("state.db: %s %s.%s: unreadable value %r (%s); using the default",
                        plan.cls, ref, c.field, text_str[:80], e)
        return 0


cdef inline int _default(dict row, object field, int mode, object value) except -1:
    if mode == 0:
        row[field] = value
    elif mode == 1:
        row[field] = []
    elif mode == 2:
        row[field] = {}
    else:
        row[field] = value()
    return 0


cdef str _decode(const char* s, Py_ssize_t n):
    try:
        return PyUnicode_DecodeUTF8(s, n, NULL)
    except UnicodeDecodeError:
        raise Fallback("not UTF-8")


cdef int _tag(const char* s, Py_ssize_t n):
    if n == 3 and memcmp(s, b"row", 3) == 0:
        return T_ROW
    if n == 4 and memcmp(s, b"pair", 4) == 0:
        return T_PAIR
    if n == 5 and memcmp(s, b"table", 5) == 0:
        return T_TABLE
    if n == 8 and memcmp(s, b"manifest", 8) == 0:
        return T_MANIFEST
    if n == 8 and memcmp(s, b"database", 8) == 0:
        return T_DATABASE
    return T_NONE


cdef unsigned int _char_ref(const char* s, Py_ssize_t n):
    """The code point of &#...; (s: after '#'); 0 (not a character) if it isn't one."""
    cdef unsigned int cp = 0
    cdef Py_ssize_t i = 0
    cdef bint hexa = n > 0 and s[0] == b'x'
    if hexa:
        i = 1
    if n - i < 1 or n - i > 8:
        return 0
    while i < n:
        if b'0' <= s[i] <= b'9':
            cp = cp * (16 if hexa else 10) + (s[i] - 48)
        elif hexa and b'a' <= s[i] <= b'f':
            cp = cp * 16 + (s[i] - 87)
        elif hexa and b'A' <= s[i] <= b'F':
            cp = cp * 16 + (s[i] - 55)
        else:
            return 0
        i += 1
    return cp


cdef object _fast_int(const char* s, Py_ssize_t n):
    """A decimal int of up to 18 digits, optional '-'; None for anything else (left to int())."""
    cdef Py_ssize_t i = 0
    cdef long long v = 0
    cdef bint neg = False
    if n > 0 and s[0] == b'-':
        neg = True
        i = 1
    if n - i < 1 or n - i > 18:
        return None
    while i < n:
        if not (b'0' <= s[i] <= b'9'):
            return None
        v = v * 10 + (s[i] - 48)
        i += 1
    return -v if neg else v


cdef object _int(const char* s, Py_ssize_t n):
    """A row's stamp, as the reference's int() reads it (which fails the whole file otherwise)."""
    v = _fast_int(s, n)
    if v is not None:
        return v
    try:
        return int(_decode(s, n))
    except ValueError:
        raise Fallback("stamp")


cdef object _plain_set(const char* s, Py_ssize_t n):
    """('a' 'b' ...) of quoted strings without backslash or double quote; None otherwise."""
    cdef list out = []
    cdef Py_ssize_t i = 1, start
    if n < 2 or s[0] != b'(':
        return None
    while True:
        while i < n and _ws(s[i]):
            i += 1
        if i >= n:
            return None
        if s[i] == b')':
            return out if i == n - 1 else None
        if s[i] != b'\'':
            return None
        i += 1
        start = i
        while i < n and s[i] != b'\'':
            if s[i] == b'\\' or s[i] == b'"':
                return None
            i += 1
        if i >= n:
            return None
        PyList_Append(out, _decode(s + start, i - start))
        i += 1


cdef inline Py_ssize_t _quoted(const char* s, Py_ssize_t n, Py_ssize_t i):
    """End (index of the closing quote) of a plain quoted string opening at s[i]; -1 if none."""
    if i >= n or s[i] != b'\'':
        return -1
    i += 1
    while i < n and s[i] != b'\'':
        if s[i] == b'\\' or s[i] == b'"':
            return -1
        i += 1
    return i if i < n else -1


cdef object _plain_map(const char* s, Py_ssize_t n):
    """(('k' 'v') ...) of plain quoted strings; None otherwise."""
    cdef dict out = {}
    cdef Py_ssize_t i = 1, k0, k1, v0, v1
    if n < 2 or s[0] != b'(':
        return None
    while True:
        while i < n and _ws(s[i]):
            i += 1
        if i >= n:
            return None
        if s[i] == b')':
            return out if i == n - 1 else None
        if s[i] != b'(':
            return None
        i += 1
        while i < n and _ws(s[i]):
            i += 1
        k0 = i
        k1 = _quoted(s, n, k0)
        if k1 < 0:
            return None
        i = k1 + 1
        if i >= n or not _ws(s[i]):
            return None
        while i < n and _ws(s[i]):
            i += 1
        v0 = i
        v1 = _quoted(s, n, v0)
        if v1 < 0:
            return None
        i = v1 + 1
        while i < n and _ws(s[i]):
            i += 1
        if i >= n or s[i] != b')':
            return None
        i += 1
        PyDict_SetItem(out, _decode(s + k0 + 1, k1 - k0 - 1), _decode(s + v0 + 1, v1 - v0 - 1))




def read(str path):
    """As the reference's ``read``: (manifest pairs, [(table, ref, ctime, mtime, row values)] in
    file order).  Raises ``Fallback`` for a file the reference should read instead (anything
    outside what xapi and the reference write, malformed files included: the reference gives
    their error)."""
    from xapi.db import persist
    with open(path, "rb") as f:
        data = f.read()
    cdef _Reader r = _Reader()
    r.ref = persist
    r.plans = {}
    r.manifest = {}
    r.rows = []
    r.warned = set()
    r.parse(data)
    if "generation_count" not in r.manifest:
        raise Fallback("no generation_count")
    return r.manifest, r.rows


# ---------------------------------------------------------------------------------------------
# Writing: the rows of a table as the reference writes them (byte for byte), values encoded in C
# when they are of the usual shapes (ASCII strings, ints, bools, lists and dicts of such strings),
# by the reference's encoder otherwise.

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object)
    int PyOS_snprintf(char* buf, size_t size, const char* fmt, ...)

cdef enum:
    W_REF, W_STR, W_INT, W_BOOL, W_SET, W_MAP, W_OTHER


cdef class _WCol:
    cdef bytes head         # ' column="'
    cdef int kind
    cdef str field
    cdef object enc


cdef class _Out:
    """A growing byte buffer."""
    cdef char* p
    cdef Py_ssize_t n, cap

    def __cinit__(self):
        self.p = NULL
        self.n = self.cap = 0

    def __dealloc__(self):
        PyMem_Free(self.p)

    cdef inline int room(self, Py_ssize_t more) except -1:
        cdef Py_ssize_t cap
        cdef char* q
        if self.n + more > self.cap:
            cap = max(self.cap * 2, self.n + more + 4096)
            q = <char*>PyMem_Realloc(self.p, cap)
            if q == NULL:
                raise MemoryError()
            self.p = q
            self.cap = cap
        return 0

    cdef inline int add(self, const char* s, Py_ssize_t n) except -1:
        self.room(n)
        memcpy(self.p + self.n, s, n)
        self.n += n
        return 0

    cdef int attr_text(self, const char* s, Py_ssize_t n, bint protect) except -1:
        """`s` escaped as lxml escapes an attribute value, after Xml_spaces protection."""
        cdef Py_ssize_t i
        cdef unsigned char ch
        self.room(n * 6)
        cdef char* o = self.p + self.n
        for i in range(n):
            ch = s[i]
            if ch == b'&':
                memcpy(o, b"&amp;", 5)
                o += 5
            elif ch == b'<':
                memcpy(o, b"&lt;", 4)
                o += 4
            elif ch == b'>':
                memcpy(o, b"&gt;", 4)
                o += 4
            elif ch == b'"':
                memcpy(o, b"&quot;", 6)
                o += 6
            elif protect and (ch == b' ' or ch == b'%' or ch == b'\t' or ch == b'\n' or ch == b'\r'):
                o[0] = b'%'
                o[1] = b'.' if ch == b' ' else b'%' if ch == b'%' else b't' if ch == b'\t' else \
                    b'n' if ch == b'\n' else b'r'
                o += 2
            elif ch == b'\n':
                memcpy(o, b"&#10;", 5)
                o += 5
            elif ch == b'\r':
                memcpy(o, b"&#13;", 5)
                o += 5
            elif ch == b'\t':
                memcpy(o, b"&#9;", 4)
                o += 4
            else:
                o[0] = ch
                o += 1
        self.n = o - self.p
        return 0

    cdef int text_of(self, str s, bint protect) except -1:
        cdef bytes b
        if PyUnicode_IS_ASCII(s):
            return self.attr_text(<const char*>PyUnicode_DATA(s), PyUnicode_GET_LENGTH(s), protect)
        b = s.encode("utf-8")
        return self.attr_text(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), protect)


cdef inline bint _plain_ascii(object s):
    """An ASCII str the reference writes as it is (nothing XML can't carry) and quotes as it is
    in an S-expression (no backslash or quote)."""
    cdef const unsigned char* p
    cdef Py_ssize_t i
    if type(s) is not str or not PyUnicode_IS_ASCII(s):
        return False
    p = <const unsigned char*>PyUnicode_DATA(s)
    for i in range(PyUnicode_GET_LENGTH(s)):
        if (p[i] < 0x20 and p[i] != 9 and p[i] != 10 and p[i] != 13) \
                or p[i] == b'\\' or p[i] == b"'" or p[i] == b'"':
            return False
    return True


cdef inline bint _xml_ascii(object s):
    """An ASCII str with nothing XML can't carry (the reference's xml_safe leaves it alone)."""
    cdef const unsigned char* p
    cdef Py_ssize_t i
    if type(s) is not str or not PyUnicode_IS_ASCII(s):
        return False
    p = <const unsigned char*>PyUnicode_DATA(s)
    for i in range(PyUnicode_GET_LENGTH(s)):
        if p[i] < 0x20 and p[i] != 9 and p[i] != 10 and p[i] != 13:
            return False
    return True


cdef dict _wplans = {}


cdef list _wplan(str cls):
    """The reference's write plan of `cls`, with a kind per column."""
    p = _wplans.get(cls)
    if p is not None:
        return <list>p
    from xapi import datamodel as dm
    from xapi.db import persist
    cdef list out = []
    cdef _WCol c
    for column, field, enc in persist._write_plan(cls):
        c = _WCol()
        c.head = f' {column}="'.encode()
        c.field = field
        c.enc = enc
        if field is None:
            c.kind = W_REF
        else:
            t = dm.CLASSES[cls].fields[field].type
            if t.kind in _STRINGY:
                c.kind = W_STR
            elif t.kind == "int":
                c.kind = W_INT
            elif t.kind == "bool":
                c.kind = W_BOOL
            elif t.kind == "set" and t.elem.kind in _STRINGY:
                c.kind = W_SET
            elif t.kind == "map" and t.key.kind in _STRINGY and t.elem.kind in _STRINGY:
                c.kind = W_MAP
            else:
                c.kind = W_OTHER
        out.append(c)
    _wplans[cls] = out
    return out


cdef int _sexpr_set(_Out out, list v) except -1:
    """('a' 'b'), protected and escaped: quotes stay, a space between items is %."""
    cdef Py_ssize_t i
    out.add(b"(", 1)
    for i in range(len(v)):
        if i:
            out.add(b"%.", 2)
        out.add(b"'", 1)
        out.text_of(<str>v[i], True)
        out.add(b"'", 1)
    out.add(b")", 1)
    return 0


cdef int _sexpr_map(_Out out, dict v) except -1:
    cdef bint first = True
    out.add(b"(", 1)
    for k, x in v.items():
        if not first:
            out.add(b"%.", 2)
        first = False
        out.add(b"('", 2)
        out.text_of(<str>k, True)
        out.add(b"'%.'", 4)
        out.text_of(<str>x, True)
        out.add(b"')", 2)
    out.add(b")", 1)
    return 0


cdef bint _plain_list(list v):
    for x in v:
        if not _plain_ascii(x):
            return False
    return True


cdef bint _plain_dict(dict v):
    for k, x in v.items():
        if not _plain_ascii(k) or not _plain_ascii(x):
            return False
    return True


def encode_rows(str cls, list rows):
    """The ``<row .../>`` lines of `rows` ((ref, created, modified, record), ...) of table `cls`,
    each followed by a newline, as the reference's ``write_snapshot`` writes them."""
    from xapi.db import persist
    cdef list plan = _wplan(cls)
    cdef _Out out = _Out()
    cdef _WCol c
    cdef char[32] num
    cdef int k
    cdef dict rec
    for ref, created, modified, rec in rows:
        out.add(b'<row ref="', 10)
        out.text_of(ref, False)
        out.add(b'" __ctime="', 11)
        out.text_of(str(created), False)
        out.add(b'" __mtime="', 11)
        out.text_of(str(modified), False)
        out.add(b'"', 1)
        for c in plan:
            out.add(PyBytes_AS_STRING(c.head), PyBytes_GET_SIZE(c.head))
            if c.kind == W_REF:
                out.text_of(ref, False)
                out.add(b'"', 1)
                continue
            value = rec.get(c.field)
            if c.kind == W_STR and _xml_ascii(value):
                out.text_of(<str>value, True)
            elif c.kind == W_INT and type(value) is int and -(1 << 62) < value < (1 << 62):
                k = PyOS_snprintf(num, 32, "%lld", <long long>value)
                out.add(num, k)
            elif c.kind == W_BOOL and type(value) is bool:
                if value:
                    out.add(b"true", 4)
                else:
                    out.add(b"false", 5)
            elif c.kind == W_SET and type(value) is list and _plain_list(<list>value):
                _sexpr_set(out, <list>value)
            elif c.kind == W_MAP and type(value) is dict and _plain_dict(<dict>value):
                _sexpr_map(out, <dict>value)
            else:
                out.text_of(persist._attr_value(cls, ref, c.field, c.enc, value), False)
            out.add(b'"', 1)
        out.add(b"/>\n", 3)
    return out.p[:out.n]


# ---------------------------------------------------------------------------------------------
# Loading: rows into the database in order of (modified, created, place in the file)

from libc.stdlib cimport qsort

cdef struct Stamp:
    long long modified
    long long created
    Py_ssize_t i


cdef int _by_stamp(const void* a, const void* b) noexcept nogil:
    cdef const Stamp* x = <const Stamp*>a
    cdef const Stamp* y = <const Stamp*>b
    if x.modified != y.modified:
        return -1 if x.modified < y.modified else 1
    if x.created != y.created:
        return -1 if x.created < y.created else 1
    return -1 if x.i < y.i else (1 if x.i > y.i else 0)


def restore_rows(db, list rows):
    """As the reference's ``restore_rows_reference``, sorting in C; False (nothing done) if a
    stamp does not fit in 63 bits, left to the reference."""
    cdef Py_ssize_t n = len(rows), i
    cdef Stamp* st = <Stamp*>PyMem_Malloc(max(n, 1) * sizeof(Stamp))
    cdef long long c, m
    cdef tuple r
    if st == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            r = <tuple>rows[i]
            try:
                c = r[2]
                m = r[3]
            except OverflowError:
                return False
            if c < 1:
                c = 1               # a row without stamps counts as the oldest
            if m < c:
                m = c
            st[i].modified = m
            st[i].created = c
            st[i].i = i
        qsort(st, n, sizeof(Stamp), _by_stamp)
        tables = {}
        for i in range(n):
            r = <tuple>rows[st[i].i]
            name = r[0]
            t = tables.get(name)
            if t is None:
                t = tables[name] = db.table(name)
            ref = r[1]
            if ref in t:
                log.warning("state.db: duplicate row %s in table %s ignored", ref, name)
                continue
            t.restore(ref, r[4], st[i].created, st[i].modified)
        return True
    finally:
        PyMem_Free(st)
