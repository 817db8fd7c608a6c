"""Readings through a real Mosquitto (generated passwords + ACL) into the store."""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from pathlib import Path

import cbor2
import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from paho.mqtt.enums import CallbackAPIVersion

from terrapin.gateway.protocol.envelope import assemble, digest, encode_payload
from terrapin.gateway.protocol.reasons import Reason
from terrapin.gateway.protocol.signature import sign_digest
from terrapin.gateway.store import Store
from terrapin.tools.cli.gateway import gateway as gateway_cli
from terrapin.tools.devkit.simboard import SimBoard


def _api(home, path="/api/status"):
    with urllib.request.urlopen(f"http://127.0.0.1:{home.api_port}{path}", timeout=5) as r:
        body = r.read()
    return json.loads(body) if path == "/api/status" else body.decode()


def _stored(home, board=None) -> int:
    store = Store(home.config.store.path)
    try:
        return store.count_readings(board)
    finally:
        store.close()


def _wait(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_readings_are_stored_once_and_acked(gw_home, gw_running, gw_board):
    seqs = list(range(1, 41))
    for s in seqs:
        gw_board.publish(gw_board.envelope(s), s)
    assert gw_board.wait_settled(seqs, 10), f"not acked: {sorted(set(seqs) - gw_board.acked)}"
    # The same envelopes again (a board that missed the ACK): acked again, stored once.
    sent = dict(gw_board.outbox)
    assert not sent  # all acked, so the outbox is empty
    gw_board.acked.clear()
    for s in seqs[:10]:
        gw_board.publish(gw_board.envelope(s, t=int(time.time())), s)
    _wait(lambda: gw_running.counts["duplicate"] + gw_running.counts["rejected_total"] >= 10)
    assert _stored(gw_home, gw_board.address) == 40
    status = _api(gw_home)
    assert status["boards"][gw_board.hex]["last_seq"] == 40
    assert status["counts"]["stored"] == 40
    assert "terrapin_gateway_stored_total 40" in _api(gw_home, "/metrics")


def test_worker_processes_sharded_by_board(gw_home, gw_broker, gw_board, gw_tools):
    key, pw = gw_home.add_sim_board()
    gw_tools.reload_broker(gw_broker)
    other = SimBoard("127.0.0.1", gw_home.mqtt_port, key, password=pw).start()
    running = gw_tools.GatewayThread(gw_home.config, workers=2).start()
    try:
        for s in range(1, 21):
            gw_board.publish(gw_board.envelope(s), s)
            other.publish(other.envelope(s), s)
        assert gw_board.wait_settled(range(1, 21), 15) and other.wait_settled(range(1, 21), 15)
        assert gw_board.acked == other.acked == set(range(1, 21))
        assert running.counts["stored"] == 40, running.counts
    finally:
        other.stop()
        running.stop()
    assert _stored(gw_home) == 40


def _client(home, user, password, client_id):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.username_pw_set(user, password)
    got = []
    c.on_message = lambda cl, u, m: got.append((m.topic, m.payload))
    c.connect("127.0.0.1", home.mqtt_port)
    c.loop_start()
    return c, got


def test_acl_a_board_cannot_publish_or_read_for_another(
    gw_home, gw_broker, gw_running, gw_board, gw_tools
):
    key_b, pw_b = gw_home.add_sim_board()
    gw_tools.reload_broker(gw_broker)
    other = SimBoard("127.0.0.1", gw_home.mqtt_port, key_b, password=pw_b).start()
    try:
        # Board B publishes a reading signed by A, under A's topic: the broker drops it.
        env = gw_board.envelope(1)
        info = other.client.publish(gw_board.topic, env, qos=1)
        info.wait_for_publish(5)
        # B also tries to read A's acks.
        other.client.subscribe(f"terrapin/v1/{gw_board.hex}/ack", qos=1)
        time.sleep(0.5)
        assert gw_running.counts["received"] == 0, "the gateway saw a publish the ACL forbids"
        # A itself publishes: stored, acked to A only.
        gw_board.publish(env, 1)
        assert gw_board.wait_settled([1], 10)
        time.sleep(0.3)
        assert 1 not in other.acked
        assert gw_running.counts == {**gw_running.counts, "received": 1, "stored": 1}
    finally:
        other.stop()
    # A wrong password is refused; the gateway's own user works (it is connected).
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="intruder")
    c.username_pw_set(gw_board.hex, "wrong")
    with pytest.raises(Exception):  # noqa: B017 - paho raises different errors per version
        rc = c.connect("127.0.0.1", gw_home.mqtt_port)
        c.loop_start()
        time.sleep(0.5)
        assert c.is_connected(), rc
    c.loop_stop()
    assert gw_running.gateway.ingest.connected.is_set()


