"""The verifier's envelope path against the protocol's golden vectors (docs/vectors)."""

from __future__ import annotations

import json

import pytest

from terrapin.gateway.chain import bundle
from terrapin.gateway.protocol.envelope import decode_payload
from terrapin.gateway.protocol.signature import N, address, recover_signer
from terrapin.tools.devkit.chainkit import REPO
from terrapin.tools.verifier import CheckFailed, _require_signature

VECTORS = json.loads((REPO / "docs" / "vectors" / "valid.json").read_text())["vectors"]
INVALID = json.loads((REPO / "docs" / "vectors" / "invalid.json").read_text())["vectors"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_verifier_agrees_with_the_golden_vectors(vector: dict) -> None:
    env = bundle.parse_envelope(bytes.fromhex(vector["envelope"]))
    pubkey = bytes.fromhex(vector["public_key"])
    assert env.digest.hex() == vector["digest"]
    assert env.kid.hex() == vector["address"] == address(pubkey).hex()
    assert decode_payload(env.payload).seq == vector["seq"]
    assert env.signature.hex() == vector["signature"]
    _require_signature(pubkey, env.digest, env.signature)
    assert recover_signer(env.digest, env.signature, env.kid) == (pubkey, vector["v"])


# The envelope-level defects: a bundle carrying one of these fails its "envelope" check.
_ENVELOPE_REASONS = {"OVERSIZE", "MALFORMED_CBOR", "BAD_ENVELOPE", "UNSUPPORTED_ALG", "BAD_KID"}
_BAD_ENVELOPES = [
    v for v in INVALID if v["reason"] in _ENVELOPE_REASONS and not v["name"].startswith("payload")
]


@pytest.mark.parametrize("vector", _BAD_ENVELOPES, ids=[v["name"] for v in _BAD_ENVELOPES])
def test_bundle_refuses_the_invalid_envelopes(vector: dict) -> None:
    with pytest.raises(bundle.BundleError) as info:
        bundle.parse_envelope(bytes.fromhex(vector["envelope"]))
    assert info.value.field == "envelope"
    assert vector["reason"] in str(info.value)


def test_high_s_and_foreign_key_are_refused() -> None:
    vector = VECTORS[0]
    env = bundle.parse_envelope(bytes.fromhex(vector["envelope"]))
    pubkey = bytes.fromhex(vector["public_key"])
    s = int.from_bytes(env.signature[32:], "big")
    high = env.signature[:32] + (N - s).to_bytes(32, "big")
    with pytest.raises(CheckFailed, match="high-S"):
        _require_signature(pubkey, env.digest, high)
    others = [bytes.fromhex(v["public_key"]) for v in VECTORS]
    other = next(k for k in others if k != pubkey)
    with pytest.raises(CheckFailed, match="does not verify"):
        _require_signature(other, env.digest, env.signature)
