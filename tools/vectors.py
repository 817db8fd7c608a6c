"""`terrapin vectors`: the wire protocol v1 test vectors, from an independent reference.

This module deliberately does NOT use the firmware code: payloads and
envelopes come from cbor2 (canonical=True), signatures from python-ecdsa
(RFC 6979 via sign_digest_deterministic, then low-S), addresses from
pycryptodome's Keccak. The firmware (and the gateway) are then tested against
these files, so a bug shared by our own modules cannot hide.

docs/vectors/valid.json    readings that every implementation must produce
                           byte for byte and accept
docs/vectors/invalid.json  envelopes that must be rejected with `reason`
                           (the wire reason code's name, see docs/PROTOCOL.md)

Keys are fixed (derived from labels), so the output is deterministic:
`terrapin vectors --check` fails if the committed files differ.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path
from typing import Any

import cbor2
import click
import ecdsa
from cbor2 import CBORTag
from Crypto.Hash import keccak
from ecdsa.util import sigencode_strings

from terrapin.tools.errors import TerrapinError

VECTORS_DIR = Path(__file__).resolve().parent.parent / "docs" / "vectors"
CURVE = ecdsa.SECP256k1
N = CURVE.order
PROTECTED = cbor2.dumps({1: -47}, canonical=True)
VERSION = 1


# -- the reference ----------------------------------------------------------------------


def fixed_key(label: str) -> bytes:
    """A deterministic private key: SHA-256 of a label, re-hashed until in range."""
    key = hashlib.sha256(b"terrapin test vector key: " + label.encode()).digest()
    while not 1 <= int.from_bytes(key, "big") < N:
        key = hashlib.sha256(key).digest()
    return key


def public_key(priv: bytes) -> bytes:
    sk = ecdsa.SigningKey.from_string(priv, curve=CURVE)
    return b"\x04" + sk.get_verifying_key().to_string()


def address(pub: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=pub[1:]).digest()[12:]


def float32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def canonical(obj: Any) -> bytes:
    return cbor2.dumps(obj, canonical=True)


def payload_bytes(seq: int, time: int, records: list[tuple[str, str, float]]) -> bytes:
    recs = [{0: n, 1: u, 2: float32(float(v))} for n, u, v in records]
    return canonical({1: seq, 2: time, 3: recs})


def sig_structure(payload: bytes, protected: bytes = PROTECTED) -> bytes:
    return canonical(["Signature1", protected, b"", payload])


def sign(priv: bytes, digest: bytes) -> tuple[bytes, int]:
    """(r||s low-S, recovery id v) with python-ecdsa's RFC 6979 nonce."""
    sk = ecdsa.SigningKey.from_string(priv, curve=CURVE)
    r_b, s_b = sk.sign_digest_deterministic(
        digest, hashfunc=hashlib.sha256, sigencode=sigencode_strings
    )
    r, s = int.from_bytes(r_b, "big"), int.from_bytes(s_b, "big")
    # v from R = k*G with the same RFC 6979 nonce python-ecdsa used.
    k = ecdsa.rfc6979.generate_k(N, int.from_bytes(priv, "big"), hashlib.sha256, digest)
    point = k * CURVE.generator
    if point.x() % N != r:  # pragma: no cover - would mean a retried nonce
        raise RuntimeError("nonce mismatch")
    v = (point.y() & 1) | (2 if point.x() >= N else 0)
    if s > N // 2:
        s = N - s
        v ^= 1
    return r.to_bytes(32, "big") + s.to_bytes(32, "big"), v


def envelope(protected: bytes, unprotected: dict, payload: bytes, signature: bytes) -> bytes:
    return canonical(CBORTag(18, [protected, unprotected, payload, signature]))


# -- valid vectors ----------------------------------------------------------------------

