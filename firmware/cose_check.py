"""The receiving side of wire protocol v1 envelopes: parse, verify and decode.

`check_envelope` applies the receiving rules in the documented order and
raises `cose.COSEError` whose `reason` is the wire reason code (same numbers
as the gateway's `Reason` enum; see docs/PROTOCOL.md). Hosts, tests, the demo
and board self-tests import this module; a board that only signs readings
does not (cose.py is the signing side), which keeps its heap small.
Pure logic: no I/O.
"""

from . import cbor, secp256k1
from .compat import const
from .cose import MAX_ENVELOPE, MAX_RECORDS, PROTECTED, COSEError, address, digest, float32

_SIGN1_TAG = const(18)
_MAX_NAME = const(32)  # bytes of UTF-8
_MAX_UNIT = const(16)  # bytes of UTF-8
_MAX_UINT = const(0x7FFFFFFFFFFFFFFF)  # seq and time: the gateway stores SQLite INTEGERs

# Reason codes (wire protocol v1; terrapin.gateway.protocol.reasons.Reason has the same numbers).
MALFORMED_CBOR = const(1)
OVERSIZE = const(2)
BAD_ENVELOPE = const(3)
UNSUPPORTED_ALG = const(4)
BAD_KID = const(5)
TOPIC_MISMATCH = const(6)
BAD_SIGNATURE = const(7)
HIGH_S = const(8)
NON_CANONICAL = const(9)
BAD_PAYLOAD = const(10)

# Index = reason code.
REASON_NAMES = (
    "",
    "MALFORMED_CBOR",
    "OVERSIZE",
    "BAD_ENVELOPE",
    "UNSUPPORTED_ALG",
    "BAD_KID",
    "TOPIC_MISMATCH",
    "BAD_SIGNATURE",
    "HIGH_S",
    "NON_CANONICAL",
    "BAD_PAYLOAD",
)


def parse_sign1(envelope):
    """(protected, kid, payload, signature) of an envelope, checked for
    size, strict CBOR, structure, algorithm and kid. Raises COSEError."""
    if len(envelope) > MAX_ENVELOPE:
        raise COSEError(OVERSIZE, "envelope over 1024 bytes")
    try:
        obj = cbor.loads(envelope, 4, MAX_ENVELOPE)
    except cbor.CBORError as exc:
        raise COSEError(MALFORMED_CBOR, "envelope: " + str(exc))
    if not isinstance(obj, cbor.Tag) or obj.tag != _SIGN1_TAG:
        raise COSEError(BAD_ENVELOPE, "not a COSE_Sign1 (tag 18)")
    body = obj.value
    if not isinstance(body, list) or len(body) != 4:
        raise COSEError(BAD_ENVELOPE, "COSE_Sign1 must be a 4-element array")
    protected, unprotected, payload, signature = body
    if not (
        isinstance(protected, bytes)
        and isinstance(unprotected, dict)
        and isinstance(payload, bytes)
        and isinstance(signature, bytes)
    ):
        raise COSEError(BAD_ENVELOPE, "wrong field types")
    for key in unprotected:
        if key != 4:
            raise COSEError(BAD_ENVELOPE, "unknown unprotected header")
    if protected != PROTECTED:
        raise COSEError(UNSUPPORTED_ALG, "protected header is not {1: -47}")
    kid = unprotected.get(4)
    if not isinstance(kid, bytes) or len(kid) != 20:
        raise COSEError(BAD_KID, "kid missing or not 20 bytes")
    return protected, kid, payload, signature


def _text_ok(text, limit):
    return type(text) is str and 1 <= len(text.encode("utf-8")) <= limit


def decode_payload(payload):
    """(seq, time, [(name, unit, value), ...]) of a payload. Raises
    COSEError: MALFORMED_CBOR (not well-formed: truncated, trailing bytes, too
    deep), NON_CANONICAL (well-formed but not deterministic) or BAD_PAYLOAD
    (schema: keys, types, 1..16 records, name 1..32 and unit 1..16 bytes of
    UTF-8, value a finite float32)."""
    try:
        obj = cbor.loads(payload, 4, MAX_ENVELOPE)
    except cbor.NonCanonicalError as exc:
        raise COSEError(NON_CANONICAL, "payload: " + str(exc))
    except cbor.CBORError as exc:
        raise COSEError(MALFORMED_CBOR, "payload: " + str(exc))
    if not _has_keys(obj, (1, 2, 3)):
        raise COSEError(BAD_PAYLOAD, "payload must be a map with keys 1, 2, 3")
    seq = obj[1]
    time = obj[2]
    recs = obj[3]
    if type(seq) is not int or not 0 <= seq <= _MAX_UINT:
        raise COSEError(BAD_PAYLOAD, "seq must be in 0..2^63-1")
    if type(time) is not int or not 0 <= time <= _MAX_UINT:
        raise COSEError(BAD_PAYLOAD, "time must be in 0..2^63-1")
    if not isinstance(recs, list) or not 1 <= len(recs) <= MAX_RECORDS:
        raise COSEError(BAD_PAYLOAD, "need 1..16 records")
    records = []
    for rec in recs:
        if not _has_keys(rec, (0, 1, 2)):
            raise COSEError(BAD_PAYLOAD, "record must be a map with keys 0, 1, 2")
        name = rec[0]
        unit = rec[1]
        value = rec[2]
        try:
            ok = (
                _text_ok(name, _MAX_NAME)
                and _text_ok(unit, _MAX_UNIT)
                and isinstance(value, float)
                and float32(value) == value
            )
        except ValueError:
            ok = False
        if not ok:
            raise COSEError(BAD_PAYLOAD, "bad record")
        records.append((name, unit, value))
    return seq, time, records


def _has_keys(obj, keys):
    # Exactly these integer keys (True/1.0 would compare equal to 1: refused).
    if not isinstance(obj, dict) or len(obj) != len(keys):
        return False
    for key in obj:
        if type(key) is not int or key not in keys:
            return False
    return True


def check_envelope(envelope, topic_kid=None, pub=None):
    """Apply the v1 receiving rules in order; return (kid, seq, time, records).

    `topic_kid`: the address from the MQTT topic (20 bytes), if any.
    `pub`: the board's known 65-byte public key; without it the key is
    recovered from the signature and must hash to kid."""
    protected, kid, payload, signature = parse_sign1(envelope)
    if topic_kid is not None and bytes(topic_kid) != kid:
        raise COSEError(TOPIC_MISMATCH, "kid does not match the topic address")
    if len(signature) != 64:
        raise COSEError(BAD_SIGNATURE, "signature must be 64 bytes")
    if int.from_bytes(signature[32:], "big") > secp256k1.HALF_N:
        raise COSEError(HIGH_S, "s > n/2")
    if not _verified(kid, pub, digest(payload), signature):
        raise COSEError(BAD_SIGNATURE, "signature does not verify for kid")
    seq, time, records = decode_payload(payload)
    return kid, seq, time, records


def _verified(kid, pub, dig, signature):
    if pub is not None:
        return address(pub) == kid and secp256k1.verify_digest(pub, dig, signature)
    for v in (0, 1):
        try:
            if address(secp256k1.recover_public_key(dig, signature, v)) == kid:
                return True
        except (secp256k1.SignatureError, ZeroDivisionError):
            pass
    return False


def verify1(pub, envelope):
    """True if `envelope` passes every v1 rule for the board with key `pub`."""
    try:
        check_envelope(envelope, None, pub)
    except (COSEError, ValueError):
        return False
    return True
