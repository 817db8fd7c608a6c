"""Strict host-side decoding of a reading envelope (COSE_Sign1, tag 18).

Input is untrusted bytes from the broker. Everything that is not exactly the
v1 shape raises `EnvelopeError` carrying a `Reason`; no other exception type
escapes `decode_envelope` or `decode_payload` (the fuzz tests check this).

    18([h'A10138 2E', {4: kid}, payload, signature])

Checks, in order (the same order and reasons as firmware/cose.py): size
(before decoding), strict CBOR with caps (depth 4, tags kept raw, no NaN),
canonical re-encoding of the whole envelope, tag and shape, field types,
unknown headers, protected header, kid. The server then checks topic/kid,
the allow-list and the signature (signature.py: length, high S, verify), and
only then the payload (`decode_payload`): strict CBOR, deterministic
encoding, schema.

`build_envelope` signs readings the same way the firmware does (coincurve:
libsecp256k1, RFC 6979 nonces, low-S); simulators, benches and tests use it.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import cbor2
from cbor2 import CBORTag

from terrapin.gateway.protocol.errors import EnvelopeError
from terrapin.gateway.protocol.reasons import Reason

MAX_ENVELOPE = 1024
MAX_RECORDS = 16
MAX_DEPTH = 4  # nested containers, tags included (as firmware/cbor.py)
MAX_NAME = 32  # bytes of UTF-8
MAX_UNIT = 16
MAX_UINT = (1 << 63) - 1  # SQLite INTEGER
COSE_SIGN1_TAG = 18
ALG_ES256K = -47
HEADER_KID = 4
PROTECTED = cbor2.dumps({1: ALG_ES256K})  # h'A101382E'

# Every tag cbor2 would interpret is kept as a raw CBORTag instead: no
# datetime/regex/bignum/shared-reference decoding of hostile input.
_RAW_TAGS = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 100, 256, 258, 260, 261, 1004, 55799)


def _raw_tag(tag: int):
    def keep(value, immutable=False):
        return CBORTag(tag, value)

    return keep


_SEMANTIC = {t: _raw_tag(t) for t in _RAW_TAGS}
_SIG_PREFIX = b"\x84\x6aSignature1" + b"\x44" + PROTECTED + b"\x40"


@dataclass(frozen=True, slots=True)
class Envelope:
    raw: bytes
    kid: bytes
    payload: bytes
    signature: bytes

    @property
    def digest(self) -> bytes:
        return digest(self.payload)


@dataclass(frozen=True, slots=True)
class Reading:
    seq: int
    time: int
    records: tuple[tuple[str, str, float], ...]


def _bstr_head(n: int) -> bytes:
    if n < 24:
        return bytes((0x40 | n,))
    if n < 0x100:
        return bytes((0x58, n))
    if n < 0x10000:
        return b"\x59" + n.to_bytes(2, "big")
    return b"\x5a" + n.to_bytes(4, "big")


def sig_structure(payload: bytes) -> bytes:
    """cbor(["Signature1", protected, h'', payload]), built without a CBOR encoder."""
    return _SIG_PREFIX + _bstr_head(len(payload)) + payload


def digest(payload: bytes) -> bytes:
    """The signed digest: SHA-256 of the Sig_structure (what goes on chain)."""
    return hashlib.sha256(sig_structure(payload)).digest()


_LEAF = (int, bytes, str, bool, float, type(None))


def _check_items(obj) -> None:
    """What strict CBOR (firmware/cbor.py) refuses but cbor2 decodes: simple
    values other than false/true/null, containers as map keys. (NaN is
    well-formed; as a record value it is BAD_PAYLOAD.)"""
    if isinstance(obj, _LEAF):
        return
    if isinstance(obj, list | tuple):
        for x in obj:
            _check_items(x)
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            if isinstance(k, list | tuple | Mapping | CBORTag):
                raise ValueError("unsupported map key type")
            _check_items(k)
            _check_items(v)
    elif isinstance(obj, CBORTag):
        _check_items(obj.value)
    else:
        raise ValueError(f"unsupported CBOR value {type(obj).__name__}")


def _loads(data: bytes, what: str, non_canonical: Reason, check=None):
    """Decode strictly. Not well-formed -> MALFORMED_CBOR; well-formed but not
    deterministic (indefinite lengths, long heads, key order, duplicate keys,
    wide floats) -> `non_canonical`; trailing bytes -> MALFORMED_CBOR.

    `check(obj)` (the schema) returns (result, canonical bytes of it); when
    those equal `data` the input is valid and the slow checks are skipped.
    """
    try:
        obj = cbor2.loads(data, max_depth=MAX_DEPTH, semantic_decoders=_SEMANTIC)
    except Exception as exc:  # cbor2 raises several types on hostile input
        raise EnvelopeError(Reason.MALFORMED_CBOR, f"{what}: {exc}") from None
    schema_error = result = None
    if check is not None:
        try:
            result, encoded = check(obj)
            if encoded == data:
                return result
        except EnvelopeError as exc:
            schema_error = exc
    _walk(obj, what)
    try:
        canonical = cbor2.dumps(obj, canonical=True)
    except Exception as exc:
        raise EnvelopeError(Reason.MALFORMED_CBOR, f"{what}: {exc}") from None
    if canonical != data:
        if data.startswith(canonical):
            raise EnvelopeError(Reason.MALFORMED_CBOR, f"{what}: trailing bytes")
        raise EnvelopeError(non_canonical, f"{what} is not deterministic CBOR")
    if schema_error is not None:
        raise schema_error
    return obj if check is None else result


def _walk(obj, what: str) -> None:
    try:
        _check_items(obj)
    except (ValueError, RecursionError) as exc:
        raise EnvelopeError(Reason.MALFORMED_CBOR, f"{what}: {exc}") from None


_MAPS = (dict, cbor2.frozendict)


def _exact_keys(obj, keys: frozenset) -> bool:
    # Exactly these integer keys (True would compare equal to 1: refused).
    return (
        type(obj) in _MAPS
        and len(obj) == len(keys)
        and all(type(k) is int and k in keys for k in obj)
    )


_PAYLOAD_KEYS = frozenset((1, 2, 3))
_RECORD_KEYS = frozenset((0, 1, 2))
# The canonical head of every v1 envelope: tag 18, array(4), bstr(4) {1: -47},
# map(1) {4: bstr(20) ...
_FAST_HEAD = b"\xd2\x84\x44" + PROTECTED + b"\xa1\x04\x54"


def _fast_envelope(raw: bytes) -> Envelope | None:
    """The exact canonical layout, sliced without a decoder (None: take the slow path).

    Anything accepted here is accepted by the full decoder with the same result.
    """
    if not raw.startswith(_FAST_HEAD) or len(raw) < 98:
        return None
    head = raw[30]
    if 0x40 <= head <= 0x57:
        size, pos = head - 0x40, 31
    elif head == 0x58:
        size, pos = raw[31], 32
        if size < 24:
            return None
    elif head == 0x59:
        size, pos = (raw[31] << 8) | raw[32], 33
        if size < 256:
            return None
    else:
        return None
    end = pos + size
    if len(raw) != end + 66 or raw[end] != 0x58 or raw[end + 1] != 0x40:
        return None
    return Envelope(raw, raw[10:30], raw[pos:end], raw[end + 2 :])


def decode_envelope(raw: bytes) -> Envelope:
    """Check the outer COSE_Sign1 structure (same order as firmware/cose.py
    parse_sign1); the signature is neither checked nor verified here."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise EnvelopeError(Reason.MALFORMED_CBOR, "envelope is not bytes")
    raw = bytes(raw)
    if len(raw) > MAX_ENVELOPE:
        raise EnvelopeError(Reason.OVERSIZE, f"{len(raw)} bytes > {MAX_ENVELOPE}")
    fast = _fast_envelope(raw)
    if fast is not None:
        return fast
    obj = _loads(raw, "envelope", Reason.MALFORMED_CBOR)
    if not isinstance(obj, CBORTag) or obj.tag != COSE_SIGN1_TAG:
        raise EnvelopeError(Reason.BAD_ENVELOPE, "not CBOR tag 18 (COSE_Sign1)")
    body = obj.value
    if not isinstance(body, list | tuple) or len(body) != 4:  # cbor2 gives a tuple
        raise EnvelopeError(Reason.BAD_ENVELOPE, "COSE_Sign1 is not an array of 4")
    protected, unprotected, payload, signature = body
    if not (
        isinstance(protected, bytes)
        and isinstance(unprotected, Mapping)
        and isinstance(payload, bytes)
        and isinstance(signature, bytes)
    ):
        raise EnvelopeError(Reason.BAD_ENVELOPE, "wrong field types")
    if any(type(k) is not int or k != HEADER_KID for k in unprotected):
        raise EnvelopeError(Reason.BAD_ENVELOPE, "unknown unprotected header")
    if protected != PROTECTED:
        raise EnvelopeError(Reason.UNSUPPORTED_ALG, f"protected header {protected.hex()}")
    kid = unprotected.get(HEADER_KID)
    if not isinstance(kid, bytes) or len(kid) != 20:
        raise EnvelopeError(Reason.BAD_KID, "kid missing or not 20 bytes")
    return Envelope(raw, kid, payload, signature)


