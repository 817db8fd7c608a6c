"""A bounded, fair hand-over from paho's thread to the server thread, with
per-board admission.

One producer, one consumer. Each board (keyed by the address in the topic,
None for a topic without one) has its own FIFO and a token bucket of `rate`
messages/s holding at most `burst`. `get_batch` takes round-robin from the
boards that have tokens, so one board's backlog never sits in front of
another board's reading, and a board over its rate waits here: held, not yet
PUBACKed, so the broker still has it.

`put` returns False, before any decode or signature check, when the board
already has `share` messages waiting and no token left beyond them: the caller PUBACKs
and drops that message (a board keeps every reading in its outbox until the
gateway's ACK and sends it again after its ACK timeout, so nothing a board
sent is lost). A board may have waiting `share` messages or as many as its
tokens cover, whichever is more: its burst waits here, so the paho thread
never stops reading (every other board's readings) for one board's burst,
and a flood is dropped as soon as it passes burst + share, not after the
workers have been through its burst. `put` waits (backpressure, never a
drop) only when the inbox holds `maxsize` messages.
With `rate` 0 there is no admission limit (and `share` only bounds the wait).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import deque

# At most this many of one board's messages per batch, so that a board's burst
# is spread over several batches and every other board gets into each of them.
MAX_BOARD_BATCH = 256
# Buckets kept for boards with nothing waiting; above this, full ones are
# forgotten (a full bucket is the same as a new one).
_MAX_IDLE_BUCKETS = 4096


class Inbox:
    def __init__(self, maxsize: int, *, rate: float = 0.0, burst: float = 0, share: int = 0):
        self.maxsize = maxsize
        self.rate = float(rate)
        self.burst = float(burst) if rate > 0 else math.inf
        self.share = share or maxsize
        self._queues: dict[bytes | None, deque] = {}  # only boards with something waiting
        self._order: deque = deque()  # those boards, round-robin
        self._buckets: dict[bytes | None, tuple[float, float]] = {}  # board -> (tokens, at)
        self._size = 0
        self._lock = threading.Lock()
        self._ready = threading.Event()

    def qsize(self) -> int:
        return self._size

    def held(self) -> int:
        """Messages waiting for their board's tokens (over its rate)."""
        now = time.monotonic()
        with self._lock:
            return sum(max(0, len(q) - int(self._tokens(b, now))) for b, q in self._queues.items())

    def _tokens(self, board, now: float) -> float:
        got = self._buckets.get(board)
        if got is None:
            return self.burst
        tokens, at = got
        return min(self.burst, tokens + (now - at) * self.rate)

    def put(self, item, timeout: float | None = None, *, board: bytes | None = None) -> bool:
        """Queue `item` for `board`; False: dropped (over its share and its rate)."""
        deadline = None
        while True:
            with self._lock:
                q = self._queues.get(board)
                n = 0 if q is None else len(q)
                room = n < self.share
                if not room and self.rate > 0:
                    tokens = self._tokens(board, time.monotonic())
                    if tokens < n + 1:
                        return False  # no token for this one: over its rate and share
                    room = True  # its burst: held here, not at the broker
                if room and self._size < self.maxsize:
                    if q is None:
                        q = self._queues[board] = deque()
                        self._order.append(board)
                    q.append(item)
                    self._size += 1
                    break
            if deadline is None:
                deadline = math.inf if timeout is None else time.monotonic() + timeout
            if time.monotonic() >= deadline:
                raise queue.Full
            time.sleep(0.001)
        if not self._ready.is_set():
            self._ready.set()
        return True

    def get_batch(self, timeout: float, limit: int) -> list:
        """Up to `limit` items, round-robin over boards with tokens; waits up to
        `timeout` for the first one."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                now = time.monotonic()
                out, wait = self._take(limit, now)
                if out:
                    return out
                self._ready.clear()  # under the lock: a put after this sets it again
            left = deadline - now
            if left <= 0:
                return []
            self._ready.wait(min(left, wait))

    def _take(self, limit: int, now: float) -> tuple[list, float]:
        """(items, seconds until a waiting board has a token when none was taken)."""
        out: list = []
        wait = math.inf
        order, queues, buckets = self._order, self._queues, self._buckets
        limited = self.rate > 0
        taken: dict = {}  # board -> items in this batch
        progress = True
        while progress and order and len(out) < limit:
            progress = False
            quota = max(1, (limit - len(out)) // len(order))
            for _ in range(len(order)):
                board = order.popleft()
                q = queues[board]
                tokens = self._tokens(board, now) if limited else math.inf
                had = taken.get(board, 0)
                k = min(len(q), quota, limit - len(out), MAX_BOARD_BATCH - had)
                if tokens < k:
                    k = int(tokens)
                if k > 0:
                    pop = q.popleft
                    out.extend(pop() for _ in range(k))
                    taken[board] = had + k
                    progress = True
                    if limited:
                        buckets[board] = (tokens - k, now)
                elif limited and tokens < 1.0:
                    wait = min(wait, (1.0 - tokens) / self.rate)
                if q:
                    order.append(board)
                else:
                    del queues[board]
                if len(out) >= limit:
                    break
        self._size -= len(out)
        if len(buckets) > _MAX_IDLE_BUCKETS:
            self._forget_full(now)
        return out, wait

    def _forget_full(self, now: float) -> None:
        for board in [b for b in self._buckets if b not in self._queues]:
            if self._tokens(board, now) >= self.burst:
                del self._buckets[board]

    def purge(self, board: bytes | None) -> list:
        """Take every message `board` has waiting out of the inbox (a quarantined board:
        its flood is dropped, not verified)."""
        with self._lock:
            q = self._queues.pop(board, None)
            if q is None:
                return []
            self._order.remove(board)
            self._size -= len(q)
            return list(q)

    def clear(self) -> None:
        with self._lock:
            self._queues.clear()
            self._order.clear()
            self._size = 0
