"""Keccak-256 equals pycryptodome's on every length 0..300 (rate boundaries
135/136/137 and 271/272/273 included)."""

from __future__ import annotations

import random

from Crypto.Hash import keccak as reference

from terrapin.firmware.keccak import keccak256


def ref(data: bytes) -> bytes:
    return reference.new(digest_bits=256, data=data).digest()


def test_known_answers():
    assert keccak256(b"").hex() == (
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    )
    assert keccak256(b"abc").hex() == (
        "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"
    )


def test_every_length_up_to_300():
    rng = random.Random(256)
    for n in range(301):
        data = rng.randbytes(n)
        assert keccak256(data) == ref(data), n
        assert keccak256(bytearray(data)) == ref(data), n


def test_all_ones_at_rate_boundaries():
    for n in (135, 136, 137, 271, 272, 273, 1000):
        assert keccak256(b"\xff" * n) == ref(b"\xff" * n), n
