"""Strict host-side decoding of a reading envelope (COSE_Sign1, tag 18).

Input is untrusted bytes from the broker. Everything that is not exactly the
v1 shape raises `EnvelopeError` carrying a `Reason`; no other exception type
escapes `decode_envelope` or `decode_payload` (the fuzz tests check this).

    18([h'A10138 2E', {4: kid}, payload, signature])

Checks, in order (the same order and reasons as firmware/cose.py): size
(before decoding), strict CBOR with caps (depth 4, tags kept raw, no NaN),
canonical re-encoding of the whole envelope, tag and shape, field types,
unknown headers, protected header, kid. The server then checks topic/kid,
the allow-list and the signature (verify.py: length, high S, verify), and
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

from .reasons import Reason

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


class EnvelopeError(ValueError):
    """A reading that is rejected; `reason` goes into the ACK and the counters."""

    def __init__(self, reason: Reason, detail: str = "", *, kid: bytes | None = None):
        super().__init__(f"{reason.name}: {detail}" if detail else reason.name)
        self.reason = reason
        self.detail = detail
        self.kid = kid
        self.seq: int | None = None


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


_LEAF = (int, bytes, str, bool, type(None))


def _check_items(obj) -> None:
    """What strict CBOR (firmware/cbor.py) refuses but cbor2 decodes: NaN,
    simple values other than false/true/null, containers as map keys."""
    if isinstance(obj, _LEAF):
        return
    if isinstance(obj, float):
        if obj != obj:
            raise ValueError("NaN is not allowed")
    elif isinstance(obj, list | tuple):
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


def _loads(data: bytes, what: str, non_canonical: Reason):
    """Decode strictly. Not well-formed -> MALFORMED_CBOR; well-formed but not
    deterministic (indefinite lengths, long heads, key order, duplicate keys,
    wide floats) -> `non_canonical`; trailing bytes -> MALFORMED_CBOR."""
    try:
        obj = cbor2.loads(data, max_depth=MAX_DEPTH, semantic_decoders=_SEMANTIC)
        _check_items(obj)
        canonical = cbor2.dumps(obj, canonical=True)
    except Exception as exc:  # cbor2 raises several types on hostile input
        raise EnvelopeError(Reason.MALFORMED_CBOR, f"{what}: {exc}") from None
    if canonical != data:
        if data.startswith(canonical):
            raise EnvelopeError(Reason.MALFORMED_CBOR, f"{what}: trailing bytes")
        raise EnvelopeError(non_canonical, f"{what} is not deterministic CBOR")
    return obj


def _exact_keys(obj, keys: frozenset) -> bool:
    # Exactly these integer keys (True would compare equal to 1: refused).
    return (
        isinstance(obj, Mapping)
        and len(obj) == len(keys)
        and all(type(k) is int and k in keys for k in obj)
    )


_PAYLOAD_KEYS = frozenset((1, 2, 3))
_RECORD_KEYS = frozenset((0, 1, 2))


def decode_envelope(raw: bytes) -> Envelope:
    """Check the outer COSE_Sign1 structure (same order as firmware/cose.py
    parse_sign1); the signature is neither checked nor verified here."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise EnvelopeError(Reason.MALFORMED_CBOR, "envelope is not bytes")
    raw = bytes(raw)
    if len(raw) > MAX_ENVELOPE:
        raise EnvelopeError(Reason.OVERSIZE, f"{len(raw)} bytes > {MAX_ENVELOPE}")
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


def _text_ok(text, limit: int) -> bool:
    return type(text) is str and 1 <= len(text.encode("utf-8", "surrogatepass")) <= limit


def decode_payload(payload: bytes) -> Reading:
    """Strict CBOR, deterministic encoding, then the schema
    {1: seq, 2: time, 3: [{0: name, 1: unit, 2: value}, ...]}."""
    obj = _loads(payload, "payload", Reason.NON_CANONICAL)
    if not _exact_keys(obj, _PAYLOAD_KEYS):
        raise EnvelopeError(Reason.BAD_PAYLOAD, "payload keys are not exactly {1, 2, 3}")
    seq, time, records = obj[1], obj[2], obj[3]
    if type(seq) is not int or not 0 <= seq <= MAX_UINT:
        raise EnvelopeError(Reason.BAD_PAYLOAD, "sequence number is not an unsigned integer < 2^63")
    if type(time) is not int or not 0 <= time <= MAX_UINT:
        raise EnvelopeError(Reason.BAD_PAYLOAD, "time is not an unsigned integer < 2^63")
    if not isinstance(records, list | tuple) or not 1 <= len(records) <= MAX_RECORDS:
        raise EnvelopeError(Reason.BAD_PAYLOAD, f"records: need a list of 1..{MAX_RECORDS}")
    out = []
    for rec in records:
        if not _exact_keys(rec, _RECORD_KEYS):
            raise EnvelopeError(Reason.BAD_PAYLOAD, "record keys are not exactly {0, 1, 2}")
        name, unit, value = rec[0], rec[1], rec[2]
        if not _text_ok(name, MAX_NAME):
            raise EnvelopeError(Reason.BAD_PAYLOAD, f"record name is not 1..{MAX_NAME} bytes")
        if not _text_ok(unit, MAX_UNIT):
            raise EnvelopeError(Reason.BAD_PAYLOAD, f"record unit is not 1..{MAX_UNIT} bytes")
        if type(value) is not float or not math.isfinite(value) or float32(value) != value:
            raise EnvelopeError(Reason.BAD_PAYLOAD, "record value is not a finite float32")
        out.append((name, unit, value))
    return Reading(seq, time, tuple(out))


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
    from .verify import address, private_key, sign_digest

    key = private_key(privkey)
    payload = encode_payload(seq, time, records)
    kid = address(key.public_key.format(compressed=False))
    return assemble(kid, payload, sign_digest(key, digest(payload)))
