"""Ingest: the MQTT side of the gateway (paho-mqtt 2.x).

- Fixed client id and a persistent session: MQTT 3.1.1 with
  clean_session=False (the default: paho parses 3.1.1 PUBLISH packets about
  30% faster than v5 ones, which carry properties), or MQTT v5 with
  clean_start=False, a session expiry and a Receive Maximum. Either way the
  broker keeps the gateway's subscription and queues QoS 1 readings while it
  is down. With 3.1.1 the broker's max_inflight_messages bounds the readings
  in flight to the gateway (the generated mosquitto.conf sets 1000).
- manual_ack: paho would PUBACK a QoS 1 message as soon as on_message
  returns; here the PUBACK is sent only by `ack()`, which the server calls
  after the reading's transaction has committed. A gateway killed at any
  point therefore gets every uncommitted reading again from the broker.
- on_message only parses the topic and puts a `Message` on the bounded, fair
  inbox (inbox.py: per-board token bucket and share, before any decode or
  signature check). When the inbox is full it blocks (backpressure: the
  broker holds the rest, and at most receive_maximum readings are in flight).
  A message from a board that is over its rate AND already has its share
  waiting is dropped here: PUBACKed at once (so a flood never pins the
  broker's in-flight slots), never ACKed to the board, counted in `dropped`
  and logged (rate-limited). The board still has that reading in its outbox
  and sends it again after its ACK timeout. A board's status messages are
  parsed at most about once a second (STATUS_BURST at once).
- A board that admission keeps dropping (`quarantine_drops` within
  `quarantine_window` s) is quarantined at the broker (quarantine.py): Mosquitto
  disconnects it and refuses it for a cooldown, so its flood stops costing the
  receive path here; what it sent before, still draining from the broker,
  is dropped on arrival. The commands go out on this connection (the gateway user
  may write `$CONTROL/dynamic-security/v1`), the answers come back on it.
- Each connection has a generation number; a PUBACK is sent only for a
  message of the current connection (after a reconnect the broker resends
  the unacknowledged ones with the same ids, and those get acked instead).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from terrapin.gateway.inbox import Inbox
from terrapin.gateway.logs import RateLimitedLog
from terrapin.gateway.protocol.topics import READING_FILTER, STATUS_FILTER, topic_address
from terrapin.gateway.quarantine import CONTROL_TOPIC, RESPONSE_TOPIC, Quarantine

log = logging.getLogger("terrapin.gateway.ingest")

# A board's status messages: up to STATUS_BURST at once, then one per STATUS_INTERVAL s
# are parsed; the rest are PUBACKed and skipped (the status is unsigned and advisory).
STATUS_BURST = 5.0
STATUS_INTERVAL = 1.0


@dataclass(slots=True)
class Message:
    topic: str
    address: bytes | None  # from the topic; None when the topic is not a board address
    payload: bytes
    mid: int
    qos: int
    generation: int
    received_at: float


class Ingest:
    """Connects, subscribes, feeds `out` and sends PUBACKs / ACK publishes on request."""

    def __init__(self, mqtt_cfg, password: str, out: Inbox, *, on_status=None):
        self.cfg = mqtt_cfg
        self.out = out
        self.on_status = on_status
        self.generation = 0
        self.connected = threading.Event()
        self.connects = 0
        self._stopping = False
        # Admission drops (over rate and share), per board (None: topic without one).
        self.dropped: dict[bytes | None, int] = {}
        self.dropped_total = 0
        self._drop_log = RateLimitedLog(log, 10.0)
        self._status_at: dict[bytes, tuple[float, float]] = {}  # board -> (tokens, at)
        self.v5 = mqtt_cfg.protocol == "5"
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=mqtt_cfg.client_id,
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            clean_session=None if self.v5 else False,
            manual_ack=True,
        )
        if mqtt_cfg.username:
            c.username_pw_set(mqtt_cfg.username, password or None)
        if mqtt_cfg.tls_ca:
            c.tls_set(ca_certs=mqtt_cfg.tls_ca)
        c.reconnect_delay_set(min_delay=1, max_delay=120)
        c.max_queued_messages_set(0)
        c.max_inflight_messages_set(100)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        c.on_message = self._on_message
        self.client = c
        self.quarantine: Quarantine | None = None
        if mqtt_cfg.quarantine_drops:
            self.quarantine = Quarantine(
                self._control,
                on_quarantine=self._purge,
                drops=mqtt_cfg.quarantine_drops,
                burst=mqtt_cfg.quarantine_burst,
                window=mqtt_cfg.quarantine_window,
                cooldown=mqtt_cfg.quarantine_seconds,
                max_cooldown=mqtt_cfg.quarantine_max_seconds,
            )

    # --- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        if self.v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.cfg.session_expiry
            props.ReceiveMaximum = min(self.cfg.receive_maximum, 65535)
            self.client.connect_async(
                self.cfg.host,
                self.cfg.port,
                keepalive=self.cfg.keepalive,
                clean_start=False,
                properties=props,
            )
        else:
            self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
        self.client.loop_start()
        if self.quarantine is not None:
            self.quarantine.start()

    def stop(self) -> None:
        """Disconnect; readings still queued are not acked and come again next time."""
        self._stopping = True
        self.out.clear()
        if self.quarantine is not None:
            self.quarantine.stop()
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    # --- callbacks (paho's network thread) -----------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        _nodelay(client)
        self.generation += 1
        self.connects += 1
        log.info(
            "connected to broker %s:%s (session present: %s)",
            self.cfg.host,
            self.cfg.port,
            flags.session_present,
        )
        group = getattr(self.cfg, "share_group", "")
        if group:  # several instances share the readings (docs/SCALE.md)
            client.unsubscribe(READING_FILTER)  # a session kept from before sharing
        readings = f"$share/{group}/{READING_FILTER}" if group else READING_FILTER
        client.subscribe([(readings, 1), (STATUS_FILTER, 1)])
        if self.quarantine is not None:
            client.subscribe(RESPONSE_TOPIC, 0)  # QoS 0: nothing to PUBACK
            self.quarantine.on_connect()
        self.connected.set()

    def _on_connect_fail(self, client, userdata):
        log.warning(
            "cannot reach the broker at %s:%s; retrying (1 s doubling to 120 s)",
            self.cfg.host,
            self.cfg.port,
        )

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected.clear()
        if not self._stopping:
            log.warning("disconnected from broker: %s; reconnecting", reason_code)

    def _on_message(self, client, userdata, msg):
        now = time.time()
        address, kind = topic_address(msg.topic)
        quarantine = self.quarantine
        if kind == "reading" and quarantine is not None and address is not None:
            quarantine.note_arrival(address, now)
            if address in quarantine.active:
                # Shut out at the broker: what it had sent before is dropped as it drains,
                # never verified in front of the other boards' readings.
                self._drop(address, now)
                kind = ""  # PUBACKed below, not ACKed
        if kind == "reading":
            m = Message(msg.topic, address, msg.payload, msg.mid, msg.qos, self.generation, now)
            while True:  # blocks when full: backpressure
                try:
                    if self.out.put(m, timeout=0.5, board=address):
                        return
                    self._drop(address, now)  # over rate and share: PUBACKed below, not ACKed
                    break
                except queue.Full:
                    if self._stopping:
                        return  # never acked: the broker redelivers it next session
        elif kind == "status" and address is not None and self._status_due(address, now):
            self.on_status(address, _parse_status(msg.payload), now)
        elif msg.topic == RESPONSE_TOPIC and self.quarantine is not None:
            self.quarantine.on_response(msg.payload)
        if msg.qos:
            client.ack(msg.mid, msg.qos)

    def _status_due(self, address: bytes, now: float) -> bool:
        """A bucket of STATUS_BURST status parses per board, one more each
        STATUS_INTERVAL: a flood of status messages is skipped, an honest
        offline/online pair is not."""
        if self.on_status is None:
            return False
        tokens, at = self._status_at.get(address, (STATUS_BURST, now))
        tokens = min(STATUS_BURST, tokens + (now - at) / STATUS_INTERVAL)
        if tokens < 1.0:
            return False
        self._status_at[address] = (tokens - 1.0, now)
        return True

    def _drop(self, address: bytes | None, now: float) -> None:
        if address is not None and self.quarantine is not None:
            self.quarantine.note_drop(address, now)
        n = self.dropped.get(address, 0) + 1
        self.dropped[address] = n
        self.dropped_total += 1
        self._drop_log.warning(
            "admission",
            "dropped before decode: board over its admission rate and inbox share",
            board=address.hex() if address else None,
            dropped=n,
        )

    def _purge(self, address: bytes) -> None:
        """A board just quarantined: what it has waiting in the inbox is dropped (PUBACKed,
        never ACKed, like any admission drop), not verified at the other boards' expense."""
        purged = self.out.purge(address)
        if purged:
            self.dropped[address] = self.dropped.get(address, 0) + len(purged)
            self.dropped_total += len(purged)
            self.ack_many(purged)

    # --- called by the server after COMMIT ----------------------------------------

    def ack(self, m: Message) -> None:
        """PUBACK one reading to the broker (only after it is committed)."""
        if m.qos and m.generation == self.generation:
            self.client.ack(m.mid, m.qos)

    def ack_many(self, messages: list[Message]) -> None:
        """PUBACK a committed batch (only messages of the current connection).

        paho's public `ack()`, one PUBACK each: paho writes what is queued in
        order, so these follow the ACK publishes queued before them."""
        gen = self.generation
        ack = self.client.ack
        for m in messages:
            if m.qos and m.generation == gen:
                ack(m.mid, m.qos)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1)

    def _control(self, payload: bytes) -> None:
        """A command to the broker's dynamic security plugin (quarantine.py)."""
        self.client.publish(CONTROL_TOPIC, payload, qos=1)


def _nodelay(client) -> None:
    """TCP_NODELAY: an ACK or a PUBACK is a small write that must not wait for
    Nagle + the peer's delayed ACK (~40 ms each way)."""
    sock = client.socket()
    if sock is not None:
        with contextlib.suppress(OSError):  # not TCP (e.g. a websocket wrapper)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _parse_status(payload: bytes) -> dict:
    if payload == b"offline":
        return {"state": "offline"}
    try:
        obj = json.loads(payload[:4096])
    except (ValueError, RecursionError):  # RecursionError: `[[[...` from a hostile board
        return {"state": "unreadable"}
    if not isinstance(obj, dict):
        return {"state": "unreadable"}
    # Only short scalar fields: the status is unsigned and shown on the API.
    out = {}
    for k, v in list(obj.items())[:20]:
        if isinstance(k, str) and len(k) <= 32:
            if isinstance(v, bool | int | float) or v is None:
                out[k] = v
            elif isinstance(v, str):
                out[k] = v[:200]
            elif isinstance(v, list):
                out[k] = [str(x)[:200] for x in v[:10]]
    return out
