# The uplink: keeps one MQTT session up and drains the outbox through it.
#
# Supervisor: while the session is down, step() reconnects (socket from the
# board layer, CONNECT with the last will `offline` on the retained status
# topic, SUBSCRIBE to the ack topic, publish the status) with capped
# exponential backoff and jitter: 1 s doubling to `backoff_max_s`, each wait
# drawn from [d/2, d]. Any MQTT or socket error just drops the session; the
# MQTT client itself never retries.
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

from . import ack
from .compat import const, ticks_add, ticks_diff, ticks_ms, unload
from .mqtt import MQTTError
from .outbox import RECORD_HEAD

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
        # Set up once per boot: the code is in session.py (see there).
        from . import session

        session.init_uplink(self, board, cfg, addr_hex, outbox, app)
        unload(session.__name__)

    # -- supervisor ----------------------------------------------------------

    def step(self):
        # Do what is due now: reconnect, publish, republish, status.
        now = ticks_ms()
        if not self.client.connected:
            if ticks_diff(now, self.next_try) >= 0:
                self._connect(now)
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
        if not self.client.connected:
            if timeout_ms > 0:
                self.board.sleep_ms(timeout_ms)
            return
        try:
            self.client.poll(timeout_ms)
        except (MQTTError, OSError) as exc:
            self._lost("connection lost", exc)

    def wait_ms(self):
        # How long the caller may wait before step() has work.
        now = ticks_ms()
        if not self.client.connected:
            return max(0, ticks_diff(self.next_try, now))
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

    def _connect(self, now):
        # Socket, CONNECT, SUBSCRIBE: reconnect-only code, in session.py. It
        # is unloaded once connected; while the broker cannot be reached it
        # stays (loading it again for every attempt churns the heap).
        from . import session

        try:
            session.uplink_connect(self)
        except MemoryError:
            unload(session.__name__)  # the app's handler needs its RAM back
            raise
        if self.client.connected:
            unload(session.__name__)

    def _lost(self, what, exc):
        self.client.close()
        delay = backoff_delay(self.backoff, random.getrandbits(16) / 65536)
        self.backoff = min(self.backoff * 2, self.backoff_max)
        self.next_try = ticks_add(ticks_ms(), delay)
        text = "%s: %s; retry in %d ms" % (what, _text(exc), delay)
        if text[:30] != (self.last_error or "")[:30]:
            self.app.log("error", text)
        self.last_error = text
        self.board.led_state("offline")

    def close(self, offline=True):
        # Disconnect cleanly (exit, deep sleep): session.py, loaded for it.
        from . import session

        session.close_uplink(self, offline)
        unload(session.__name__)

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
    if isinstance(exc, OSError) and exc.args and isinstance(exc.args[0], int):
        return "OSError %d" % exc.args[0]
    return str(exc) or type(exc).__name__
