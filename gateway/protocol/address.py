"""Board address: the last 20 bytes of keccak256 of the uncompressed public key
(X || Y), i.e. an Ethereum address: the same identity off chain and on chain."""

from __future__ import annotations

import sha3

from terrapin.gateway.protocol.errors import PublicKeyError


def keccak256(data: bytes) -> bytes:
    return sha3.keccak_256(data).digest()


def address(pub65: bytes) -> bytes:
    """Board address: last 20 bytes of keccak256(X || Y)."""
    if len(pub65) != 65 or pub65[0] != 4:
        raise PublicKeyError("need an uncompressed public key (65 bytes, 0x04...)")
    return keccak256(pub65[1:])[-20:]
