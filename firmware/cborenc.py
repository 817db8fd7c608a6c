"""The CBOR encoder helpers a signing board needs (RFC 8949, deterministic).

`put_head` / `put_float` append one head / float to a bytearray: cose writes
its fixed-layout payload and Sig_structure with them. A board keeps only
this module resident; the full strict codec (cbor.py: dumps, loads, Tag)
imports these same functions for hosts, tests and cose_check, so nothing is
written twice.

Pure logic: imports only `struct`.
"""

import struct

from .compat import const

_U64 = const(0xFFFFFFFFFFFFFFFF)


class CBORError(ValueError):
    """Input is not CBOR this decoder accepts, or a value cannot be encoded."""


def put_head(buf, major, n):
    """Append the shortest head of major type `major` with argument `n`."""
    mt = major << 5
    if n < 24:
        buf.append(mt | n)
    elif n < 0x100:
        buf.append(mt | 24)
        buf.append(n)
    elif n < 0x10000:
        buf.append(mt | 25)
        buf.extend(struct.pack(">H", n))
    elif n < 0x100000000:
        buf.append(mt | 26)
        buf.extend(struct.pack(">I", n))
    elif n <= _U64:
        buf.append(mt | 27)
        buf.extend(n.to_bytes(8, "big"))
    else:
        raise CBORError("integer out of 64-bit range")


def half_bits(x):
    """The IEEE 754 half-precision bits of float `x`, or None if `x` does not
    fit a half exactly. Done by hand: MicroPython's struct has no 'e'."""
    try:
        b = struct.unpack(">I", struct.pack(">f", x))[0]
    except OverflowError:  # CPython: beyond float32 range
        return None
    if struct.unpack(">f", struct.pack(">I", b))[0] != x:
        return None  # not even a float32
    sign = (b >> 16) & 0x8000
    exp = (b >> 23) & 0xFF
    mant = b & 0x7FFFFF
    if exp == 0xFF:
        return None if mant else sign | 0x7C00  # NaN never; infinity
    if exp == 0:
        return None if mant else sign  # float32 subnormals never fit
    e = exp - 127
    if -14 <= e <= 15:
        if mant & 0x1FFF:
            return None
        return sign | ((e + 15) << 10) | (mant >> 13)
    if -24 <= e < -14:
        full = mant | 0x800000
        shift = -(e + 1)
        if full & ((1 << shift) - 1):
            return None
        return sign | (full >> shift)
    return None


def put_float(buf, x):
    """Append float `x` in the shortest width that keeps it exactly."""
    if x != x:
        buf.extend(b"\xf9\x7e\x00")  # the one canonical NaN, as cbor2 writes it
        return
    h = half_bits(x)
    if h is not None:
        buf.append(0xF9)
        buf.extend(struct.pack(">H", h))
        return
    try:
        single = struct.pack(">f", x)
        fits = struct.unpack(">f", single)[0] == x
    except OverflowError:
        fits = False
    if fits:
        buf.append(0xFA)
        buf.extend(single)
    else:
        buf.append(0xFB)
        buf.extend(struct.pack(">d", x))
