"""A TCP proxy the test controls: latency, loss, partition between a board and its broker.

The portable way to hurt a link without root: the board's config names the
proxy's port instead of the broker's, and the test turns the knobs.

    proxy = NetProxy(("127.0.0.1", broker_port)).start()
    proxy.set(delay_ms=80, jitter_ms=20, loss=0.05)   # latency and loss
    proxy.partition()                                # blackhole, existing links cut
    proxy.heal()

TCP never loses bytes, so packet loss is modelled as what it does to a TCP
stream: a lost segment is retransmitted after a timeout (RTO 200 ms doubling,
as Linux does), which stalls everything behind it. Order is always kept.
A partition blackholes the link: connections made during it are accepted but
nothing is forwarded (a board sees timeouts, not refusals, as behind a dead
WiFi access point); links that were up are cut when it starts. With
`refuse=True` new connections are closed at once instead (no network at all).
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections import deque

RTO_S = 0.2  # first retransmission timeout of a lost segment
RTO_MAX_S = 1.6  # cap of the doubling (Linux allows 120 s; tests want bounded stalls)


class _Pipe(threading.Thread):
    """One direction of one connection: read, schedule, deliver in order."""

    def __init__(self, proxy: NetProxy, src: socket.socket, dst: socket.socket, link: _Link):
        super().__init__(daemon=True, name="netproxy-pipe")
        self.proxy, self.src, self.dst, self.link = proxy, src, dst, link
        self.queue: deque[tuple[float, bytes]] = deque()
        self.cond = threading.Condition()
        self.writer = threading.Thread(target=self._deliver, daemon=True, name="netproxy-out")

    def run(self) -> None:
        self.writer.start()
        last = 0.0
        try:
            while True:
                data = self.src.recv(65536)
                if not data:
                    break
                p = self.proxy
                at = time.monotonic() + p.delay_s + random.uniform(0, p.jitter_s)
                rto = RTO_S
                while p.loss and p.rng.random() < p.loss:
                    at += rto
                    rto = min(rto * 2, RTO_MAX_S)
                    p.retransmits += 1
                last = max(last, at)  # keep the stream in order
                with self.cond:
                    self.queue.append((last, data))
                    self.cond.notify()
        except OSError:
            pass
        with self.cond:
            self.queue.append((last, b""))
            self.cond.notify()

    def _deliver(self) -> None:
        while True:
            with self.cond:
                while not self.queue:
                    self.cond.wait()
                at, data = self.queue.popleft()
            wait = at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if not data:
                self.link.close()
                return
            if self.link.held:
                return
            try:
                self.dst.sendall(data)
                self.proxy.bytes += len(data)
            except OSError:
                self.link.close()
                return


class _Link:
    def __init__(self, proxy: NetProxy, client: socket.socket):
        self.proxy = proxy
        self.client = client
        self.upstream: socket.socket | None = None
        self.held = proxy.partitioned
        self.closed = False

    def open(self) -> None:
        if self.held and self.proxy.refuse:
            self.close()  # no route: the connection dies at once
            return
        if self.held:
            return  # blackholed: accepted, never forwarded
        try:
            up = socket.create_connection(self.proxy.target, timeout=5)
        except OSError:
            self.close()
            return
        up.settimeout(None)
        for s in (self.client, up):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.upstream = up
        _Pipe(self.proxy, self.client, up, self).start()
        _Pipe(self.proxy, up, self.client, self).start()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for s in (self.client, self.upstream):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()


class NetProxy:
    """Listens on 127.0.0.1:<port>, forwards to `target` through the impairments."""

    def __init__(self, target: tuple[str, int], *, port: int = 0, seed: int | None = None):
        self.target = target
        self.rng = random.Random(seed)
        self.delay_s = self.jitter_s = 0.0
        self.loss = 0.0
        self.partitioned = False
        self.refuse = False
        self.connections = 0
        self.retransmits = 0
        self.bytes = 0
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", port))
        self._server.listen(64)
        self.host, self.port = self._server.getsockname()
        self._stop = False

    def start(self) -> NetProxy:
        threading.Thread(target=self._accept, daemon=True, name="netproxy-accept").start()
        return self

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            link = _Link(self, client)
            with self._lock:
                self._links = [x for x in self._links if not x.closed] + [link]
                self.connections += 1
            link.open()

    def set(self, *, delay_ms: float = 0, jitter_ms: float = 0, loss: float = 0.0) -> None:
        self.delay_s, self.jitter_s, self.loss = delay_ms / 1000, jitter_ms / 1000, loss

    def clear(self) -> None:
        self.set()

    def cut(self) -> None:
        """Close every open connection (both ends see the link drop)."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()

    def partition(self, *, refuse: bool = False) -> None:
        """Cut the link. Default: a blackhole (timeouts); refuse=True: connections
        close at once (the board's WiFi is down, or the broker host unreachable)."""
        self.refuse = refuse
        self.partitioned = True
        self.cut()

    def heal(self) -> None:
        self.partitioned = False
        self.cut()  # blackholed links die; the board reconnects through a live one

    def stop(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self._server.close()
        self.cut()
