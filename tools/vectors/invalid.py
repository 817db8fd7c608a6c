"""The invalid wire protocol v1 test vectors (docs/vectors/invalid.json).

Envelopes that every implementation must reject, each with `reason` (the wire
reason code's name, see docs/PROTOCOL.md): size and CBOR well-formedness,
envelope shape, algorithm and key id, signature, payload encoding and payload
schema. Each is built with the reference (tools/vectors/reference.py) and,
unless the fault is the signature, correctly signed.
"""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Any

from cbor2 import CBORTag

from terrapin.tools.vectors.reference import (
    PROTECTED,
    N,
    address,
    canonical,
    envelope,
    fixed_key,
    payload_bytes,
    public_key,
    sig_structure,
    sign,
)


def _head(major: int, n: int, width: int) -> bytes:
    """A CBOR head with a chosen (possibly non-minimal) argument width."""
    code = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes([(major << 5) | code]) + n.to_bytes(width, "big")


def build_invalid() -> list[dict[str, Any]]:
    priv = fixed_key("board-x")
    pub = public_key(priv)
    addr = address(pub)
    other = fixed_key("board-y")
    good_records = [("temperature", "Cel", 21.5)]
    out: list[dict[str, Any]] = []

    def signed(payload: bytes, protected: bytes = PROTECTED, key: bytes = priv) -> bytes:
        return sign(key, hashlib.sha256(sig_structure(payload, protected)).digest())[0]

    def add(name: str, reason: str, description: str, env: bytes, topic: bytes = addr) -> None:
        out.append(
            {
                "name": name,
                "reason": reason,
                "description": description,
                "public_key": pub.hex(),
                "topic_address": topic.hex(),
                "envelope": env.hex(),
            }
        )

    def signed_env(payload: bytes) -> bytes:
        return envelope(PROTECTED, {4: addr}, payload, signed(payload))

    payload = payload_bytes(5, 1767225600, good_records)
    sig = signed(payload)
    good = envelope(PROTECTED, {4: addr}, payload, sig)

    # Size and CBOR well-formedness of the envelope.
    big = payload_bytes(6, 1767225600, [("x" * 32, "u" * 16, 1.5)] * 16)
    add(
        "oversize",
        "OVERSIZE",
        "a correctly signed envelope of more than 1024 bytes: 16 records with the longest "
        "names and units (the payload schema itself is valid)",
        signed_env(big),
    )
    add(
        "trailing-bytes",
        "MALFORMED_CBOR",
        "a valid envelope followed by one 0x00 byte",
        good + b"\0",
    )
    add("truncated", "MALFORMED_CBOR", "a valid envelope with its last byte cut off", good[:-1])
    if good[:2] != b"\xd2\x84":  # pragma: no cover - cbor2 changed its output
        raise RuntimeError("unexpected envelope head")
    indefinite = b"\xd2\x9f" + good[2:] + b"\xff"
    add(
        "indefinite-array",
        "MALFORMED_CBOR",
        "the COSE_Sign1 array encoded with indefinite length (0x9f ... 0xff)",
        indefinite,
    )
    kid_pos = good.index(b"\x54" + addr)
    nonmin = good[:kid_pos] + b"\x58\x14" + good[kid_pos + 1 :]
    add(
        "non-canonical-envelope",
        "MALFORMED_CBOR",
        "the kid's length written in two bytes (0x58 0x14) instead of one (0x54)",
        nonmin,
    )
    deep = canonical(CBORTag(18, [PROTECTED, {4: addr, 5: [[[[b""]]]]}, payload, sig]))
    add(
        "deep-nesting",
        "MALFORMED_CBOR",
        "an unprotected header value nested 7 containers deep (limit 4)",
        deep,
    )
    # Shape of the envelope.
    add(
        "bad-tag",
        "BAD_ENVELOPE",
        "tag 98 (COSE_Sign) instead of 18",
        canonical(CBORTag(98, [PROTECTED, {4: addr}, payload, sig])),
    )
    add(
        "untagged",
        "BAD_ENVELOPE",
        "the COSE_Sign1 array without tag 18",
        canonical([PROTECTED, {4: addr}, payload, sig]),
    )
    add(
        "wrong-array-length",
        "BAD_ENVELOPE",
        "a 3-element array (signature missing)",
        canonical(CBORTag(18, [PROTECTED, {4: addr}, payload])),
    )
    add(
        "payload-not-bytes",
        "BAD_ENVELOPE",
        "the payload as a text string (its hex) instead of a byte string",
        canonical(CBORTag(18, [PROTECTED, {4: addr}, payload.hex(), sig])),
    )
    add(
        "unknown-header",
        "BAD_ENVELOPE",
        "an extra unprotected header 33 (x5chain) beside the kid",
        canonical(CBORTag(18, [PROTECTED, {4: addr, 33: b"\x00"}, payload, sig])),
    )
    # Algorithm and key id.
    es256 = canonical({1: -7})
    add(
        "wrong-alg",
        "UNSUPPORTED_ALG",
        "protected header {1: -7} (ES256, P-256), correctly signed over its Sig_structure",
        envelope(es256, {4: addr}, payload, signed(payload, es256)),
    )
    extra = canonical({1: -47, 3: 0})
    add(
        "extra-protected-header",
        "UNSUPPORTED_ALG",
        "protected header {1: -47, 3: 0}: not exactly {1: -47}",
        envelope(extra, {4: addr}, payload, signed(payload, extra)),
    )
    add(
        "kid-19-bytes",
        "BAD_KID",
        "kid of 19 bytes",
        envelope(PROTECTED, {4: addr[:19]}, payload, sig),
        topic=addr,
    )
    add("kid-missing", "BAD_KID", "empty unprotected header", envelope(PROTECTED, {}, payload, sig))
    add(
        "topic-mismatch",
        "TOPIC_MISMATCH",
        "a valid envelope published under another board's topic",
        good,
        topic=address(public_key(other)),
    )
    # Signature.
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    high = r.to_bytes(32, "big") + (N - s).to_bytes(32, "big")
    add(
        "high-s",
        "HIGH_S",
        "the same signature with s replaced by n - s (valid ECDSA, but malleable)",
        envelope(PROTECTED, {4: addr}, payload, high),
    )
    flipped = bytes([sig[0] ^ 0x01]) + sig[1:]
    add(
        "bad-signature",
        "BAD_SIGNATURE",
        "one bit of r flipped",
        envelope(PROTECTED, {4: addr}, payload, flipped),
    )
    add(
        "signed-by-other-key",
        "BAD_SIGNATURE",
        "a valid signature by a different key under this board's kid",
        envelope(PROTECTED, {4: addr}, payload, signed(payload, key=other)),
    )
    add(
        "signature-63-bytes",
        "BAD_SIGNATURE",
        "signature one byte short",
        envelope(PROTECTED, {4: addr}, payload, sig[:63]),
    )
    # Payload encoding (each payload correctly signed).
    rec = canonical([{0: "temperature", 1: "Cel", 2: 21.5}])
    noncanon_seq = b"\xa3\x01" + _head(0, 5, 1) + b"\x02" + canonical(1767225600) + b"\x03" + rec
    add(
        "non-canonical-payload-int",
        "NON_CANONICAL",
        "payload seq 5 written as 0x18 0x05 (non-minimal integer)",
        signed_env(noncanon_seq),
    )
    unsorted = b"\xa3\x02" + canonical(1767225600) + b"\x01\x05\x03" + rec
    add(
        "non-canonical-payload-order",
        "NON_CANONICAL",
        "payload map keys in the order 2, 1, 3",
        signed_env(unsorted),
    )
    for width, enc in (
        ("single", b"\xfa" + struct.pack(">f", 21.5)),
        ("double", b"\xfb" + struct.pack(">d", 21.5)),
    ):
        rec_wide = b"\x81\xa3\x00\x6btemperature\x01\x63Cel\x02" + enc
        body_wide = b"\xa3\x01\x05\x02" + canonical(1767225600) + b"\x03" + rec_wide
        add(
            f"non-canonical-float-{width}",
            "NON_CANONICAL",
            f"value 21.5 written as a {width} although a half keeps it exactly",
            signed_env(body_wide),
        )
    indef_records = (
        b"\xa3\x01\x05\x02"
        + canonical(1767225600)
        + b"\x03\x9f"
        + canonical({0: "temperature", 1: "Cel", 2: 21.5})
        + b"\xff"
    )
    add(
        "indefinite-records",
        "NON_CANONICAL",
        "the payload's record array with indefinite length",
        signed_env(indef_records),
    )
    add(
        "payload-trailing-bytes",
        "MALFORMED_CBOR",
        "a payload followed by one 0x00 byte inside the signed byte string",
        signed_env(payload + b"\0"),
    )
    add(
        "payload-truncated",
        "MALFORMED_CBOR",
        "a payload with its last byte cut off, correctly signed",
        signed_env(payload[:-1]),
    )
    # Payload schema.
    add(
        "zero-records",
        "BAD_PAYLOAD",
        "an empty record array",
        signed_env(canonical({1: 5, 2: 1767225600, 3: []})),
    )
    add(
        "seventeen-records",
        "BAD_PAYLOAD",
        "17 records (limit 16)",
        signed_env(payload_bytes(5, 1767225600, [("t", "Cel", 1.0)] * 17)),
    )
    add(
        "missing-time",
        "BAD_PAYLOAD",
        "payload map without key 2",
        signed_env(canonical({1: 5, 3: [{0: "t", 1: "Cel", 2: 1.5}]})),
    )
    add(
        "value-not-float",
        "BAD_PAYLOAD",
        "record value 21 as an integer instead of a float",
        signed_env(canonical({1: 5, 2: 1767225600, 3: [{0: "t", 1: "Cel", 2: 21}]})),
    )
    add(
        "value-nan",
        "BAD_PAYLOAD",
        "record value NaN (f97e00): values must be finite",
        signed_env(canonical({1: 5, 2: 1767225600, 3: [{0: "t", 1: "Cel", 2: math.nan}]})),
    )
    add(
        "value-infinity",
        "BAD_PAYLOAD",
        "record value +infinity (f97c00): values must be finite",
        signed_env(canonical({1: 5, 2: 1767225600, 3: [{0: "t", 1: "Cel", 2: math.inf}]})),
    )
    add(
        "value-not-float32",
        "BAD_PAYLOAD",
        "record value 0.1 as a double: canonical CBOR, but not a float32 value",
        signed_env(canonical({1: 5, 2: 1767225600, 3: [{0: "t", 1: "Cel", 2: 0.1}]})),
    )
    add(
        "seq-too-large",
        "BAD_PAYLOAD",
        "seq 2^63 (limit 2^63-1)",
        signed_env(canonical({1: 2**63, 2: 1767225600, 3: [{0: "t", 1: "Cel", 2: 1.5}]})),
    )
    add(
        "empty-name",
        "BAD_PAYLOAD",
        "a record with an empty name",
        signed_env(canonical({1: 5, 2: 1767225600, 3: [{0: "", 1: "Cel", 2: 1.5}]})),
    )
    add(
        "name-33-bytes",
        "BAD_PAYLOAD",
        "a record name of 33 bytes (17 two-byte characters; limit 32 bytes)",
        signed_env(canonical({1: 5, 2: 1767225600, 3: [{0: "é" * 16 + "x", 1: "Cel", 2: 1.5}]})),
    )
    add(
        "empty-unit",
        "BAD_PAYLOAD",
        "a record with an empty unit",
        signed_env(canonical({1: 5, 2: 1767225600, 3: [{0: "t", 1: "", 2: 1.5}]})),
    )
    return out
