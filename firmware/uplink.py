# The uplink: keeps one MQTT session up and drains the outbox through it.
#
# Supervisor: while the session is down, step() opens it again in steps, one
# non-blocking look per pass of the main loop, each state with a deadline:
#
#   DOWN     backoff: wait for next_try
#   NET      board.network_up(): WiFi joined (ESP32)              _NET_MS
#   SOCKET   board.open_socket(), then link.opened(): TCP connect  _SOCKET_MS
#            (TLS wrapped) or the serial link's `TPX K`
#   CONNACK  CONNECT written (a TLS handshake runs in these        _CONNACK_MS
#            writes on MicroPython), CONNACK read (mqtt.connack)
#   SUBACK   SUBSCRIBE to the ack and OTA topics, their SUBACKs    _SUBACK_MS
#   UP       publish the status, drain the outbox
#
# CONNECT carries the last will `offline` on the retained status topic. Any
# MQTT or socket error, or a deadline passed, drops the session; reconnects
# back off exponentially with jitter: 1 s doubling to `backoff_max_s`, each
# wait drawn from [d/2, d]. The MQTT client itself never retries. Meanwhile
# the main loop keeps sampling, signing, storing and polling the console.
#
# Drain: entries are published from the outbox in sequence order, at most
# `window` unacknowledged at a time. An entry leaves the window (and the
# outbox) only when the gateway's application ACK lists it as stored or
# rejected; an MQTT PUBACK only means the broker has it. After `ack_timeout_s`
# without an application ACK the entry is published again: same packet id
# with DUP=1 if the broker never PUBACKed it, else as a new publish.
#
# Order. The broker drops a publish nobody is subscribed to (a gateway that is
# reconnecting, a broker restarted without the gateway's session), and it
# keeps no order between the board's resends and its new readings. So after
# a (re)connect, and when an entry's ACK times out, the uplink "probes": only
# the oldest unacknowledged entry is in flight (a new one if the window is
# empty), resent at each timeout, until the gateway acks it. Then the rest of
# the window is resent in sequence order, and only then is anything newer
# published. First deliveries therefore reach the gateway in sequence order
# (go-back-N with a one-entry probe), at the cost of one round trip after an
# outage.

import gc
import random

from . import ack, mqtt
from .compat import const, ticks_add, ticks_diff, ticks_ms
from .mqtt import MQTTError, MQTTTimeout
from .outbox import RECORD_HEAD

# Opening states (see the top) and how long each may take.
_DOWN = const(0)
_NET = const(1)
_SOCKET = const(2)
_CONNACK = const(3)
_SUBACK = const(4)
_UP = const(5)
_NET_MS = const(30000)  # a backstop: the board's own join gives up sooner (wifijoin.py)
_SOCKET_MS = const(10000)
_CONNACK_MS = const(10000)
_SUBACK_MS = const(10000)
_OPEN_STEP_MS = const(20)  # how soon the main loop looks at a session being opened again
_WAITING_FOR = ("", "no network", "no connection", "no CONNACK", "no SUBACK")

# A window slot: [seq, segno, off, length, pid, sent_at (None: send now), pubacked]
_SEQ = const(0)
_SEG = const(1)
_OFF = const(2)
_LEN = const(3)
_PID = const(4)
_SENT = const(5)
_PUBACKED = const(6)


def backoff_delay(current, rand):
    # Jittered wait for a backoff step of `current` ms: uniform in [d/2, d].
    return current // 2 + int(rand * (current // 2))


