"""The verifier's envelope code against the protocol's golden vectors (docs/vectors)."""

from __future__ import annotations

import json

import pytest

from terrapin.gateway.chain import bundle
from terrapin.tools.devkit.chainkit import REPO

VECTORS = json.loads((REPO / "docs" / "vectors" / "valid.json").read_text())["vectors"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_verifier_agrees_with_the_golden_vectors(vector: dict) -> None:
    env = bundle.parse_envelope(bytes.fromhex(vector["envelope"]))
    pubkey = bytes.fromhex(vector["public_key"])
    assert env.digest.hex() == vector["digest"]
    assert env.kid.hex() == vector["address"] == bundle.address(pubkey).hex()
    assert env.seq() == vector["seq"]
    assert env.signature.hex() == vector["signature"]
    assert bundle.verify_signature(pubkey, env.digest, env.signature) is None
    assert bundle.recover(env.digest, env.signature, env.kid) == (pubkey, vector["v"])


def test_high_s_and_foreign_key_are_refused() -> None:
    vector = VECTORS[0]
    env = bundle.parse_envelope(bytes.fromhex(vector["envelope"]))
    pubkey = bytes.fromhex(vector["public_key"])
    s = int.from_bytes(env.signature[32:], "big")
    high = env.signature[:32] + (bundle.SECP256K1_N - s).to_bytes(32, "big")
    assert "high-S" in (bundle.verify_signature(pubkey, env.digest, high) or "")
    other = bytes.fromhex(VECTORS[-1]["public_key"])
    if other != pubkey:
        assert bundle.verify_signature(other, env.digest, env.signature) is not None
