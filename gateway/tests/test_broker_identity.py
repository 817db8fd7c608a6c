"""Broker identity, attacked on a real Mosquitto run from the config `gateway init`
writes (tools/devkit start_broker): a hostile board logs in with its own valid
credentials and claims the gateway's client id, or another board's. Mosquitto
binds a client's id to its user name (`use_username_as_clientid`), so neither the
gateway nor the other board is disconnected, the gateway's persistent session and
the readings queued in it survive, and readings keep flowing during the attack.
Without the rule each CONNECT took the victim's connection (and, with a clean
session, deleted the gateway's queued readings)."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from terrapin.gateway.mosquitto_conf import GATEWAY_USER
from terrapin.gateway.store import Store
from terrapin.tools.devkit.simboard import SimBoard, board_address


def _stored(home, board: bytes) -> int:
    store = Store(home.config.store.path)
    try:
        return store.count_readings(board)
    finally:
        store.close()


def _attack_once(port: int, user: str, password: str, client_id: str) -> bool:
    """One CONNECT (clean session) with `client_id` under the attacker's own credentials;
    True when the broker accepted it (it does: the credentials are valid)."""
    accepted = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    c.username_pw_set(user, password)
    c.on_connect = lambda cl, u, f, rc, p: accepted.set() if not rc.is_failure else None
    c.connect("127.0.0.1", port, keepalive=10)
    c.loop_start()
    try:
        return accepted.wait(5)
    finally:
        c.disconnect()
        c.loop_stop()


def _count_disconnects(board: SimBoard) -> list[int]:
    drops: list[int] = []
    previous = board.client.on_disconnect

    def on_disconnect(*args):
        drops.append(1)
        previous(*args)

    board.client.on_disconnect = on_disconnect
    return drops


def test_a_board_cannot_take_over_the_gateway_or_another_board(
    gw_home, gw_broker, gw_running, gw_tools
):
    attacker_key, attacker_pw = gw_home.add_sim_board()
    attacker = board_address(attacker_key).hex()
    victim_key, victim_pw = gw_home.add_sim_board()
    gw_tools.reload_broker(gw_broker)
    gw_running.gateway.request_reload()
    victim = SimBoard("127.0.0.1", gw_home.mqtt_port, victim_key, password=victim_pw).start()
    drops = _count_disconnects(victim)
    ingest = gw_running.gateway.ingest
    connects_before = ingest.connects
    # The ids a hostile board would claim: the gateway's, the victim's (as it sends
    # it, and as the broker names it).
    claimed = [gw_home.config.mqtt.client_id, GATEWAY_USER, "tp-" + victim.hex, victim.hex]
    seqs = range(1, 201)
    try:
        attacks = 0
        started = time.monotonic()
        for seq in seqs:  # the victim publishes while the attacker connects again and again
            victim.publish(victim.envelope(seq), seq)
            if seq % 5 == 0:
                cid = claimed[attacks % len(claimed)]
                assert _attack_once(gw_home.mqtt_port, attacker, attacker_pw, cid), cid
                attacks += 1
        settled = victim.wait_settled(seqs, 30)
        took = time.monotonic() - started
        stored = _stored(gw_home, victim.address)
        print(
            f"\n{attacks} takeover attempts; {stored} of {len(seqs)} readings stored "
            f"in {took:.1f} s"
        )
        assert settled and stored == len(seqs), (
            f"{stored} of {len(seqs)} stored during the attack\n{gw_broker.log_tail()}"
        )
        assert ingest.connects == connects_before, "the gateway was disconnected"
        assert ingest.connected.is_set()
        assert not drops, f"the victim board was disconnected {len(drops)} times"
    finally:
        victim.stop()


def test_the_gateways_session_and_queued_readings_survive_a_clean_takeover(
    gw_home, gw_broker, gw_tools
):
    attacker_key, attacker_pw = gw_home.add_sim_board()
    attacker = board_address(attacker_key).hex()
    board_key, board_pw = gw_home.add_sim_board()
    gw_tools.reload_broker(gw_broker)
    # The gateway's first run makes its persistent session; then it is down.
    gw_tools.GatewayThread(gw_home.config).start().stop()
    board = SimBoard("127.0.0.1", gw_home.mqtt_port, board_key, password=board_pw).start()
    try:
        seqs = range(1, 31)
        for seq in seqs:
            board.publish(board.envelope(seq), seq).wait_for_publish(5)
        # Queued for the gateway; the attacker claims its id with a clean session,
        # which (were the id the attacker's to claim) deletes that session.
        for cid in (GATEWAY_USER, gw_home.config.mqtt.client_id):
            assert _attack_once(gw_home.mqtt_port, attacker, attacker_pw, cid)
        running = gw_tools.GatewayThread(gw_home.config).start()
        try:
            settled = board.wait_settled(seqs, 20)
            stored = _stored(gw_home, board.address)
        finally:
            running.stop()
        assert settled and stored == len(seqs), (
            f"{stored} of {len(seqs)} queued readings reached the gateway after the "
            f"takeover attempt\n{gw_broker.log_tail()}"
        )
    finally:
        board.stop()


def test_the_ota_publisher_runs_beside_the_gateway_without_taking_its_session(
    gw_home, gw_broker, gw_running
):
    """`device ota publish` logs in as its own user (ota.secret from `gateway init`):
    offering an update never disconnects the gateway. (With the gateway's login, as
    before, the broker would give it the gateway's client id and drop the gateway.)"""
    from coincurve import PrivateKey

    from terrapin.tools.board.ota import build_bundle
    from terrapin.tools.board.ota_publish import Publisher, ota_login
    from terrapin.tools.devkit.simboard import new_key

    user, password = ota_login(gw_home.config_path)
    assert user != gw_home.config.mqtt.username
    bundle = build_bundle(
        {"a.py": b"x = 1\n"}, version="0.2.0", release=1, key=PrivateKey(), mpy=None
    )
    ingest = gw_running.gateway.ingest
    before = ingest.connects
    board = board_address(new_key()).hex()
    pub = Publisher(
        bundle, [board], host="127.0.0.1", port=gw_home.mqtt_port, username=user, password=password
    ).start()
    time.sleep(0.5)
    pub.stop()
    time.sleep(0.3)
    assert ingest.connects == before and ingest.connected.is_set(), gw_broker.log_tail()
