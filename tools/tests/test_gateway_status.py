"""`terrapin gateway status` text (tools/cli/gateway_status.py): every line fits the
width without a cut word, times are local time and age, anchoring and rewards state
from the database or, without it, from the stages' status in the API."""

from __future__ import annotations

import re
import time

from terrapin.tools.cli.gateway_status import age, local_time, short_hashes, status_text

BOARD = "4b62683727b68dce2ae023e62a98b98268e89e55"
ERROR = (
    "batch 2 on chain holds root 0x" + "ab" * 32 + ", ours is 0x" + "cd" * 32 + " (retrying "
    "every 60 s without limit)"
)


def snapshot(now: float) -> dict:
    return {
        "uptime_s": 7384.2,
        "connected": True,
        "queue_depth": 3,
        "store_bytes": 1_234_567,
        "last_commit_at": now - 4,
        "counts": {
            "received": 120,
            "stored": 118,
            "duplicate": 1,
            "rejected": {"BAD_SIGNATURE": 1, "STALE_SEQUENCE": 0},
            "rejected_total": 1,
        },
        "boards": {
            BOARD: {"stored": 118, "last_seq": 118, "last_received_at": now - 4, "last_time": 1}
        },
        "board_status": {BOARD: {"state": "online"}},
        "stages": {
            "Batcher": {"waiting": 2, "error": None},
            "Anchorer": {
                "batches": {"confirmed": 4, "sent": 1},
                "last_anchored": {"batch": 3, "block": 77},
                "error": ERROR,
                "network": "embedded",
                "chain_id": 31337,
                "node": "reachable",
            },
            "RewardsStage": {
                "current_epoch": 20431,
                "last_settled_epoch": 20430,
                "next_due_at": now + 600,
                "error": None,
            },
        },
    }


def db_state(now: float) -> dict:
    """The database's view, times relative to `now` (built per test: a module-level
    time.time() goes stale when collection and the test are minutes apart)."""
    return {
        "anchoring": {
            "batches": {"pending": 0, "sent": 1, "anchored": 0, "confirmed": 4},
            "waiting": 2,
            "pending_readings": 12,
            "oldest_unanchored_at": now - 200,
            "last_block": 77,
            "last_batch": 3,
            "last_batch_block": 77,
            "last_anchored_at": now - 3700,
            "failures": {"reverted": 1, "abandoned": 0, "reorged": 0},
        },
        "published_epoch": 20429,
    }


# A local time as timefmt.clock writes it: '14:03:07' today, '2026-12-05 14:03' on
# another day (a run just after midnight sees yesterday's times with their date).
CLOCK = r"(?:\d\d:\d\d:\d\d|\d{4}-\d\d-\d\d \d\d:\d\d)"


def check_fits(text: str, width: int) -> None:
    assert all(len(line) <= width for line in text.splitlines()), text
    # No word cut: every word of the error survives whole (hashes shortened first).
    words = " ".join(text.split())
    for word in short_hashes(ERROR).split():
        assert word in words, word
    assert not re.search(r"\b1[6-9]\d{8}(\.\d+)?\b", text)  # no epoch seconds


def test_status_in_80_columns_from_the_database():
    now = time.time()
    text = status_text(snapshot(now), db_state(now), width=80)
    check_fits(text, 80)
    flat = " ".join(text.split())
    assert "up 2 h 3 min" in flat and "broker connected" in flat
    assert re.search(rf"pending 12 readings, oldest {CLOCK} \(3 min ago\)", flat), flat
    assert "batches: 1 sent, 4 confirmed" in flat
    assert re.search(rf"last batch 3 in block 77 at {CLOCK} \(1 h ago\)", flat), flat
    assert "failed txs reverted 1" in flat
    assert "LAST ERROR (anchor): batch 2 on chain holds root 0xabababab…abab" in flat
    assert "epoch 20431 now, last settled 20430, last published 20429" in flat
    assert f"{BOARD} online" in flat  # the full address, on its own line
    assert re.search(r"stored 118, last seq 118, last reading \d\d:\d\d:\d\d \(4 s ago\)", flat)


def test_status_wide_terminal_is_a_table_and_api_only_falls_back_to_stages():
    now = time.time()
    text = status_text(snapshot(now), None, width=120)
    check_fits(text, 120)
    assert re.search(rf"^  {BOARD}\s+118\s+118\s+\d\d:\d\d:\d\d \(4 s ago\)\s+online$", text, re.M)
    flat = " ".join(text.split())
    assert "waiting 2 readings, batches: 4 confirmed, 1 sent, last batch 3 in block 77" in flat
    assert "none published yet" in flat


def test_status_without_chain_stages_says_off():
    now = time.time()
    snap = snapshot(now)
    snap["stages"] = {}
    text = status_text(snap, {"anchoring": None, "published_epoch": None}, width=80)
    assert "anchoring  off (no batch or anchor stage)" in text
    assert "rewards    off (no rewards stage)" in text


def test_times():
    now = time.mktime((2026, 12, 6, 12, 0, 0, 0, 0, -1))
    assert local_time(now - 65, now) == "11:58:55 (1 min ago)"
    assert local_time(now - 2 * 86400, now) == "2026-12-04 12:00 (2 d ago)"
    assert local_time(None, now) == "never"
    assert age(5) == "5 s ago" and age(7200) == "2 h ago"


def test_the_chain_node_is_a_labelled_row():
    now = time.time()
    snap = snapshot(now)
    down = "unreachable since 2026-12-06 22:00:00 UTC"
    snap["stages"]["RewardsStage"]["node"] = down
    text = status_text(snap, db_state(now), width=80)
    assert re.search(
        rf"^chain      embedded, chain id 31337\n {{11}}Anchorer: node reachable\n"
        rf" {{11}}RewardsStage: node {down}\nanchoring  ",
        text,
        re.M,
    ), text


def test_a_figure_stays_with_its_unit_at_every_width():
    """A part ("store 1.2 MB", "pending 12 readings") moves to the next line whole; only a
    part wider than the line is wrapped. Checked at every width from 50 to 120."""
    now = time.time()
    phrases = ["store 1.2 MB", "broker connected", "duplicates 1", "last published 20429",
               "pending 12 readings", "failed txs reverted 1", "epoch 20431 now"]  # fmt: skip
    for width in range(50, 121):
        text = status_text(snapshot(now), db_state(now), width=width)
        check_fits(text, width)
        for phrase in phrases:
            assert any(phrase in line for line in text.splitlines()), (width, phrase, text)
