"""The host's EIP-712 binding digest equals eth-account's; signatures recover to the board."""

from __future__ import annotations

import coincurve
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from hypothesis import given, settings
from hypothesis import strategies as st

from terrapin.gateway.rewards.binding import (
    BindingError,
    bind_digest,
    check_binding,
    pack_signature,
    recover_signer,
    typed_data,
)

CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
OWNER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
BOARD_KEY = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
BOARD = Account.from_key(BOARD_KEY).address.lower()

addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())


@settings(max_examples=50)
@given(addresses, st.integers(0, 2**256 - 1), st.integers(1, 2**64), addresses)
def test_digest_matches_eth_account(owner, nonce, chain_id, contract):
    signable = encode_typed_data(full_message=typed_data(owner, nonce, chain_id, contract))
    expected = bytes.fromhex("".join(["19", signable.version.hex(), signable.header.hex()]))
    ours = bind_digest(owner, nonce, chain_id, contract)
    from eth_utils import keccak

    assert ours == keccak(expected + signable.body)


def board_sign(digest: bytes, key: bytes = BOARD_KEY) -> tuple[bytes, int]:
    """What the board's sign_recoverable returns: r||s (low-S) and v in {0, 1}."""
    sig = coincurve.PrivateKey(key).sign_recoverable(digest, hasher=None)
    return sig[:64], sig[64]


def test_board_signature_recovers_to_board_and_matches_eth_account():
    digest = bind_digest(OWNER, 0, 31337, CONTRACT)
    sig = pack_signature(*board_sign(digest))
    assert recover_signer(digest, sig) == BOARD
    assert check_binding(BOARD, OWNER, 0, 31337, CONTRACT, sig) == digest
    signed = Account.sign_typed_data(BOARD_KEY, full_message=typed_data(OWNER, 0, 31337, CONTRACT))
    assert bytes(signed.signature) == sig  # RFC 6979 on both sides: same bytes


@pytest.mark.parametrize(
    "change",
    [
        {"owner": "0x" + "33" * 20},
        {"nonce": 1},
        {"chain_id": 1},
        {"contract": "0x" + "44" * 20},
    ],
)
def test_signature_for_another_message_is_refused(change):
    args = {"owner": OWNER, "nonce": 0, "chain_id": 31337, "contract": CONTRACT}
    sig = pack_signature(*board_sign(bind_digest(**args)))
    with pytest.raises(BindingError, match="not by board"):
        check_binding(BOARD, **(args | change), signature=sig)


def test_other_key_is_refused():
    digest = bind_digest(OWNER, 0, 31337, CONTRACT)
    sig = pack_signature(*board_sign(digest, key=b"\x07" * 32))
    with pytest.raises(BindingError, match="not by board"):
        check_binding(BOARD, OWNER, 0, 31337, CONTRACT, sig)


def test_malformed_signatures_are_typed_errors():
    digest = bind_digest(OWNER, 0, 31337, CONTRACT)
    r_s, v = board_sign(digest)
    with pytest.raises(BindingError):
        pack_signature(r_s[:63], v)
    with pytest.raises(BindingError):
        pack_signature(r_s, 2)
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    high = r_s[:32] + (n - int.from_bytes(r_s[32:], "big")).to_bytes(32, "big")
    with pytest.raises(BindingError, match="high-s"):
        pack_signature(high, 1 - v)
    with pytest.raises(BindingError):
        recover_signer(digest, r_s + b"\x05")
