"""The bounded hand-over between paho's thread and the server thread."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from terrapin.gateway.inbox import Inbox


def test_order_batches_and_backpressure():
    box = Inbox(3)
    for i in range(3):
        box.put(i)
    with pytest.raises(queue.Full):
        box.put(3, timeout=0.05)  # full: the producer waits, nothing is dropped
    assert box.get_batch(0.1, 2) == [0, 1]
    box.put(3, timeout=0.05)
    assert box.get_batch(0.1, 10) == [2, 3]
    assert box.get_batch(0.05, 10) == []


def test_a_sleeping_consumer_wakes_for_one_item():
    box = Inbox(10)
    got = []
    t = threading.Thread(target=lambda: got.extend(box.get_batch(5.0, 10)))
    t.start()
    time.sleep(0.1)
    start = time.monotonic()
    box.put("x")
    t.join(5)
    assert got == ["x"] and time.monotonic() - start < 1.0


def test_many_items_across_threads_arrive_once_in_order():
    box = Inbox(100)
    n = 20000
    out: list[int] = []

    def consume():
        while len(out) < n:
            out.extend(box.get_batch(1.0, 500))

    t = threading.Thread(target=consume)
    t.start()
    for i in range(n):
        box.put(i)
    t.join(10)
    assert out == list(range(n))


def test_a_board_over_its_rate_waits_and_another_board_overtakes_it():
    box = Inbox(1000, rate=10.0, burst=5, share=50)
    flood, victim = b"\x01" * 20, b"\x02" * 20
    for i in range(40):
        assert box.put(("f", i), board=flood)
    box.put(("v", 0), board=victim)
    first = box.get_batch(0.1, 100)
    assert ("v", 0) in first
    assert [x for x in first if x[0] == "f"] == [("f", i) for i in range(5)]  # its burst
    assert box.held() == 35  # held, not dropped: the broker is not PUBACKed for them
    time.sleep(0.25)  # ~2 tokens later
    more = box.get_batch(0.1, 100)
    assert 1 <= len(more) <= 4 and more[0] == ("f", 5)


def test_a_board_over_its_rate_and_share_is_dropped_without_waiting():
    flood = b"\x01" * 20
    box2 = Inbox(1000, rate=1.0, burst=2, share=3)
    for i in range(3):
        box2.put(i, board=flood)
    box2.get_batch(0.05, 10)  # takes its 2 tokens' worth
    box2.put(3, board=flood)
    box2.put(4, board=flood)
    start = time.monotonic()
    assert box2.put(5, board=flood) is False  # share full, no token: dropped at once
    assert time.monotonic() - start < 0.05
    assert box2.put(6, board=b"\x02" * 20)  # another board is not affected


def test_a_board_within_its_rate_gets_backpressure_not_a_drop():
    box = Inbox(3, rate=100.0, burst=100, share=3)
    for i in range(3):
        box.put(i, board=b"\x01" * 20)
    with pytest.raises(queue.Full):
        box.put(3, timeout=0.05, board=b"\x01" * 20)  # inbox full, tokens left: wait


def test_a_purged_board_leaves_the_others_waiting():
    box = Inbox(100, rate=10.0, burst=50, share=5)
    a, b = b"\x01" * 20, b"\x02" * 20
    for i in range(10):
        box.put(("a", i), board=a)
        box.put(("b", i), board=b)
    assert box.purge(a) == [("a", i) for i in range(10)]
    assert box.purge(a) == []
    assert box.qsize() == 10
    assert box.get_batch(0.1, 100) == [("b", i) for i in range(10)]


def test_a_burst_its_tokens_cover_is_held_without_blocking_and_the_rest_dropped():
    box = Inbox(10_000, rate=1.0, burst=500, share=3)
    board = b"\x01" * 20
    start = time.monotonic()
    assert all(box.put(i, timeout=0, board=board) for i in range(500))  # never waits
    assert time.monotonic() - start < 0.5
    taken = 500
    while box.put(taken, timeout=0, board=board):  # a token or two refilled meanwhile
        taken += 1
    assert taken <= 502, taken  # past its burst: dropped at once
    assert box.held() == 0