VALID: list[dict[str, Any]] = [
    {
        "name": "basic",
        "description": "two records; 21.5 is exact in half precision, 45.2 needs single",
        "key": "board-a",
        "seq": 1,
        "time": 1767225600,
        "records": [("temperature", "Cel", 21.5), ("humidity", "%RH", 45.2)],
    },
    {
        "name": "unsynced-clock",
        "description": "time 0 (board clock not set); value 1013.25 exact in single",
        "key": "board-a",
        "seq": 2,
        "time": 0,
        "records": [("pressure", "hPa", 1013.25)],
    },
    {
        "name": "rounded-to-float32",
        "description": "0.1 is rounded to float32 (0.100000001490116...) before encoding",
        "key": "board-b",
        "seq": 7,
        "time": 1767225660,
        "records": [("voltage", "V", 0.1), ("ratio", "/", 1 / 3)],
    },
    {
        "name": "negative-and-zero",
        "description": "negative values, +0.0 and -0.0 (both half precision)",
        "key": "board-b",
        "seq": 8,
        "time": 1767225720,
        "records": [
            ("outside", "Cel", -12.75),
            ("freezer", "Cel", -40.0),
            ("offset", "Cel", 0.0),
            ("offset-neg", "Cel", -0.0),
        ],
    },
    {
        "name": "half-boundaries",
        "description": "65504 (largest half), 65536 (single), 2^-24 (smallest half subnormal), "
        "6.103515625e-05 (smallest half normal)",
        "key": "board-c",
        "seq": 100,
        "time": 1767225780,
        "records": [
            ("a", "count", 65504.0),
            ("b", "count", 65536.0),
            ("c", "/", 5.960464477539063e-08),
            ("d", "/", 6.103515625e-05),
        ],
    },
    {
        "name": "large-and-tiny",
        "description": "largest float32, 1e10 (exact in single), 1e-30 (single), 1e39 is not "
        "allowed (beyond float32) so it is absent",
        "key": "board-c",
        "seq": 101,
        "time": 1767225840,
        "records": [
            ("max", "/", 3.4028234663852886e38),
            ("big", "/", 1e10),
            ("tiny", "/", 1e-30),
        ],
    },
    {
        "name": "sixteen-records",
        "description": "the maximum of 16 records",
        "key": "board-d",
        "seq": 4294967296,
        "time": 1767225900,
        "records": [(f"t{i}", "Cel", 20.0 + i / 4) for i in range(16)],
    },
    {
        "name": "long-names-unicode",
        "description": "a 32-byte name, a 16-byte unit, a non-ASCII name (UTF-8 bytes count)",
        "key": "board-d",
        "seq": 4294967297,
        "time": 1767225960,
        "records": [
            ("n" * 32, "u" * 16, 120.5),
            ("température", "Cel", 19.0),
            ("é" * 16, "count", 3.0),
        ],
    },
    {
        "name": "max-seq",
        "description": "largest allowed seq and time (2^63-1)",
        "key": "board-e",
        "seq": 2**63 - 1,
        "time": 2**63 - 1,
        "records": [("co2", "ppm", 412.0)],
    },
]


def build_valid() -> list[dict[str, Any]]:
    out = []
    for case in VALID:
        priv = fixed_key(case["key"])
        pub = public_key(priv)
        addr = address(pub)
        payload = payload_bytes(case["seq"], case["time"], case["records"])
        sig_struct = sig_structure(payload)
        digest = hashlib.sha256(sig_struct).digest()
        signature, v = sign(priv, digest)
        env = envelope(PROTECTED, {4: addr}, payload, signature)
        out.append(
            {
                "name": case["name"],
                "description": case["description"],
                "private_key": priv.hex(),
                "public_key": pub.hex(),
                "address": addr.hex(),
                "seq": case["seq"],
                "time": case["time"],
                "records": [
                    {"name": n, "unit": u, "value": v_, "value_float32": float32(float(v_))}
                    for n, u, v_ in case["records"]
                ],
                "payload": payload.hex(),
                "sig_structure": sig_struct.hex(),
                "digest": digest.hex(),
                "signature": signature.hex(),
                "v": v,
                "envelope": env.hex(),
            }
        )
    return out


# -- invalid vectors --------------------------------------------------------------------


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


# -- files and the command --------------------------------------------------------------


def render() -> dict[str, str]:
    """File name -> exact JSON text."""
    valid = {"version": VERSION, "protected": PROTECTED.hex(), "vectors": build_valid()}
    invalid = {"version": VERSION, "vectors": build_invalid()}
    return {
        "valid.json": json.dumps(valid, indent=2, ensure_ascii=False) + "\n",
        "invalid.json": json.dumps(invalid, indent=2, ensure_ascii=False) + "\n",
    }


def load(name: str, directory: Path = VECTORS_DIR) -> list[dict[str, Any]]:
    """The vectors of docs/vectors/<name>.json ("valid" or "invalid")."""
    return json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))["vectors"]


@click.command()
@click.option("--check", is_flag=True, help="Fail if the committed files differ.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=VECTORS_DIR,
    show_default=True,
    help="Where valid.json and invalid.json live.",
)
def vectors(check: bool, directory: Path) -> None:
    """Regenerate (or --check) the wire protocol v1 test vectors."""
    files = render()
    if check:
        stale = [
            name
            for name, text in files.items()
            if not (directory / name).exists()
            or (directory / name).read_text(encoding="utf-8") != text
        ]
        if stale:
            raise TerrapinError(
                f"test vectors out of date: {', '.join(stale)} in {directory}",
                hint="run `terrapin vectors` and commit the result",
            )
        click.echo(f"vectors up to date in {directory}")
        return
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    valid, invalid = (len(json.loads(files[n])["vectors"]) for n in ("valid.json", "invalid.json"))
    click.echo(f"wrote {valid} valid and {invalid} invalid vectors to {directory}")
