"""Strict deterministic CBOR (RFC 8949) for Terrapin's wire format.

Encoder: int (up to 64-bit), bytes, str, list/tuple, dict, float, bool, None
and `Tag`. Output is deterministic and equals `cbor2.dumps(obj, canonical=True)`:
shortest heads, definite lengths, map keys sorted length-first then bytewise
(RFC 8949 section 4.2.3, which is cbor2's canonical order; for the small
integer keys the protocol uses it coincides with section 4.2.1), floats in the
shortest of half/single/double that keeps the value exactly.

Decoder: accepts only that deterministic form. It raises `CBORError` for
anything that is not well-formed or too deep/large, and `NonCanonicalError`
(a `CBORError`) for well-formed input that is not deterministic: non-minimal
integer or length heads, indefinite lengths, floats wider than needed, map
keys out of order or duplicated. NaN is written and accepted only as
f97e00 (cbor2's canonical NaN); the wire protocol forbids NaN and infinity in
readings one level up, in cose.

`put_head` / `put_float` / `half_bits` and `CBORError` live in cborenc.py
(re-exported here): cose writes its fixed-layout payload and envelope with
them, and a board keeps only that small module resident, not this codec.

Pure logic: imports only `struct`.
"""

import struct

from .cborenc import CBORError, half_bits, put_float, put_head  # noqa: F401 (re-exported)
from .compat import const

MAX_SIZE = const(1024)
MAX_DEPTH = const(4)


class NonCanonicalError(CBORError):
    """Well-formed CBOR that is not in deterministic (canonical) form."""


class Tag:
    """A CBOR tag (major type 6) around one value."""

    __slots__ = ("tag", "value")

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __repr__(self):
        return "Tag(%d, %r)" % (self.tag, self.value)


# -- encoder -----------------------------------------------------------------


def _key_order(item):
    return (len(item[0]), item[0])


def _encode(buf, obj):
    if obj is None:
        buf.append(0xF6)
    elif obj is True:
        buf.append(0xF5)
    elif obj is False:
        buf.append(0xF4)
    elif isinstance(obj, int):
        if obj >= 0:
            put_head(buf, 0, obj)
        else:
            put_head(buf, 1, -1 - obj)
    elif isinstance(obj, float):
        put_float(buf, obj)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        put_head(buf, 2, len(obj))
        buf.extend(obj)
    elif isinstance(obj, str):
        data = obj.encode("utf-8")
        put_head(buf, 3, len(data))
        buf.extend(data)
    elif isinstance(obj, (list, tuple)):
        put_head(buf, 4, len(obj))
        for item in obj:
            _encode(buf, item)
    elif isinstance(obj, dict):
        items = [(dumps(k), v) for k, v in obj.items()]
        items.sort(key=_key_order)
        put_head(buf, 5, len(items))
        prev = None
        for key, value in items:
            if key == prev:
                raise CBORError("duplicate map key")
            prev = key
            buf.extend(key)
            _encode(buf, value)
    elif isinstance(obj, Tag):
        put_head(buf, 6, obj.tag)
        _encode(buf, obj.value)
    else:
        raise CBORError("cannot encode type %s" % type(obj).__name__)


def dumps(obj):
    """Deterministic CBOR bytes of `obj`."""
    buf = bytearray()
    _encode(buf, obj)
    return bytes(buf)


# -- decoder -----------------------------------------------------------------


# The decoder state is a list [data, pos, max_depth]: plain functions over it
# cost the board ~0.9 KB less RAM than a decoder class with methods.


def _take(st, n):
    start = st[1]
    end = start + n
    if end > len(st[0]):
        raise CBORError("truncated")
    st[1] = end
    return st[0][start:end]