def peek_seq(payload: bytes) -> int | None:
    """The sequence number of a payload that failed a later check, if it has one."""
    try:
        obj = cbor2.loads(payload, max_depth=MAX_DEPTH, semantic_decoders=_SEMANTIC)
        seq = obj.get(1) if isinstance(obj, Mapping) else None
    except Exception:
        return None
    return seq if type(seq) is int and 0 <= seq <= MAX_UINT else None


def decode_payload(payload: bytes) -> Reading:
    """Strict CBOR, deterministic encoding, then the schema
    {1: seq, 2: time, 3: [{0: name, 1: unit, 2: value}, ...]}."""
    return _loads(payload, "payload", Reason.NON_CANONICAL, _reading)


def _head(major: int, n: int) -> bytes:
    m = major << 5
    if n < 24:
        return bytes((m | n,))
    if n < 0x100:
        return bytes((m | 24, n))
    if n < 0x10000:
        return bytes((m | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((m | 26,)) + n.to_bytes(4, "big")
    return bytes((m | 27,)) + n.to_bytes(8, "big")


_F16 = struct.Struct(">e")
_F32 = struct.Struct(">f")


def _float_bytes(value: float) -> bytes | None:
    """Shortest CBOR float that keeps a float32 value exactly (None if not float32)."""
    try:
        if _F16.unpack(_F16.pack(value))[0] == value:
            return b"\xf9" + _F16.pack(value)
    except (OverflowError, struct.error):
        pass
    try:
        packed = _F32.pack(value)
    except (OverflowError, struct.error):
        return None
    return b"\xfa" + packed if _F32.unpack(packed)[0] == value else None


def _reading(obj) -> tuple[Reading, bytes]:
    """Schema check; also returns the canonical encoding of what it accepted."""
    if not _exact_keys(obj, _PAYLOAD_KEYS):
        raise EnvelopeError(Reason.BAD_PAYLOAD, "payload keys are not exactly {1, 2, 3}")
    seq, time, records = obj[1], obj[2], obj[3]
    if type(seq) is not int or not 0 <= seq <= MAX_UINT:
        raise EnvelopeError(Reason.BAD_PAYLOAD, "sequence number is not an unsigned integer < 2^63")
    if type(time) is not int or not 0 <= time <= MAX_UINT:
        raise EnvelopeError(Reason.BAD_PAYLOAD, "time is not an unsigned integer < 2^63")
    if type(records) not in (list, tuple) or not 1 <= len(records) <= MAX_RECORDS:
        raise EnvelopeError(Reason.BAD_PAYLOAD, f"records: need a list of 1..{MAX_RECORDS}")
    enc = [b"\xa3\x01", _head(0, seq), b"\x02", _head(0, time), b"\x03", _head(4, len(records))]
    out = []
    for rec in records:
        if not _exact_keys(rec, _RECORD_KEYS):
            raise EnvelopeError(Reason.BAD_PAYLOAD, "record keys are not exactly {0, 1, 2}")
        name, unit, value = rec[0], rec[1], rec[2]
        if type(name) is not str or type(unit) is not str:
            raise EnvelopeError(Reason.BAD_PAYLOAD, "record name and unit must be text")
        bname = name.encode("utf-8", "surrogatepass")
        bunit = unit.encode("utf-8", "surrogatepass")
        if not 1 <= len(bname) <= MAX_NAME:
            raise EnvelopeError(Reason.BAD_PAYLOAD, f"record name is not 1..{MAX_NAME} bytes")
        if not 1 <= len(bunit) <= MAX_UNIT:
            raise EnvelopeError(Reason.BAD_PAYLOAD, f"record unit is not 1..{MAX_UNIT} bytes")
        fbytes = _float_bytes(value) if type(value) is float and _finite(value) else None
        if fbytes is None:
            raise EnvelopeError(Reason.BAD_PAYLOAD, "record value is not a finite float32")
        enc += (b"\xa3\x00", _head(3, len(bname)), bname, b"\x01", _head(3, len(bunit)), bunit)
        enc += (b"\x02", fbytes)
        out.append((name, unit, value))
    return Reading(seq, time, tuple(out)), b"".join(enc)


_finite = math.isfinite


# --- building envelopes (simulators, benches, tests) -------------------------------


def float32(value: float) -> float:
    """Round to the nearest float32, as the ESP32's MicroPython float does."""
    try:
        return struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:  # beyond the float32 range
        return math.copysign(math.inf, value)


def encode_payload(seq: int, time: int, records) -> bytes:
    recs = [{0: n, 1: u, 2: float32(float(v))} for n, u, v in records]
    return cbor2.dumps({1: seq, 2: time, 3: recs}, canonical=True)


def assemble(kid: bytes, payload: bytes, signature: bytes, protected: bytes = PROTECTED) -> bytes:
    return cbor2.dumps(
        CBORTag(COSE_SIGN1_TAG, [protected, {HEADER_KID: kid}, payload, signature]), canonical=True
    )


def build_envelope(privkey, seq: int, time: int, records) -> bytes:
    """Sign one reading; `privkey` is 32 bytes or a coincurve.PrivateKey."""
    from terrapin.gateway.protocol.signature import address, private_key, sign_digest

    key = private_key(privkey)
    payload = encode_payload(seq, time, records)
    kid = address(key.public_key.format(compressed=False))
    return assemble(kid, payload, sign_digest(key, digest(payload)))