def test_every_rejection_over_mqtt_then_the_gateway_keeps_working(gw_home, gw_running, gw_board):
    b = gw_board
    counts = lambda: gw_running.counts  # noqa: E731
    good5 = b.envelope(5, t=1_767_225_600)
    b.publish(good5, 5)
    assert b.wait_settled([5])
    b.publish(b.envelope(10_000), 10_000)  # a gap forward: fine
    assert b.wait_settled([10_000])
    assert b.acked == {5, 10_000}
    p = encode_payload(6, 1_767_225_600, [("t", "Cel", 1.5)])
    sig = sign_digest(b.key, digest(p))
    forged = assemble(b.address, p, bytes([sig[0] ^ 1]) + sig[1:])
    equivocating = b.envelope(5, t=1_767_225_601)
    stale = b.envelope(1)
    other = SimBoard("127.0.0.1", 1, None)  # a key only; never connected
    mismatch = other.envelope(7)
    cases = [
        (forged, Reason.BAD_SIGNATURE, 6),
        (equivocating, Reason.EQUIVOCATION, 5),
        (stale, Reason.STALE_SEQUENCE, 1),
        (mismatch, Reason.TOPIC_MISMATCH, 7),
        (b"\x81" * 300, Reason.MALFORMED_CBOR, None),
        (b"\x00" * 2000, Reason.OVERSIZE, None),
        (cbor2.dumps(cbor2.CBORTag(17, [b"", {}, b"", b""])), Reason.BAD_ENVELOPE, None),
    ]
    for env, _reason, _seq in cases:
        b.client.publish(b.topic, env, qos=1)
    _wait(lambda: counts()["rejected_total"] == len(cases), what="all rejections")
    rejected = counts()["rejected"]
    for _env, reason, _seq in cases:
        assert rejected[reason.name] >= 1, reason
    # Rejections that name a seq went back to the board in the ACK's key 2.
    _wait(lambda: {6, 1, 7} <= set(b.rejected), what="key-2 rejections")
    assert b.rejected[6] == Reason.BAD_SIGNATURE and b.rejected[1] == Reason.STALE_SEQUENCE
    assert b.rejected[5] == Reason.EQUIVOCATION
    store = Store(gw_home.config.store.path)
    try:
        assert store.count_readings() == 2  # 10000 and 5 only
        assert store.reading(b.address, 5)["envelope"] == good5
        assert len(store.rejections()) == len(cases)
        # Unknown board: the broker still knows it, the allow-list no longer does.
        store.remove_device(b.address)
    finally:
        store.close()
    gw_running.gateway.request_reload()
    time.sleep(0.5)
    b.publish(b.envelope(20_000), 20_000)
    _wait(lambda: counts()["rejected"]["UNKNOWN_BOARD"] == 1, what="UNKNOWN_BOARD")
    assert 20_000 not in b.rejected  # not sent back: the operator may add it later
    # Status messages (retained, unsigned) show in the API.
    b.client.publish(
        f"terrapin/v1/{b.hex}/status", json.dumps({"state": "online", "seq": 3}), qos=1, retain=True
    )
    _wait(lambda: _api(gw_home)["board_status"].get(b.hex, {}).get("state") == "online")
    # Back on the allow-list: the gateway stored nothing wrong and still works.
    gw_home.add_sim_board(b.key)
    gw_running.gateway.request_reload()
    time.sleep(0.5)
    b.publish(b.envelope(20_001), 20_001)
    assert b.wait_settled([20_001])
    assert _stored(gw_home) == 3


def test_every_invalid_vector_over_mqtt_is_rejected_with_its_reason(
    gw_home, gw_broker, gw_running, gw_tools
):
    path = Path(__file__).resolve().parents[2] / "docs" / "vectors" / "invalid.json"
    if not path.exists():
        pytest.skip("docs/vectors/invalid.json is not written yet")
    vectors = json.loads(path.read_text())["vectors"]
    cfg = str(gw_home.config_path)
    creds = {}
    for v in vectors:
        addr = v["topic_address"]
        if addr not in creds:
            out = CliRunner().invoke(
                gateway_cli, ["device", "add", addr, "--json", "--config", cfg]
            )
            creds[addr] = json.loads(out.output)["mqtt_password"]
    gw_tools.reload_broker(gw_broker)
    gw_running.gateway.request_reload()
    clients = {}
    try:
        for addr, pw in creds.items():
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="tp-" + addr)
            c.username_pw_set(addr, pw)
            c.connect("127.0.0.1", gw_home.mqtt_port)
            c.loop_start()
            clients[addr] = c
        for v in vectors:
            info = clients[v["topic_address"]].publish(
                f"terrapin/v1/{v['topic_address']}/reading", bytes.fromhex(v["envelope"]), qos=1
            )
            info.wait_for_publish(5)
        _wait(lambda: gw_running.counts["rejected_total"] >= len(vectors), what="all vectors")
    finally:
        for c in clients.values():
            c.disconnect()
            c.loop_stop()
    want = Counter(v["reason"] for v in vectors)
    got = {k: n for k, n in gw_running.counts["rejected"].items() if n}
    assert got == dict(want)
    assert gw_running.counts["stored"] == 0 and _stored(gw_home) == 0
