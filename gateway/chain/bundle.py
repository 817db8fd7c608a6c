"""Proof bundle (JSON, version 1): one reading, its board's signature, its Merkle proof and
where its batch root is anchored. Written by `terrapin proof`, checked by `terrapin verify`.

    {"version": 1, "envelope": "<hex COSE_Sign1>", "pubkey": "<hex, 65 bytes 04||X||Y>",
     "device": "0x<20 bytes>", "seq": N, "digest": "0x<32 bytes>", "leaf": "0x<32 bytes>",
     "proof": ["0x<32 bytes>", ...], "root": "0x<32 bytes>", "batch": N,
     "chain_id": N, "contract": "0x<20 bytes>", "tx": "0x<32 bytes>", "block": N}

Also the envelope helpers a verifier needs (cbor2 + coincurve only): parse the
COSE_Sign1, the signed digest (SHA-256 of the Sig_structure), address and public-key
recovery.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
import coincurve
import sha3

VERSION = 1
MAX_ENVELOPE = 1024
MAX_PROOF = 64  # a proof longer than this would need a tree of more than 2**64 leaves
COSE_SIGN1_TAG = 18
PROTECTED_ES256K = bytes.fromhex("a101382e")  # {1: -47}
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

FIELDS = (
    "version",
    "envelope",
    "pubkey",
    "device",
    "seq",
    "digest",
    "leaf",
    "proof",
    "root",
    "batch",
    "chain_id",
    "contract",
    "tx",
    "block",
)


class BundleError(ValueError):
    """A bundle or envelope that is not well formed; `field` names the culprit."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Bundle:
    envelope: bytes
    pubkey: bytes
    device: bytes
    seq: int
    digest: bytes
    leaf: bytes
    proof: list[bytes]
    root: bytes
    batch: int
    chain_id: int
    contract: bytes
    tx: bytes
    block: int

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "envelope": self.envelope.hex(),
            "pubkey": self.pubkey.hex(),
            "device": "0x" + self.device.hex(),
            "seq": self.seq,
            "digest": "0x" + self.digest.hex(),
            "leaf": "0x" + self.leaf.hex(),
            "proof": ["0x" + p.hex() for p in self.proof],
            "root": "0x" + self.root.hex(),
            "batch": self.batch,
            "chain_id": self.chain_id,
            "contract": "0x" + self.contract.hex(),
            "tx": "0x" + self.tx.hex(),
            "block": self.block,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"


def _hex(data: dict[str, Any], field: str, size: int | None, prefixed: bool) -> bytes:
    value = data[field]
    if not isinstance(value, str):
        raise BundleError(field, "must be a hex string")
    if prefixed:
        if not value.startswith("0x"):
            raise BundleError(field, "must start with 0x")
        value = value[2:]
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise BundleError(field, "is not hex") from None
    if size is not None and len(raw) != size:
        raise BundleError(field, f"must be {size} bytes, got {len(raw)}")
    return raw


