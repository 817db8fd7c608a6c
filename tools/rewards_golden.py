"""The golden epoch manifest: one synthetic epoch that exercises every part of the rule.

    .venv/bin/python -m terrapin.tools.rewards_golden          rewrite the fixtures
    .venv/bin/python -m terrapin.tools.rewards_golden --check  exit 1 if they differ

Writes gateway/tests/rewards/fixtures/epoch-golden.manifest.json and epoch-golden.json
(its root, total and manifest hash). Deterministic: board keys from a seeded RNG,
RFC 6979 signatures, fixed block numbers and times; no chain, no clock. The epoch holds
a capped board, every flag the rule recomputes (unset clock, clock ahead and behind the
anchoring block, a value out of range, an unknown unit, an equivocation with its
evidence), a reading listed in two batches, an unowned board, a board re-bound inside
the epoch, a binding in the same block as another (log index order) and an owner with
a cumulative amount but nothing earned this epoch. A reimplementation of
docs/REWARDS.md should reproduce every figure and the root from the inputs alone.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from terrapin.gateway.chain import merkle
from terrapin.gateway.protocol.envelope import decode_envelope
from terrapin.gateway.rewards import recompute
from terrapin.gateway.rewards.manifest import (
    Batch,
    Binding,
    ChainRef,
    Evidence,
    Leaf,
    Manifest,
    Rule,
    manifest_hash,
    to_bytes,
)
from terrapin.tools.devkit.simboard import SimBoard

FIXTURES = Path(__file__).resolve().parent.parent / "gateway" / "tests" / "rewards" / "fixtures"
MANIFEST = FIXTURES / "epoch-golden.manifest.json"
SUMMARY = FIXTURES / "epoch-golden.json"
DAY = 86_400
EPOCH = 20_717  # 2026-09-21, the day of chainkit's FIXED_TIME
T0 = EPOCH * DAY
ALICE, BOB, DAVE = (bytes([n]) * 20 for n in (0xA1, 0xB0, 0xD4))
GATEWAY = bytes([0xEE]) * 20
TEMP = "temperature"


def _addr(n: int) -> bytes:
    return bytes([n]) * 20


def golden() -> Manifest:
    """The golden epoch, built (every derived field filled by recompute.build)."""
    rng = random.Random(19)
    b0, b1, b2, b3 = (SimBoard.make(rng) for _ in range(4))

    def leaf(board: SimBoard, seq: int, t: int, records=((TEMP, "Cel", 21.5),)) -> Leaf:
        env = board.envelope(seq, t, records)
        digest = decode_envelope(env).digest
        return Leaf(board.address, seq, digest, env)

    t7, t8 = T0 + 3_600, T0 + 7_200  # the two anchoring blocks
    dup = leaf(b3, 1, t7 - 60)
    batch7 = [
        *(leaf(b0, s, t7 - 60 * s) for s in range(1, 6)),  # 5 readings: capped to 3
        leaf(b1, 1, t7 - 30),
        leaf(b1, 2, t7 - 20, ((TEMP, "Cel", 500.0),)),  # OUT_OF_RANGE
        leaf(b1, 3, 0),  # TIME_UNSYNCED
        leaf(b2, 1, t7 - 10),  # unowned board
        dup,
        leaf(b3, 2, t7 + 1_000),  # TIME_FUTURE (more than 300 s after its block)
    ]
    equivocated = leaf(b3, 3, t8 - 10)
    batch8 = [
        leaf(b1, 4, t8 - 40 * DAY),  # TIME_OLD (more than 30 days before its block)
        leaf(b1, 5, t8 - 5, (("length", "furlong", 3.0),)),  # UNKNOWN_UNIT
        leaf(b2, 2, t8 - 5),
        dup,  # the same reading anchored again: counts once
        equivocated,
        leaf(b3, 4, t8 - 5),
    ]
    other = b3.envelope(3, t8 - 9, ((TEMP, "Cel", 30.0),))  # b3 signed seq 3 twice

    def batch(bid: int, block: int, t: int, leaves: list[Leaf]) -> Batch:
        leaves = sorted(leaves, key=lambda r: (r.board, r.seq))
        root = merkle.build_tree([(r.board, r.seq, r.digest) for r in leaves]).root
        return Batch(GATEWAY, bid, bytes([bid]) * 32, block, t, root, len(leaves), leaves)

    bindings = [
        Binding(10, 0, b0.address, ALICE, T0 - 5_000),
        Binding(10, 1, b1.address, BOB, T0 - 5_000),
        Binding(11, 0, b3.address, ALICE, T0 - 4_000),
        Binding(110, 3, b3.address, BOB, T0 + 5_000),  # re-bound inside the epoch: Bob's
        Binding(110, 4, b2.address, _addr(0), T0 + 5_000),  # unbinding an unbound board
    ]
    m = Manifest(
        epoch=EPOCH,
        rule=Rule(epoch_seconds=DAY, budget=1_000_003, cap=3),  # 2 left by rounding
        chain=ChainRef(31337, _addr(0xAA), _addr(0xBB), _addr(0xCC), 1, (GATEWAY,)),
        cutoff_block=200,
        cutoff_timestamp=T0 + DAY + 12,
        batches=[batch(7, 100, t7, batch7), batch(8, 120, t8, batch8)],
        equivocations=[Evidence(b3.address, 3, other)],
        bindings=bindings,
        previous={ALICE: 500, DAVE: 42},  # Dave earns nothing now and keeps his amount
    )
    return recompute.build(m)


def summary(m: Manifest, data: bytes) -> dict:
    return {
        "epoch": m.epoch,
        "root": "0x" + m.root.hex(),
        "total": str(m.total),
        "manifest_hash": "0x" + manifest_hash(data).hex(),
    }


def main(argv: list[str]) -> int:
    m = golden()
    data = to_bytes(m)
    text = json.dumps(summary(m, data), indent=1) + "\n"
    if "--check" in argv:
        same = MANIFEST.read_bytes() == data and SUMMARY.read_text() == text
        print("golden fixtures are current" if same else "golden fixtures differ: rerun")
        return 0 if same else 1
    FIXTURES.mkdir(parents=True, exist_ok=True)
    MANIFEST.write_bytes(data)
    SUMMARY.write_text(text)
    print(f"wrote {MANIFEST} and {SUMMARY}: root 0x{m.root.hex()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
