"""The generated broker ACL for firmware updates over MQTT, on a real Mosquitto:
a board reads only its own offer and chunks and asks only for its own chunks;
only the OTA user offers and serves (not even the gateway user may); another
board can neither read nor inject anything for this board."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import pytest

from terrapin.gateway import mosquitto_conf as mc
from terrapin.tools.devkit.broker import Mosquitto

VICTIM = "11" * 20
OTHER = "22" * 20
GW = mc.GATEWAY_USER
OTA = mc.OTA_USER


class Client:
    def __init__(self, port: int, user: str, password: str, subs: list[str]):
        self.got: list[tuple[str, bytes]] = []
        self.ready = threading.Event()
        self.lock = threading.Lock()
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{user[:12]}-{id(self) & 0xFFFF:x}"
        )
        self.c.username_pw_set(user, password)
        self.subs = subs
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        if subs:
            assert self.ready.wait(10), f"{user} could not subscribe"
        else:
            deadline = time.monotonic() + 10
            while not self.c.is_connected() and time.monotonic() < deadline:
                time.sleep(0.02)

    def _on_connect(self, client, userdata, flags, reason, props) -> None:
        if self.subs:
            client.subscribe([(t, 1) for t in self.subs])

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.got.append((msg.topic, msg.payload))

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def topics(self) -> set[str]:
        with self.lock:
            return {t for t, _ in self.got}

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def broker(tmp_path, mosquitto_exe):
    users = {GW: "gw-pw", OTA: "ota-pw", VICTIM: "victim-pw", OTHER: "other-pw"}
    passwd = tmp_path / "passwd"
    for u, p in users.items():
        mc.set_user(passwd, u, p)
    acl = tmp_path / "acl"
    acl.write_text(mc.render_acl())
    b = Mosquitto(tmp_path / "mq", password_file=passwd, acl_file=acl, persistence=False)
    b.start()
    clients: list[Client] = []

    def connect(user: str, subs: list[str]) -> Client:
        c = Client(b.port, user, users[user], subs)
        clients.append(c)
        return c

    try:
        yield connect
    finally:
        for c in clients:
            c.close()
        b.stop()


def settle(*clients: Client, want: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and sum(len(c.got) for c in clients) < want:
        time.sleep(0.02)
    time.sleep(0.3)  # anything that should not arrive has had its chance


def test_ota_topics_acl(broker):
    base = f"terrapin/v1/{VICTIM}"
    victim = broker(VICTIM, [f"{base}/ota", f"{base}/ota/chunk"])
    publisher = broker(OTA, ["terrapin/v1/+/ota/get"])
    # The other board subscribes to everything of the victim's it might want.
    other = broker(OTHER, [f"{base}/ota", f"{base}/ota/chunk", f"{base}/ota/get"])
    gateway = broker(GW, [])

    # Allowed: the OTA publisher offers and serves, the victim asks.
    publisher.publish(f"{base}/ota", b'{"v":1}', retain=True)
    publisher.publish(f"{base}/ota/chunk", b"publisher chunk")
    victim.publish(f"{base}/ota/get", b"victim asks")
    # Refused: the other board injects an offer, a chunk and a request for the
    # victim; a board writes its own offer or chunks; the gateway user, which
    # only ingests, offers or serves anything; the publisher's chunk must not
    # reach the other board.
    other.publish(f"{base}/ota", b"forged offer", retain=True)
    other.publish(f"{base}/ota/chunk", b"forged chunk")
    other.publish(f"{base}/ota/get", b"forged request")
    victim.publish(f"{base}/ota/chunk", b"self-served chunk")
    victim.publish(f"{base}/ota", b"self offer", retain=True)
    gateway.publish(f"{base}/ota", b"gateway offer", retain=True)
    gateway.publish(f"{base}/ota/chunk", b"gateway chunk")
    settle(victim, publisher, other, want=3)

    assert sorted(victim.got) == [
        (f"{base}/ota", b'{"v":1}'),
        (f"{base}/ota/chunk", b"publisher chunk"),
    ]
    assert publisher.got == [(f"{base}/ota/get", b"victim asks")]
    assert other.got == []  # reads nothing of the victim's

    # The retained offer is still the publisher's (no forged one replaced it).
    late = broker(VICTIM, [f"{base}/ota"])
    settle(late, want=1)
    assert late.got == [(f"{base}/ota", b'{"v":1}')]


def test_acl_text_has_the_ota_lines():
    lines = mc.render_acl().splitlines()
    for line in (
        "pattern read terrapin/v1/%u/ota",
        "pattern read terrapin/v1/%u/ota/chunk",
        "pattern write terrapin/v1/%u/ota/get",
    ):
        assert line in lines, line
    ota = lines[lines.index(f"user {OTA}") :]
    for line in (
        "topic write terrapin/v1/+/ota",
        "topic write terrapin/v1/+/ota/chunk",
        "topic read terrapin/v1/+/ota/get",
        "topic read terrapin/v1/+/status",
    ):
        assert line in ota, line
    gateway = lines[lines.index(f"user {GW}") : lines.index(f"user {OTA}")]
    assert not [x for x in gateway if "/ota" in x], gateway
