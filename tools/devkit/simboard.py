"""The simulated board on CPython (the one every test, bench and `terrapin sim` uses):
sign, publish, collect ACKs.

A `SimBoard` behaves like the firmware's outbox on the wire: it publishes
signed envelopes QoS 1 on its reading topic, listens on its ack topic, and
`resend_unacked()` publishes again whatever has not been acked yet. Without
`start()` it is only a signer (the chain tests put its readings straight into a
gateway database). Envelopes, digests and addresses come from the gateway's
protocol core (terrapin.gateway.protocol), never a copy.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time

import paho.mqtt.client as mqtt
from coincurve import PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from terrapin.gateway.protocol.ack import decode_ack
from terrapin.gateway.protocol.envelope import build_envelope, decode_envelope
from terrapin.gateway.protocol.signature import address
from terrapin.gateway.protocol.topics import ack_topic, reading_topic

DEFAULT_RECORDS = (("temperature", "Cel", 21.5), ("humidity", "%RH", 48.25))
FIXED_TIME = 1_790_000_000  # readings with a known time (chain tests, vectors)


def new_key() -> bytes:
    return PrivateKey(os.urandom(32)).secret


def board_address(key: bytes) -> bytes:
    return address(PrivateKey(key).public_key.format(compressed=False))


def sign_range(key: bytes, seqs, t0: int | None = None) -> list[tuple[int, bytes]]:
    """(seq, envelope) for each seq, signed with `key` (used by the bench's pre-signing)."""
    t0 = int(time.time()) if t0 is None else t0
    pk = PrivateKey(key)
    return [
        (s, build_envelope(pk, s, t0 + s, (("temperature", "Cel", 20.0 + (s % 100) / 8.0),)))
        for s in seqs
    ]


class SimBoard:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        key: bytes | None = None,
        *,
        password: str | None = None,
        username: str | None = None,
        clean: bool = False,
    ):
        self.key = key or new_key()
        self.private = PrivateKey(self.key)
        self.public = self.private.public_key.format(compressed=False)
        self.address = address(self.public)
        self.hex = self.address.hex()
        self.topic = reading_topic(self.address)
        self.acked: set[int] = set()
        self.rejected: dict[int, int] = {}
        self.sent_at: dict[int, float] = {}
        self.ack_latency: dict[int, float] = {}
        self.outbox: dict[int, bytes] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.connected = threading.Event()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.hex,  # its user name: the id the broker binds to it anyway
            clean_session=clean,
            protocol=mqtt.MQTTv311,
        )
        c.username_pw_set(username or self.hex, password)
        c.max_inflight_messages_set(100)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_disconnect = lambda *a: self.connected.clear()
        c.reconnect_delay_set(0.2, 2)
        self.client = c
        self.host, self.port = host, port

    @classmethod
    def make(cls, rng: random.Random) -> SimBoard:
        """A board with a key from `rng` (reproducible tests); not connected."""
        return cls(key=rng.randbytes(32))

    @property
    def pubkey(self) -> bytes:
        return self.public

    def start(self, timeout: float = 10.0) -> SimBoard:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(timeout):
            raise TimeoutError(f"board {self.hex} could not connect to {self.host}:{self.port}")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            return
        sock = client.socket()
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(ack_topic(self.address), qos=1)
        self.connected.set()

    def _on_message(self, client, userdata, msg):
        now = time.monotonic()
        try:
            ranges, rejected = decode_ack(msg.payload)
        except ValueError:
            return
        with self._changed:
            for lo, hi in ranges:
                for s in range(lo, hi + 1):
                    if s not in self.acked and s in self.sent_at:
                        self.ack_latency[s] = now - self.sent_at[s]
                    self.acked.add(s)
                    self.outbox.pop(s, None)
            for s, r in rejected:
                self.rejected[s] = r
                self.outbox.pop(s, None)
            self._changed.notify_all()

    def envelope(self, seq: int, t: int | None = None, records=DEFAULT_RECORDS) -> bytes:
        return build_envelope(self.private, seq, int(time.time()) if t is None else t, records)

    def signed_reading(self, seq: int, t: int = FIXED_TIME) -> tuple[bytes, bytes]:
        """(COSE_Sign1 envelope, signed digest) of one temperature reading."""
        env = build_envelope(self.private, seq, t, (("temperature", "Cel", 21.5),))
        return env, decode_envelope(env).digest

    def publish(self, payload: bytes, seq: int | None = None, *, topic: str | None = None):
        if seq is not None:
            with self._lock:
                self.sent_at.setdefault(seq, time.monotonic())
                self.outbox[seq] = payload
        return self.client.publish(topic or self.topic, payload, qos=1)

    def resend_unacked(self) -> int:
        with self._lock:
            items = list(self.outbox.items())
        for _seq, env in items:
            self.client.publish(self.topic, env, qos=1)
        return len(items)

    def settled(self, seqs) -> bool:
        with self._lock:
            return all(s in self.acked or s in self.rejected for s in seqs)

    def wait_settled(self, seqs, timeout: float = 10.0) -> bool:
        seqs = list(seqs)
        deadline = time.monotonic() + timeout
        with self._changed:
            while not all(s in self.acked or s in self.rejected for s in seqs):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.2))
        return True