class Uplink:
    ota = None  # an update in progress (firmware/ota_mqtt.py, loaded only then)

    def __init__(self, board, cfg, addr_hex, outbox, app):
        self.board = board
        self.outbox = outbox
        self.app = app
        self.broker = broker = cfg["broker"]
        base = "terrapin/v1/" + addr_hex + "/"
        self.t_reading = (base + "reading").encode()
        self.t_status = (base + "status").encode()
        self.t_ack = (base + "ack").encode()
        self.client = c = mqtt.MQTTClient(
            "tp-" + addr_hex,
            broker["keepalive_s"],
            broker["user"],
            broker["password"],
            self._on_message,
            self._on_puback,
        )
        c.will = (self.t_status, b"offline", True)
        self.window_size = cfg["window"]
        self.ack_timeout = int(cfg["ack_timeout_s"] * 1000)
        self.status_period = int(cfg["status_period_s"] * 1000)
        self.backoff_max = int(cfg["backoff_max_s"] * 1000)
        self.backoff = 1000
        self.window = []
        self.probe = True  # only the oldest entry in flight (see the top)
        self.cursor = (0, 0)
        self.state = _DOWN
        self.link = None  # the board's link being opened (SOCKET state)
        self.next_try = self.open_until = ticks_ms()
        self.open_ms = 0  # the deadline of the state being opened
        self.status_at = 0
        self.status_due = True
        self.last_error = None
        self.last_pid = 0
        self.published = self.republished = self.acked = self.rejected = 0
        self.connects = self.bad_acks = 0

    # -- supervisor ----------------------------------------------------------

    def step(self):
        # Do what is due now: a step of (re)connecting, publish, republish, status.
        now = ticks_ms()
        if self.state != _UP:
            self._open_step(now)
            return
        if not self.client.connected:  # closed under us (the app's MemoryError handler)
            self.state = _DOWN
            return
        try:
            self._fill(now)
            if self.status_due or ticks_diff(now, self.status_at) >= self.status_period:
                self.publish_status()
            if self.ota is not None:
                self.ota.step(now)
        except (MQTTError, OSError) as exc:
            self._lost("connection lost", exc)

    def poll(self, timeout_ms):
        # Wait up to timeout_ms for packets from the broker (or just sleep).
        state = self.state
        c = self.client
        try:
            if state == _UP and c.connected:
                c.poll(timeout_ms)
            elif (state == _CONNACK or state == _SUBACK) and c.sock is not None:
                c.poller.poll(timeout_ms)  # wake when the broker answers
            elif timeout_ms > 0:
                self.board.sleep_ms(timeout_ms)
        except (MQTTError, OSError) as exc:
            self._lost("connection lost", exc)

    def wait_ms(self):
        # How long the caller may wait before step() has work.
        now = ticks_ms()
        if self.state != _UP:
            if self.state == _DOWN:
                return max(0, ticks_diff(self.next_try, now))
            return _OPEN_STEP_MS
        window = self.window
        n = len(window)
        if n < (1 if self.probe else self.window_size) and self.outbox.pending > n:
            return 0
        wait = self.status_period - ticks_diff(now, self.status_at)
        for i in range(1 if self.probe and n else n):
            slot = window[i]
            if slot[_SENT] is None:
                return 0
            left = self.ack_timeout - ticks_diff(now, slot[_SENT])
            if left < wait:
                wait = left
        if self.ota is not None:
            wait = min(wait, self.ota.wait_ms(now))
        return max(0, wait)

    def wait_open(self, timeout_ms):
        # One attempt at opening, stepped until the session is up or failed
        # (at most timeout_ms): for a board that only reports and stops
        # (app.py's config errors), never from the main loop. True when up.
        t0 = ticks_ms()
        self.step()
        while self.state not in (_UP, _DOWN) and ticks_diff(ticks_ms(), t0) < timeout_ms:
            self.board.sleep_ms(_OPEN_STEP_MS)
            self.step()
        return self.state == _UP

    def _enter(self, state, now, deadline_ms):
        self.state = state
        self.open_ms = deadline_ms
        self.open_until = ticks_add(now, deadline_ms)

    def _open_step(self, now):
        # One non-blocking step of opening the session (the states at the top).
        b = self.broker
        if self.state == _DOWN:
            if ticks_diff(now, self.next_try) < 0:
                return
            self.board.led_state("connecting")
            self._enter(_NET, now, _NET_MS)
        try:
            if ticks_diff(now, self.open_until) >= 0:
                raise MQTTTimeout("%s within %d ms" % (_WAITING_FOR[self.state], self.open_ms))
            if self.state == _NET:
                if not self.board.network_up():
                    return
                self.link = self.board.open_socket(b["host"], b["port"], b["tls"], b["ca_file"])
                self._enter(_SOCKET, now, _SOCKET_MS)
            if self.state == _SOCKET:
                link = self.link
                if not link.opened():
                    return
                # A TCP link hands over its (TLS) socket; a serial link is the stream.
                self.client.start(getattr(link, "stream", link))
                self.link = None
                self._enter(_CONNACK, now, _CONNACK_MS)
            if self.state == _CONNACK:
                if not self.client.connack():
                    return
                c = self.client
                c.subscribe(self.t_ack)
                # Firmware updates over MQTT (ota_mqtt.py): offers and chunks for this board.
                c.subscribe(self.t_ack[:-3] + b"ota")
                c.subscribe(self.t_ack[:-3] + b"ota/chunk")
                self._enter(_SUBACK, now, _SUBACK_MS)
            self.client.poll(0)  # SUBACK state: the broker's answers
            if self.client.subacks:
                return
        except MemoryError:
            raise
        except Exception as exc:  # OSError, MQTTError, TLS/CA errors (ValueError)
            self._lost("broker %s:%d unreachable" % (b["host"], b["port"]), exc)
            return
        self._up()

    def _up(self):
        # The session is open: resend the window from a probe, publish the status.
        self.state = _UP
        self.connects += 1
        self.backoff = 1000
        self.last_error = None
        for slot in self.window:
            slot[_SENT] = None  # send again
            slot[_PID] = 0  # as a new publish
        self.probe = True  # the gateway may not be subscribed yet
        b = self.broker
        self.app.log("info", "connected to %s:%d" % (b["host"], b["port"]))
        self.board.led_state("online")
        self.status_due = True

    def _lost(self, what, exc):
        if self.link is not None:
            self.link.close()
            self.link = None
        self.client.close()
        self.state = _DOWN
        delay = backoff_delay(self.backoff, random.getrandbits(16) / 65536)
        self.backoff = min(self.backoff * 2, self.backoff_max)
        self.next_try = ticks_add(ticks_ms(), delay)
        text = "%s: %s; retry in %d ms" % (what, _text(exc), delay)
        if text[:30] != (self.last_error or "")[:30]:
            self.app.log("error", text)
        self.last_error = text
        self.board.led_state("offline")

    def close(self, offline=True):
        # Disconnect cleanly (exit, deep sleep): DISCONNECT, so the broker
        # drops the last will; with offline, set the retained status to
        # `offline` first. Waits (up to 2 s) for the PUBACK of the last
        # publish, so nothing is cut off by the close.
        c = self.client
        try:
            if self.state == _UP and c.connected and offline:
                self.last_pid = c.publish(self.t_status, b"offline", 1, True)
            t0 = ticks_ms()
            while c.connected and self.last_pid and ticks_diff(ticks_ms(), t0) < 2000:
                c.poll(20)
        except (MQTTError, OSError):
            pass
        if self.link is not None:
            self.link.close()
            self.link = None
        c.close(True)
        self.state = _DOWN

    # -- publishing ----------------------------------------------------------

    def publish_status(self):
        payload = self.app.status()
        self.last_pid = self.client.publish(self.t_status, payload, 1, True)
        self.app.status_published(payload)
        self.status_at = ticks_ms()
        self.status_due = False

    def _fill(self, now):
        window = self.window
        timeout = self.ack_timeout
        if not self.probe:
            for slot in window:
                if slot[_SENT] is not None and ticks_diff(now, slot[_SENT]) >= timeout:
                    # Go back: probe with the oldest, then resend all in order.
                    for s in window:
                        s[_SENT] = None
                    self.probe = True
                    break
        if self.probe:
            while window:
                slot = window[0]
                if slot[_SENT] is not None and ticks_diff(now, slot[_SENT]) < timeout:
                    return
                if self._resend(slot):
                    return
            self._publish_new(min(1, self.window_size))  # empty window: a new entry probes
            return
        i = 0
        while i < len(window):
            if window[i][_SENT] is None and not self._resend(window[i]):
                continue  # removed
            i += 1
        self._publish_new(self.window_size)

    def _publish_new(self, limit):
        window = self.window
        outbox = self.outbox
        while len(window) < limit:
            got = outbox.next_entry(self.cursor[0], self.cursor[1])
            if got is None:
                return
            segno, off, seq, n = got
            self.cursor = (segno, off + RECORD_HEAD + n)
            pid = self.client.publish(self.t_reading, outbox.envelope(n), 1)
            window.append([seq, segno, off, n, pid, ticks_ms(), False])
            self.published += 1

    def _resend(self, slot):
        got = self.outbox.read(slot[_SEG], slot[_OFF])
        if got is None or got[0] != slot[_SEQ]:
            # Dropped by the full policy (already counted), or unreadable now:
            # release it so the pending count cannot leak.
            self.window.remove(slot)
            self.outbox.release(slot[_SEG])
            return False
        self.republished += 1
        env = self.outbox.envelope(got[1])
        if slot[_PID] and not slot[_PUBACKED]:
            self.client.publish(self.t_reading, env, 1, False, slot[_PID])  # DUP
        else:
            slot[_PID] = self.client.publish(self.t_reading, env, 1)
            slot[_PUBACKED] = False
        slot[_SENT] = ticks_ms()
        return True

    # -- incoming --------------------------------------------------------------

    def _on_puback(self, pid):
        if pid == self.last_pid:
            self.last_pid = 0
        for slot in self.window:
            if slot[_PID] == pid:
                slot[_PUBACKED] = True
                return

    def _on_message(self, topic, payload):
        if bytes(topic) != self.t_ack:
            if self.ota is not None or bytes(topic[-4:]) == b"/ota":
                if self.ota is None:  # an offer: collect here, not deep in the import
                    gc.collect()
                try:  # firmware/ota_mqtt.py is imported only for an update
                    from .ota_mqtt import on_message

                    on_message(self, bytes(topic), payload)
                except MemoryError:
                    self.ota = None
                    self.app.error("ota: not enough memory for an update")
            return
        try:
            ranges, rejections = ack.decode(payload)
        except ack.AckError as exc:
            self.bad_acks += 1
            self.app.log("error", "bad ack ignored: %s" % exc)
            return
        if not self.app.confirmed:
            self.app.acked()
        window = self.window
        head = window[0] if window else None
        i = 0
        while i < len(window):
            slot = window[i]
            verdict = ack.covers(ranges, rejections, slot[_SEQ])
            if verdict is None:
                i += 1
                continue
            window.pop(i)
            self.outbox.release(slot[_SEG])
            if verdict:
                self.rejected += 1
                self.app.error(
                    "gateway rejected seq %d: %s" % (slot[_SEQ], ack.reason_name(verdict))
                )
            else:
                self.acked += 1
        if head is not None and (not window or window[0] is not head):
            self.probe = False  # the oldest is stored: the path works again


def _text(exc):
    args = exc.args
    if isinstance(exc, OSError) and args and isinstance(args[0], int):
        if len(args) > 1:
            return "OSError %d: %s" % (args[0], args[1])
        return "OSError %d" % args[0]
    return str(exc) or type(exc).__name__
