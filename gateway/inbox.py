"""A bounded hand-over from paho's thread to the server thread.

One producer, one consumer. Cheaper than queue.Queue per message (a deque
append and, only when the consumer sleeps, one Event.set), and the consumer
takes everything waiting in one call. When full, `put` waits: backpressure,
never a drop.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque


class Inbox:
    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._items: deque = deque()
        self._ready = threading.Event()

    def qsize(self) -> int:
        return len(self._items)

    def put(self, item, timeout: float | None = None) -> None:
        if len(self._items) >= self.maxsize:
            deadline = None if timeout is None else time.monotonic() + timeout
            while len(self._items) >= self.maxsize:
                if deadline is not None and time.monotonic() >= deadline:
                    raise queue.Full
                time.sleep(0.001)
        self._items.append(item)
        if not self._ready.is_set():
            self._ready.set()

    def get_batch(self, timeout: float, limit: int) -> list:
        """Up to `limit` items; waits up to `timeout` for the first one."""
        items = self._items
        if not items:
            self._ready.clear()
            if not items and not self._ready.wait(timeout):
                return []
        n = min(len(items), limit)
        pop = items.popleft
        return [pop() for _ in range(n)]

    def clear(self) -> None:
        self._items.clear()
