"""The owner binding's EIP-712 digest built on the board (firmware/bind.py) equals
the host's (gateway/rewards/binding.py), on CPython and on the MicroPython unix
port, and cannot be steered to a reading's digest."""

from __future__ import annotations

import random
import subprocess

import pytest

from terrapin.firmware import bind, cose
from terrapin.gateway.rewards import binding as host
from terrapin.tools.micropython import ESP32_HEAP, FIRMWARE_DIR

OWNER = bytes.fromhex("ab" * 20)
REGISTRY = bytes.fromhex("cd" * 20)


def cases() -> list[tuple[bytes, int, int, bytes]]:
    rng = random.Random(712)
    out = [(OWNER, 0, 31337, REGISTRY), (bytes(20), 0, 0, bytes(20))]
    out.append((b"\xff" * 20, 2**256 - 1, 2**256 - 1, b"\xff" * 20))
    for _ in range(6):
        out.append(
            (rng.randbytes(20), rng.randrange(2**64), rng.randrange(2**40), rng.randbytes(20))
        )
    return out


def test_board_digest_is_the_hosts():
    for owner, nonce, chain_id, contract in cases():
        assert bind.digest(owner, nonce, chain_id, contract) == host.bind_digest(
            owner, nonce, chain_id, contract
        )


def test_out_of_range_fields_are_refused():
    for args in (
        (OWNER[:19], 0, 1, REGISTRY),
        (OWNER, -1, 1, REGISTRY),
        (OWNER, 0, 2**256, REGISTRY),
        (OWNER, 0, 1, REGISTRY + b"\0"),
    ):
        with pytest.raises(bind.BindError):
            bind.digest(*args)


def test_a_reading_digest_is_never_a_bind_digest():
    """A reading's digest is SHA-256 over CBOR starting 0x84 0x6A "Signature1"; the
    board signs Keccak-256 over 0x1901||...: fields cut from a reading's digest
    give a different digest."""
    payload = cose.encode_payload(1, 1_700_000_000, [("temp", "Cel", 21.5)])
    reading = cose.digest(payload)
    assert cose.sig_structure(payload)[:12] == b"\x84\x6aSignature1"
    for owner, contract in ((reading[:20], reading[12:]), (reading[12:], reading[:20])):
        for nonce in (0, int.from_bytes(reading, "big")):
            assert bind.digest(owner, nonce, 1, contract) != reading


@pytest.mark.micropython
def test_board_digest_on_the_unix_port(micropython_exe):
    all_cases = cases()
    lines = "".join(f"{o.hex()} {n} {c} {k.hex()}\n" for o, n, c, k in all_cases)
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(FIRMWARE_DIR.parent)!r})\n"
        "from binascii import hexlify, unhexlify\n"
        "from firmware import bind\n"
        "for line in sys.stdin:\n"
        "    o, n, c, k = line.split()\n"
        "    d = bind.digest(unhexlify(o), int(n), int(c), unhexlify(k))\n"
        "    print(hexlify(d).decode())\n"
    )
    proc = subprocess.run(
        [micropython_exe, "-X", f"heapsize={ESP32_HEAP}", "-c", code],
        input=lines,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    want = [host.bind_digest(o, n, c, k).hex() for o, n, c, k in all_cases]
    assert proc.stdout.split() == want
