"""Outbox format and power-cut behaviour on CPython (same code as the board)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from terrapin.firmware.outbox import (
    HEADER_SIZE,
    RECORD_HEAD,
    Outbox,
    OutboxError,
)


def envelope(seq: int, size: int = 120) -> bytes:
    body = (b"%08d" % seq) * (size // 8 + 1)
    return body[:size]


def entries(box: Outbox) -> list[tuple[int, bytes]]:
    out = []
    pos = (0, 0)
    while True:
        got = box.next_entry(*pos)
        if got is None:
            return out
        segno, off, seq, n = got
        out.append((seq, bytes(box.envelope(n))))
        pos = (segno, off + RECORD_HEAD + n)


def drain(box: Outbox) -> None:
    pos = (0, 0)
    while True:
        got = box.next_entry(*pos)
        if got is None:
            return
        segno, off, _seq, n = got
        assert box.release(segno)
        pos = (segno, off + RECORD_HEAD + n)


def test_append_read_release_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "ob")
    box = Outbox(path, max_bytes=16384, segment_bytes=2048)
    for seq in range(1, 41):
        assert box.append(seq, envelope(seq)) == 0
    assert box.pending == 40
    assert [s for s, _ in entries(box)] == list(range(1, 41))
    assert all(env == envelope(seq) for seq, env in entries(box))
    assert len(box.segs) > 2
    # overhead per entry beyond the envelope
    assert RECORD_HEAD <= 16
    assert box.bytes_written == 40 * (120 + RECORD_HEAD) + len(box.segs) * HEADER_SIZE

    again = Outbox(path, max_bytes=16384, segment_bytes=2048)
    assert again.pending == 40 and again.max_seq == 40 and again.corrupt == 0
    with pytest.raises(OutboxError):
        again.append(40, envelope(40))
    drain(again)
    assert again.pending == 0
    # sealed, fully released segments are gone; only the head may stay
    assert len(os.listdir(path)) <= 1
    again.seal_if_drained()
    assert [n for n in os.listdir(path) if n.endswith(".seg")] == []
    third = Outbox(path, max_bytes=16384, segment_bytes=2048)
    assert third.pending == 0
    third.append(41, envelope(41))
    assert [s for s, _ in entries(third)] == [41]


def test_bad_envelope_sizes(tmp_path: Path) -> None:
    box = Outbox(str(tmp_path / "ob"))
    with pytest.raises(OutboxError):
        box.append(1, b"")
    with pytest.raises(OutboxError):
        box.append(1, b"x" * 1025)
    box.append(1, b"x" * 1024)
    assert entries(box) == [(1, b"x" * 1024)]


def test_full_policy_drops_oldest_and_counts(tmp_path: Path) -> None:
    path = str(tmp_path / "ob")
    box = Outbox(path, max_bytes=4096, segment_bytes=2048)
    for seq in range(1, 101):
        box.append(seq, envelope(seq, 200))
    kept = [s for s, _ in entries(box)]
    assert kept == list(range(kept[0], 101)), "keeps the newest, in order"
    assert box.dropped == 100 - len(kept) > 0
    assert box.size <= 4096
    again = Outbox(path, max_bytes=4096, segment_bytes=2048)
    assert again.dropped == box.dropped, "dropped count survives a reboot"
    assert [s for s, _ in entries(again)] == kept


def _fill(path: str) -> list[tuple[int, bytes]]:
    box = Outbox(path, max_bytes=65536, segment_bytes=2048)
    for seq in range(1, 26):
        box.append(seq * 3, envelope(seq, 90 + seq))
    return entries(box)


def test_torn_write_at_every_byte(tmp_path: Path) -> None:
    """A power cut at any byte of the last segment leaves a readable prefix."""
    base = str(tmp_path / "base")
    full = _fill(base)
    segs = sorted(p for p in os.listdir(base) if p.endswith(".seg"))
    last = segs[-1]
    size = os.path.getsize(os.path.join(base, last))
    before = [e for e in full if e not in _only(base, segs[:-1])]
    for cut in range(size):
        work = tmp_path / "cut"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(base, work)
        with open(work / last, "r+b") as f:
            f.truncate(cut)
        box = Outbox(str(work), max_bytes=65536, segment_bytes=2048)
        got = entries(box)
        assert box.corrupt == 0, f"cut at {cut}: counted as corruption"
        assert full[: len(got)] == got, f"cut at {cut}: not a prefix"
        # everything in complete records before the cut survives
        complete = _complete_records(cut)
        assert len(got) == len(full) - len(before) + complete, f"cut at {cut}"
        # the segment was cut back, so the next boot sees no torn tail
        box.append(1000, envelope(1000))
        again = Outbox(str(work), max_bytes=65536, segment_bytes=2048)
        assert again.torn == 0 and again.corrupt == 0, f"cut at {cut}"
        assert entries(again) == [*got, (1000, envelope(1000))]


def _only(path: str, segs: list[str]) -> list[tuple[int, bytes]]:
    work = Path(path + "-only")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    for s in segs:
        shutil.copy(os.path.join(path, s), work / s)
    return entries(Outbox(str(work), max_bytes=65536, segment_bytes=2048))


_LAST_SIZES: list[int] = []


def _complete_records(cut: int) -> int:
    """How many records of the last segment end at or before `cut`."""
    n = 0
    for end in _LAST_SIZES:
        if end <= cut:
            n += 1
    return n


@pytest.fixture(autouse=True)
def _record_ends(tmp_path: Path) -> None:
    # Record end offsets of the last segment written by _fill().
    box_path = str(tmp_path / "probe")
    box = Outbox(box_path, max_bytes=65536, segment_bytes=2048)
    ends = []
    for seq in range(1, 26):
        box.append(seq * 3, envelope(seq, 90 + seq))
        ends.append((box.segs[-1][0], box.segs[-1][1]))
    last = box.segs[-1][0]
    _LAST_SIZES[:] = [end for segno, end in ends if segno == last]


def test_bit_flip_is_corruption_and_stops_that_segment(tmp_path: Path) -> None:
    path = str(tmp_path / "ob")
    full = _fill(path)
    segs = sorted(p for p in os.listdir(path) if p.endswith(".seg"))
    in_first = _only(path, segs[:1])
    first = os.path.join(path, segs[0])
    data = bytearray(open(first, "rb").read())
    # flip one byte inside the envelope of the second record
    second = HEADER_SIZE + RECORD_HEAD + len(full[0][1]) + RECORD_HEAD + 5
    data[second] ^= 0x40
    open(first, "wb").write(bytes(data))
    box = Outbox(path, max_bytes=65536, segment_bytes=2048)
    got = entries(box)
    assert box.corrupt == 1
    # reading the damaged segment stops at the bad record; later segments are intact
    assert got == [full[0], *full[len(in_first) :]]


def test_bad_header_is_set_aside(tmp_path: Path) -> None:
    path = str(tmp_path / "ob")
    full = _fill(path)
    segs = sorted(p for p in os.listdir(path) if p.endswith(".seg"))
    first = os.path.join(path, segs[0])
    data = bytearray(open(first, "rb").read())
    data[4] = 9  # unknown version
    open(first, "wb").write(bytes(data))
    box = Outbox(path, max_bytes=65536, segment_bytes=2048)
    assert box.corrupt == 1
    assert os.path.exists(first + ".bad")
    assert entries(box)[-1] == full[-1]
    box.append(10_000, envelope(1))
    assert entries(box)[-1][0] == 10_000


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.integers(1, 12), st.integers(1, 1024)),
            st.tuples(st.just("release"), st.integers(1, 12), st.just(0)),
            st.tuples(st.just("reboot"), st.just(0), st.just(0)),
        ),
        max_size=25,
    )
)
def test_random_operations_keep_every_unreleased_entry(ops) -> None:  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as tmp:
        path = tmp + "/ob"
        box = Outbox(path, max_bytes=8192, segment_bytes=2048)
        seq = 0
        live: dict[int, bytes] = {}  # appended, not released, not dropped
        cursor = (0, 0)
        for op, n, size in ops:
            if op == "append":
                for _ in range(n):
                    seq += 1
                    env = bytes([seq % 251]) * size
                    dropped = box.append(seq, env)
                    live[seq] = env
                    if dropped:
                        kept = {s for s, _ in entries(box)}
                        for s in list(live):
                            if s not in kept:
                                del live[s]
            elif op == "release":
                for _ in range(n):
                    got = box.next_entry(*cursor)
                    if got is None:
                        break
                    segno, off, s, length = got
                    cursor = (segno, off + RECORD_HEAD + length)
                    box.release(segno)
                    live.pop(s, None)
            else:
                box = Outbox(path, max_bytes=8192, segment_bytes=2048)
                cursor = (0, 0)
            assert box.corrupt == 0 and box.size <= 8192
        again = Outbox(path, max_bytes=8192, segment_bytes=2048)
        found = entries(again)
        seqs = [s for s, _ in found]
        assert seqs == sorted(set(seqs))
        assert again.corrupt == 0 and again.torn == 0
        for s, env in live.items():
            assert (s, env) in found, f"unreleased seq {s} lost"
