"""Proof bundle (JSON, version 1): one reading, its board's signature, its Merkle proof and
where its batch root is anchored. Written by `terrapin proof`, checked by `terrapin verify`.

    {"version": 1, "envelope": "<hex COSE_Sign1>", "pubkey": "<hex, 65 bytes 04||X||Y>",
     "device": "0x<20 bytes>", "seq": N, "digest": "0x<32 bytes>", "leaf": "0x<32 bytes>",
     "proof": ["0x<32 bytes>", ...], "root": "0x<32 bytes>", "batch": N,
     "chain_id": N, "contract": "0x<20 bytes>", "tx": "0x<32 bytes>", "block": N}

The envelope inside is decoded, hashed and checked by the protocol core
(terrapin.gateway.protocol): this module only knows the bundle's own format.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.protocol.envelope import (
    MAX_ENVELOPE,
    Envelope,
    EnvelopeError,
    decode_envelope,
)

VERSION = 1
MAX_JSON_DEPTH = 8  # a bundle is one object holding one list
MAX_PROOF = 64  # a proof longer than this would need a tree of more than 2**64 leaves

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


class BundleError(TerrapinError, ValueError):
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


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")


def parse_json(text: str) -> Any:
    """json.loads for a bundle file, after refusing nesting a bundle never has: json's C
    scanner recurses once per level, and where web3 is imported (py_ecc raises the recursion
    limit to 100000) a file nested 100,000 deep overflows the C stack: SIGSEGV, found by
    `terrapin fuzz`. Malformed JSON raises json's own ValueError, as before."""
    depth = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            raise BundleError("bundle", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return json.loads(text)


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


def parse_envelope(envelope: bytes) -> Envelope:
    """The bundle's envelope, decoded by the protocol core (strict COSE_Sign1, ES256K,
    20-byte kid); BundleError('envelope', ...) otherwise. A bundle's reading was stored,
    so its signature must be the 64 bytes r||s."""
    try:
        env = decode_envelope(envelope)
    except EnvelopeError as exc:
        raise BundleError("envelope", str(exc)) from None
    if len(env.signature) != 64:
        raise BundleError("envelope", "signature must be 64 bytes r||s")
    return env