def _arg(st, ai):
    if ai < 24:
        return ai
    if ai == 24:
        n = _take(st, 1)[0]
        low = 24
    elif ai == 25:
        n = struct.unpack(">H", _take(st, 2))[0]
        low = 0x100
    elif ai == 26:
        n = struct.unpack(">I", _take(st, 4))[0]
        low = 0x10000
    elif ai == 27:
        n = int.from_bytes(_take(st, 8), "big")
        low = 0x100000000
    elif ai == 31:
        raise NonCanonicalError("indefinite length")
    else:
        raise CBORError("reserved additional information")
    if n < low:
        raise NonCanonicalError("non-minimal integer or length")
    return n


def _simple(st, ai):
    if ai == 20:
        return False
    if ai == 21:
        return True
    if ai == 22:
        return None
    if ai == 25:
        bits = struct.unpack(">H", _take(st, 2))[0]
        exp = (bits >> 10) & 0x1F
        mant = bits & 0x3FF
        if exp == 0x1F:
            if mant:
                if bits != 0x7E00:
                    raise NonCanonicalError("NaN other than f97e00")
                return float("nan")
            value = float("inf")
        elif exp == 0:
            value = mant * 2.0**-24
        else:
            value = (mant | 0x400) * 2.0 ** (exp - 25)
        return -value if bits & 0x8000 else value
    if ai == 26:
        value = struct.unpack(">f", _take(st, 4))[0]
        if value != value:
            raise NonCanonicalError("NaN other than f97e00")
        if half_bits(value) is not None:
            raise NonCanonicalError("float fits a shorter width")
        return value
    if ai == 27:
        raw = _take(st, 8)
        value = struct.unpack(">d", raw)[0]
        if value != value:
            raise NonCanonicalError("NaN other than f97e00")
        if struct.pack(">d", value) != raw:
            raise CBORError("double not representable on this float build")
        try:
            fits = struct.unpack(">f", struct.pack(">f", value))[0] == value
        except OverflowError:
            fits = False
        if fits:
            raise NonCanonicalError("float fits a shorter width")
        return value
    if ai == 31:
        raise NonCanonicalError("unexpected break")
    raise CBORError("unsupported simple value")


def _item(st, depth):
    ib = _take(st, 1)[0]
    major = ib >> 5
    ai = ib & 0x1F
    if major == 7:
        return _simple(st, ai)
    n = _arg(st, ai)
    if major == 0:
        return n
    if major == 1:
        return -1 - n
    if major == 2:
        return bytes(_take(st, n))
    if major == 3:
        try:
            return str(_take(st, n), "utf-8")
        except Exception:  # UnicodeError on CPython and MicroPython
            raise CBORError("invalid UTF-8 text")
    if depth >= st[2]:
        raise CBORError("nesting too deep")
    if major == 6:
        return Tag(n, _item(st, depth + 1))
    if n > len(st[0]) - st[1]:
        raise CBORError("truncated")
    if major == 4:
        return [_item(st, depth + 1) for _ in range(n)]
    # major 5: map, keys strictly increasing in length-first order
    result = {}
    prev = None
    for _ in range(n):
        start = st[1]
        key = _item(st, depth + 1)
        raw = st[0][start : st[1]]
        if prev is not None and (len(raw), raw) <= (len(prev), prev):
            raise NonCanonicalError("map keys out of order or duplicated")
        prev = raw
        if isinstance(key, (list, dict, Tag)):
            raise CBORError("unsupported map key type")
        result[key] = _item(st, depth + 1)
    return result


def loads(data, max_depth=MAX_DEPTH, max_size=MAX_SIZE):
    """Decode one deterministic CBOR item that fills `data` exactly.

    Containers (arrays, maps, tags) may nest `max_depth` deep; `data` may be
    at most `max_size` bytes. Raises `CBORError` / `NonCanonicalError`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CBORError("expected bytes")
    if len(data) > max_size:
        raise CBORError("oversize")
    if not len(data):
        raise CBORError("empty input")
    st = [bytes(data), 0, max_depth]
    obj = _item(st, 0)
    if st[1] != len(data):
        raise CBORError("trailing bytes")
    return obj
