"""COSE_Sign1 envelopes (RFC 9052) carrying Terrapin readings, wire protocol v1:
the signing side, which is all a board needs.

envelope = Tag(18, [protected, {4: kid}, payload, signature])
  protected = bstr of {1: -47}                (alg ES256K, RFC 8812)
  kid       = the board's 20-byte address      (last 20 bytes of keccak256(X||Y))
  payload   = deterministic CBOR {1: seq, 2: time, 3: [{0: name, 1: unit, 2: value}, ...]}
  signature = r||s (64 bytes, low-S, RFC 6979) over
              digest = SHA-256(["Signature1", protected, h'', payload])

The receiving rules (parse_sign1, decode_payload, check_envelope, verify1)
are in cose_check: hosts, tests and self-tests import it; a board signing
readings does not, which keeps its heap small. The payload and the envelope
are written directly (their layout is fixed) with cborenc's put_head /
put_float, not through cbor.dumps (a board never loads the full codec); keccak
is imported only by address(), which a board calls once at boot.
Pure logic: no I/O.
"""

import gc
import hashlib
import struct

from .compat import IS_MICROPYTHON, const

# secp256k1 first: it allocates its 4 KB table buffer while the heap is clean.
from . import secp256k1  # isort: skip

# A collection after each import lets the next module's objects fill the holes
# the .mpy loader left behind: measured 0.9 KB less peak heap for a sign.
if IS_MICROPYTHON:
    gc.collect()
from .cborenc import put_float, put_head  # noqa: E402

if IS_MICROPYTHON:
    gc.collect()

_ALG_ES256K = const(-47)
MAX_ENVELOPE = const(1024)
MAX_RECORDS = const(16)
_MAX_NAME = const(32)  # bytes of UTF-8
_MAX_UNIT = const(16)  # bytes of UTF-8
_MAX_UINT = const(0x7FFFFFFFFFFFFFFF)  # seq and time: the gateway stores SQLite INTEGERs

PROTECTED = b"\xa1\x01\x38\x2e"  # cbor.dumps({1: -47})
_SIG1_HEAD = b"\x84\x6aSignature1\x44\xa1\x01\x38\x2e\x40"  # ["Signature1", PROTECTED, h'', ...
_ENV_HEAD = b"\xd2\x84\x44\xa1\x01\x38\x2e\xa1\x04\x54"  # 18([PROTECTED, {4: kid(20)}, ...
_SIG_HEAD = b"\x58\x40"  # bstr(64)


class COSEError(ValueError):
    """An envelope or payload breaks wire protocol v1; `reason` is its code
    (see cose_check)."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


def address(pub):
    """The 20-byte board address: last 20 bytes of keccak256(X || Y)."""
    if len(pub) != 65 or pub[0] != 4:
        raise ValueError("public key must be 65 bytes 0x04||X||Y")
    from . import keccak  # only here: a board computes its address once, at boot

    return keccak.keccak256(pub[1:])[12:]


def float32(value):
    """`value` rounded to the nearest float32 (the ESP32 MicroPython float)."""
    try:
        out = struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:  # CPython refuses values beyond float32 range
        raise ValueError("value out of float32 range")
    if out != out or out in (float("inf"), float("-inf")):
        raise ValueError("value must be a finite float32")
    return out


def _text(buf, text, limit):
    # CBOR text of 1..limit bytes of UTF-8.
    if type(text) is not str:
        raise ValueError("name and unit must be text")
    data = text.encode("utf-8")
    if not 1 <= len(data) <= limit:
        raise ValueError("name must be 1..32, unit 1..16 bytes of UTF-8 text")
    put_head(buf, 3, len(data))
    buf.extend(data)


def encode_payload(seq, time, records):
    """Deterministic CBOR payload {1: seq, 2: time, 3: [{0: name, 1: unit,
    2: value}, ...]}. `records`: 1..16 (name, unit, value) tuples; values are
    rounded to float32 then encoded shortest-first (cbor's float rule)."""
    if type(seq) is not int or not 0 <= seq <= _MAX_UINT:
        raise ValueError("seq must be in 0..2^63-1")
    if type(time) is not int or not 0 <= time <= _MAX_UINT:
        raise ValueError("time must be in 0..2^63-1")
    count = len(records)
    if not 1 <= count <= MAX_RECORDS:
        raise ValueError("need 1..16 records")
    buf = bytearray(b"\xa3\x01")
    put_head(buf, 0, seq)
    buf.append(0x02)
    put_head(buf, 0, time)
    buf.append(0x03)
    buf.append(0x80 | count)  # count <= 16 < 24
    for name, unit, value in records:
        buf.append(0xA3)
        buf.append(0x00)
        _text(buf, name, _MAX_NAME)
        buf.append(0x01)
        _text(buf, unit, _MAX_UNIT)
        buf.append(0x02)
        put_float(buf, float32(float(value)))
    return bytes(buf)


def _bstr_head(n):
    head = bytearray()
    put_head(head, 2, n)
    return head


def sig_structure(payload):
    """CBOR of ["Signature1", PROTECTED, h'', payload]."""
    if type(payload) is not bytes:
        payload = bytes(payload)
    return b"".join((_SIG1_HEAD, _bstr_head(len(payload)), payload))


def digest(payload):
    """The signed digest: SHA-256 of the Sig_structure (also the on-chain leaf
    field), hashed in pieces: no copy of the payload."""
    h = hashlib.sha256(_SIG1_HEAD)
    h.update(_bstr_head(len(payload)))
    h.update(payload)
    return h.digest()


def sign1(priv, kid, payload):
    """The COSE_Sign1 envelope bytes for `payload`, signed with `priv`."""
    if len(kid) != 20:
        raise ValueError("kid must be the 20-byte address")
    if type(payload) is not bytes:
        payload = bytes(payload)
    head = _bstr_head(len(payload))
    if 30 + len(head) + len(payload) + 66 > MAX_ENVELOPE:  # 30: _ENV_HEAD + kid
        raise ValueError("envelope over 1024 bytes")
    sig = secp256k1.sign_digest(priv, digest(payload))
    return b"".join((_ENV_HEAD, bytes(kid), head, payload, _SIG_HEAD, sig))
