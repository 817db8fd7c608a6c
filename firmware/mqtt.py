# A small MQTT 3.1.1 client for the board (and for tests on CPython).
#
# Why not umqtt.simple: it blocks in wait_msg(), checks the wire with
# `assert` (a bad packet gives no typed error), has no non-blocking poll into
# a preallocated buffer, and cannot resend an unacknowledged QoS 1 publish
# with the DUP flag; umqtt.robust adds retries inside the client. Here the
# client only speaks the protocol and raises typed errors; the supervisor in
# uplink.py owns reconnects, backoff and republishing.
#
# The socket is passed in (connected, TLS-wrapped if configured), so the same
# code runs on the unix port, an ESP32 and CPython. A session starts in steps
# (start, then connack until it says True), so a board's main loop never
# waits for a broker; connect() is the blocking form for host tools. Input goes into one
# preallocated bytearray through a memoryview; each outgoing packet is built
# in another and sent with one write.
#
# CONNECT (clean session, keepalive, last will, user/password), PUBLISH QoS
# 0/1 both ways with PUBACK, DUP on resend, SUBSCRIBE, PINGREQ. No QoS 2.
# The client owns every packet it speaks, CONNECT included.

import select
import struct

from .compat import const, ticks_diff, ticks_ms
from .sockerr import BUSY as _BUSY

_RX = const(512)  # an ACK is < 100 bytes; a larger packet is read and dropped
_SKIP_MAX = const(16384)  # a packet larger than this breaks the session
_TX = const(400)  # headers and CONNECT; payloads are written from their own buffer


class MQTTError(Exception):
    # Base of every error this client raises; the session is unusable after it.
    pass


class MQTTConnectError(MQTTError):
    # CONNACK refused: args[1] is the return code (4 bad user/password, 5 not authorised).
    pass


class MQTTTimeout(MQTTError):
    # No CONNACK or PINGRESP in time, or a write blocked too long.
    pass


def _blocked(exc):
    # EAGAIN, EINPROGRESS, EALREADY, ETIMEDOUT with this platform's numbers (sockerr.py).
    return exc.args and exc.args[0] in _BUSY


