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