def _uint(data: dict[str, Any], field: str) -> int:
    value = data[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BundleError(field, "must be a non-negative integer")
    return value


def load(data: Any) -> Bundle:
    """A parsed bundle; BundleError names the first bad field. Unknown keys are rejected."""
    if not isinstance(data, dict):
        raise BundleError("bundle", "must be a JSON object")
    missing = [f for f in FIELDS if f not in data]
    if missing:
        raise BundleError(missing[0], "missing")
    extra = sorted(set(data) - set(FIELDS))
    if extra:
        raise BundleError(extra[0], "unknown field")
    if data["version"] != VERSION or isinstance(data["version"], bool):
        raise BundleError(
            "version", f"unsupported version {data['version']!r} (expected {VERSION})"
        )
    proof = data["proof"]
    if not isinstance(proof, list) or len(proof) > MAX_PROOF:
        raise BundleError("proof", f"must be a list of at most {MAX_PROOF} hashes")
    envelope = _hex(data, "envelope", None, prefixed=False)
    if not envelope or len(envelope) > MAX_ENVELOPE:
        raise BundleError("envelope", f"must be 1..{MAX_ENVELOPE} bytes")
    return Bundle(
        envelope=envelope,
        pubkey=_hex(data, "pubkey", 65, prefixed=False),
        device=_hex(data, "device", 20, prefixed=True),
        seq=_uint(data, "seq"),
        digest=_hex(data, "digest", 32, prefixed=True),
        leaf=_hex(data, "leaf", 32, prefixed=True),
        proof=[_hex({"proof": p}, "proof", 32, prefixed=True) for p in proof],
        root=_hex(data, "root", 32, prefixed=True),
        batch=_uint(data, "batch"),
        chain_id=_uint(data, "chain_id"),
        contract=_hex(data, "contract", 20, prefixed=True),
        tx=_hex(data, "tx", 32, prefixed=True),
        block=_uint(data, "block"),
    )


@dataclass(frozen=True)
class Envelope:
    protected: bytes
    kid: bytes
    payload: bytes
    signature: bytes

    @property
    def digest(self) -> bytes:
        """SHA-256 of the COSE Sig_structure ["Signature1", protected, h'', payload]."""
        return hashlib.sha256(
            cbor2.dumps(["Signature1", self.protected, b"", self.payload])
        ).digest()

    def seq(self) -> int:
        payload = cbor2.loads(self.payload)
        if not isinstance(payload, Mapping) or not isinstance(payload.get(1), int):
            raise BundleError("envelope", "payload has no integer sequence number (key 1)")
        return payload[1]


def parse_envelope(envelope: bytes) -> Envelope:
    """COSE_Sign1 with ES256K and a 20-byte kid; BundleError('envelope', ...) otherwise."""
    try:
        obj = cbor2.loads(envelope)
    except Exception as exc:
        raise BundleError("envelope", f"not CBOR ({exc})") from None
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_SIGN1_TAG:
        raise BundleError("envelope", "not a COSE_Sign1 (tag 18)")
    value = obj.value
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise BundleError("envelope", "COSE_Sign1 must be a 4-element array")
    protected, unprotected, payload, signature = value
    if protected != PROTECTED_ES256K:
        raise BundleError("envelope", "protected header is not {1: -47} (ES256K)")
    if not isinstance(unprotected, Mapping) or not isinstance(unprotected.get(4), bytes):
        raise BundleError("envelope", "no kid in the unprotected header")
    if len(unprotected[4]) != 20:
        raise BundleError("envelope", "kid must be the 20-byte board address")
    if not isinstance(payload, bytes) or not isinstance(signature, bytes) or len(signature) != 64:
        raise BundleError("envelope", "payload or 64-byte signature missing")
    return Envelope(protected, unprotected[4], payload, signature)


def address(pubkey: bytes) -> bytes:
    """Ethereum address of an uncompressed public key (04||X||Y)."""
    if len(pubkey) != 65 or pubkey[0] != 4:
        raise BundleError("pubkey", "must be 65 bytes 04||X||Y")
    return sha3.keccak_256(pubkey[1:]).digest()[12:]


def verify_signature(pubkey: bytes, digest: bytes, signature: bytes) -> str | None:
    """None if `signature` (r||s, low-S) by `pubkey` over `digest` is valid, else why not."""
    s = int.from_bytes(signature[32:], "big")
    if s > SECP256K1_N // 2:
        return "high-S signature (malleable)"
    try:
        key = coincurve.PublicKey(pubkey)
        ok = key.verify(_to_der(signature), digest, hasher=None)
    except Exception as exc:
        return f"signature does not parse ({exc})"
    return None if ok else "signature does not verify for this public key"


def _to_der(signature: bytes) -> bytes:
    def integer(raw: bytes) -> bytes:
        raw = raw.lstrip(b"\0") or b"\0"
        if raw[0] & 0x80:
            raw = b"\0" + raw
        return b"\x02" + bytes([len(raw)]) + raw

    body = integer(signature[:32]) + integer(signature[32:])
    return b"\x30" + bytes([len(body)]) + body


def recover(digest: bytes, signature: bytes, board: bytes) -> tuple[bytes, int] | None:
    """(uncompressed public key, recovery id v in {0, 1}) of the board that signed."""
    for v in (0, 1):
        try:
            key = coincurve.PublicKey.from_signature_and_message(
                signature + bytes([v]), digest, hasher=None
            )
        except Exception:
            continue
        pub = key.format(compressed=False)
        if address(pub) == board:
            return pub, v
    return None