class MQTTClient:
    def __init__(
        self, client_id, keepalive=60, user=None, password=None, on_message=None, on_puback=None
    ):
        self.client_id = client_id
        self.keepalive = keepalive
        self.user = user
        self.password = password
        self.on_message = on_message
        self.on_puback = on_puback
        self.will = None
        self.sock = None
        self.write = self.readinto = self.poller = None  # set by connect()
        self.connected = False
        self.rx = bytearray(_RX)
        self.rxv = memoryview(self.rx)
        self.n = 0
        self.skip = 0  # bytes of an oversized packet still to drop
        self.oversize = 0  # packets dropped for their size
        self.tx = bytearray(_TX)
        self.txv = memoryview(self.tx)
        self.pid = 0
        self.sent_at = 0
        self.ping_at = None
        self.out = self.tx_at = 0  # CONNECT bytes not written yet (start, connack)
        self.subacks = 0  # SUBSCRIBEs not answered yet

    def _send(self, n, mv=None):
        # Write the first n bytes of mv (default: the transmit buffer).
        if mv is None:
            mv = self.txv
        done = 0
        t0 = ticks_ms()
        while done < n:
            try:
                k = self.write(mv[done:n])
            except OSError as exc:
                if not _blocked(exc):
                    self.connected = False
                    raise MQTTError("write: %r" % (exc,))
                k = None
            if k:
                done += k
            elif ticks_diff(ticks_ms(), t0) > 10000:
                raise MQTTTimeout("write blocked")
            else:
                self.poller.poll(20)
        self.sent_at = ticks_ms()

    def _head(self, first, length):
        # Fixed header at the start of tx; returns where the body starts.
        self.tx[0] = first
        i = 1
        while True:
            b = length & 0x7F
            length >>= 7
            self.tx[i] = b | (0x80 if length else 0)
            i += 1
            if not length:
                return i

    def _str(self, i, data):
        if isinstance(data, str):
            data = data.encode()
        n = len(data)
        if i + 2 + n > _TX:
            raise MQTTError("packet too large")
        struct.pack_into("!H", self.tx, i, n)
        self.txv[i + 2 : i + 2 + n] = data
        return i + 2 + n

    def start(self, sock):
        # Begin a session over `sock`, a connected socket or stream: CONNECT
        # (clean session, keepalive, last will, user/password) is built here
        # and written by connack(), which the caller steps until the broker
        # answers. Nothing here waits: a TLS socket still shaking hands just
        # takes the bytes later (its handshake runs inside those writes).
        self.sock = sock
        self.n = self.skip = 0
        self.ping_at = None
        self.subacks = 0
        self.write = getattr(sock, "write", None) or sock.send
        self.readinto = getattr(sock, "readinto", None) or sock.recv_into
        sock.setblocking(False)
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)
        parts = [self.client_id]
        flags = 2
        if self.will:
            topic, msg, retain = self.will
            flags |= 0x0C | (0x20 if retain else 0)  # will flag, will QoS 1
            parts += [topic, msg]
        if self.user is not None:
            flags |= 0x80
            parts.append(self.user)
            if self.password is not None:
                flags |= 0x40
                parts.append(self.password)
        size = 10
        for p in parts:
            size += 2 + len(p)
        i = self._head(0x10, size)
        self.txv[i : i + 7] = b"\x00\x04MQTT\x04"
        self.tx[i + 7] = flags
        struct.pack_into("!H", self.tx, i + 8, self.keepalive)
        i += 10
        for p in parts:
            i = self._str(i, p)
        self.out = i  # CONNECT bytes still to write, from tx[tx_at]
        self.tx_at = 0

    def connack(self):
        # One non-blocking step of the session's start: write what the socket
        # takes of CONNECT, then look for CONNACK. True once the broker
        # accepted; False while it may still (the caller owns the deadline);
        # MQTTConnectError if it refused, MQTTError on a broken socket.
        while self.out:
            try:
                k = self.write(self.txv[self.tx_at : self.tx_at + self.out])
            except OSError as exc:
                if not _blocked(exc):
                    raise MQTTError("write: %r" % (exc,))
                k = None
            if not k:
                return False
            self.tx_at += k
            self.out -= k
            self.sent_at = ticks_ms()
        self._fill()
        got = self._packet()
        if not got:
            return False
        kind, at, size = got
        if kind != 0x20 or size != 2:
            raise MQTTError("expected CONNACK")
        code = self.rx[at + 1]
        self._drop(at + size)
        if code:
            raise MQTTConnectError("broker refused the connection", code)
        self.connected = True
        return True

    def connect(self, sock, timeout_ms=10000):
        # start() and connack() until the broker answers (host tools and
        # tests; the board steps them from its main loop, uplink.py).
        self.start(sock)
        t0 = ticks_ms()
        while not self.connack():
            left = timeout_ms - ticks_diff(ticks_ms(), t0)
            if left <= 0:
                raise MQTTTimeout("no CONNACK")
            self.poller.poll(min(left, 100))

    def close(self, goodbye=False):
        # Close the socket; with goodbye, send DISCONNECT first (no last will).
        if goodbye and self.connected:
            try:
                self._send(self._head(0xE0, 0))
                # Read what is left: closing with unread input sends a TCP RST,
                # which can make the broker drop our last packets.
                self.n = 0
                while self._fill():
                    self.n = 0
            except (MQTTError, OSError):
                pass
        self.connected = False
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    def publish(self, topic, msg, qos=0, retain=False, pid=0):
        # PUBLISH; returns the packet id. Giving `pid` resends it with DUP=1.
        dup = 8 if pid else 0
        if qos and not pid:
            self.pid = pid = self.pid % 65535 + 1
        i = self._head(
            0x30 | dup | (qos << 1) | (1 if retain else 0),
            2 + len(topic) + (2 if qos else 0) + len(msg),
        )
        i = self._str(i, topic)
        if qos:
            struct.pack_into("!H", self.tx, i, pid)
            i += 2
        self._send(i)
        self._send(len(msg), memoryview(msg))  # the payload is not copied
        return pid

    def subscribe(self, topic):
        # SUBSCRIBE at QoS 1; `subacks` counts those the broker has not
        # answered yet (a refusal in SUBACK raises from poll()).
        self.pid = pid = self.pid % 65535 + 1
        i = self._head(0x82, 5 + len(topic))
        struct.pack_into("!H", self.tx, i, pid)
        i = self._str(i + 2, topic)
        self.tx[i] = 1
        self._send(i + 1)
        self.subacks += 1

    def _fill(self):
        skip = self.skip
        if skip:
            mv = self.rxv[: skip if skip < _RX else _RX]
        elif self.n >= _RX:
            return 0
        else:
            mv = self.rxv[self.n :]
        try:
            k = self.readinto(mv)
        except OSError as exc:
            if _blocked(exc):
                return 0
            self.connected = False
            raise MQTTError("read: %r" % (exc,))
        if k is None:
            return 0
        if not k:
            self.connected = False
            raise MQTTError("connection closed by the broker")
        if skip:
            self.skip = skip - k  # dropped
        else:
            self.n += k
        return k

    def _packet(self):
        # (first byte, body offset, body size) of a complete packet, or None.
        rx = self.rx
        size = 0
        shift = 0
        i = 1
        while True:
            if i >= self.n:
                return None
            b = rx[i]
            size |= (b & 0x7F) << shift
            i += 1
            if not b & 0x80:
                break
            shift += 7
            if i > 4:
                raise MQTTError("bad remaining length")
        if i + size > _RX:
            if size > _SKIP_MAX:
                raise MQTTError("packet of %d bytes is too large" % size)
            # Larger than any ACK: read past it and carry on (its sender
            # repeats what matters: an unacked reading is published again).
            self.oversize += 1
            self.skip = i + size - self.n
            self.n = 0
            return None
        if i + size > self.n:
            return None
        return rx[0], i, size

    def _drop(self, end):
        left = self.n - end
        if left:
            self.rxv[0:left] = self.rxv[end : self.n]
        self.n = left

    def poll(self, timeout_ms=0):
        # Handle what the broker sent, waiting up to timeout_ms for it.
        #
        # Calls on_message(topic, payload) with memoryviews valid during the
        # call, and on_puback(pid). Sends PINGREQ when the link is idle.
        if self.sock is None:
            raise MQTTError("not connected")
        if timeout_ms > 0 and not self._packet():
            self.poller.poll(timeout_ms)
        while True:
            got = self._packet()
            if not got:
                if not self._fill():
                    break
                continue
            kind, at, size = got
            rx = self.rx
            end = at + size
            t = kind & 0xF0
            if t == 0x30:  # PUBLISH
                qos = (kind >> 1) & 3
                tlen = (rx[at] << 8) | rx[at + 1]
                body = at + 2 + tlen + (2 if qos else 0)
                if qos > 1 or body > end:
                    raise MQTTError("bad PUBLISH")
                pid = (rx[body - 2] << 8) | rx[body - 1]
                if self.on_message:
                    self.on_message(self.rxv[at + 2 : at + 2 + tlen], self.rxv[body:end])
                self._drop(end)
                if qos:
                    i = self._head(0x40, 2)
                    struct.pack_into("!H", self.tx, i, pid)
                    self._send(i + 2)
            elif t == 0x40 and size == 2:  # PUBACK
                pid = (rx[at] << 8) | rx[at + 1]
                self._drop(end)
                if self.on_puback:
                    self.on_puback(pid)
            elif t == 0x90 and size >= 3:  # SUBACK
                refused = rx[at + 2] == 0x80
                self._drop(end)
                if self.subacks:
                    self.subacks -= 1
                if refused:
                    raise MQTTError("subscription refused (broker ACL?)")
            elif t == 0xD0:  # PINGRESP
                self._drop(end)
                self.ping_at = None
            else:
                raise MQTTError("unexpected packet 0x%02x" % kind)
        if self.keepalive:
            now = ticks_ms()
            period = self.keepalive * 1000
            if self.ping_at is not None and ticks_diff(now, self.ping_at) > period:
                self.connected = False
                raise MQTTTimeout("no PINGRESP within the keepalive")
            if ticks_diff(now, self.sent_at) >= period // 2:
                self._send(self._head(0xC0, 0))
                if self.ping_at is None:
                    self.ping_at = now
