"""One gateway per broker client id, on a real Mosquitto run from `gateway init`'s files:
two gateways with their own homes and databases but the same broker credentials.
Without presence.py both run and take the session from each other every second."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import replace
from types import SimpleNamespace

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from terrapin.gateway import presence
from terrapin.gateway.instancelock import EXIT_LOCKED
from terrapin.tools.devkit.gatewayhome import GatewayHome
from terrapin.tools.devkit.gatewayproc import GatewayProcess, run_command

QUICK = 30.0  # s: a refused start ends well before this


def _twin(home: GatewayHome, root) -> GatewayHome:
    """Another home (own database, own API port) with `home`'s broker and credentials."""
    twin = GatewayHome(root)
    text = twin.config_path.read_text().replace(
        f"port = {twin.mqtt_port}", f"port = {home.mqtt_port}", 1
    )
    twin.config_path.write_text(text)
    shutil.copy(home.dir / "gateway.secret", twin.dir / "gateway.secret")
    assert twin.config.mqtt.port == home.mqtt_port and twin.db_path != home.db_path
    return twin


def _run_refused(config_path) -> tuple[int, str, float]:
    t0 = time.monotonic()
    try:
        done = subprocess.run(
            run_command(config_path), capture_output=True, text=True, timeout=QUICK
        )
    except subprocess.TimeoutExpired as exc:  # both would run, knocking each other off
        raise AssertionError(
            f"the second gateway still runs after {QUICK} s: {exc.stderr}"
        ) from None
    return done.returncode, done.stderr, time.monotonic() - t0


def _retained(home: GatewayHome) -> bytes | None:
    """The presence message as the broker keeps it (read as the gateway user, other id
    impossible under use_username_as_clientid, so read through a probe)."""
    probe = presence._Probe(home.config.mqtt, home.gateway_password())
    try:
        assert probe.open() and not probe.denied, "the ACL must let the gateway use its topic"
        return probe.retained
    finally:
        probe.close()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_a_second_gateway_with_the_same_client_id_exits_naming_the_holder(
    gw_home, gw_broker, tmp_path, protocol
):
    twin = _twin(gw_home, tmp_path / "twin")
    for home in (gw_home, twin):  # the probe mirrors the session's version and settings
        text = home.config_path.read_text()
        home.config_path.write_text(text.replace('protocol = "3.1.1"', f'protocol = "{protocol}"'))
        assert home.config.mqtt.protocol == protocol
    first = GatewayProcess(gw_home).start()
    second = GatewayProcess(twin)
    try:
        code, err, took = _run_refused(twin.config_path)
        assert code == EXIT_LOCKED, err
        lines = err.strip().splitlines()
        assert "Traceback" not in err and len(lines) <= 2, err
        assert f"host {socket.gethostname()} (pid {first.pid})" in lines[0], err
        assert "terrapin-gateway" in lines[0], err
        assert took < 15, took
        time.sleep(1.5)  # the probe took the session for a moment: the first one is back
        assert first.running() and first.status()["connected"]
        # kill -9: the broker publishes the will, so a crashed holder never blocks a restart
        first.kill()
        t0 = time.monotonic()
        second.start()
        assert time.monotonic() - t0 < 15
        assert presence.Holder.parse(_retained(twin)).pid == second.pid
        code, err, _ = _run_refused(gw_home.config_path)  # now the first one is refused
        assert code == EXIT_LOCKED and f"(pid {second.pid})" in err, err
        assert second.status()["connected"]
        # A clean stop clears the message: the next start does not wait for anyone.
        assert second.stop() == 0
        assert not _retained(gw_home)
        first.start()
        assert presence.Holder.parse(_retained(gw_home)).pid == first.pid
    finally:
        first.kill()
        second.kill()


def _leave(home: GatewayHome, payload: bytes) -> None:
    """A retained presence message left behind, as after a power loss the broker did
    not notice before the restart."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="x", clean_session=False)
    c.username_pw_set(home.config.mqtt.username, home.gateway_password())
    c.connect("127.0.0.1", home.mqtt_port)
    c.loop_start()
    c.publish(presence.topic(home.config.mqtt), payload, qos=1, retain=True).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def test_a_holder_that_is_gone_never_blocks_a_start(gw_home, gw_broker):
    cfg, password = gw_home.config, gw_home.gateway_password()
    here = presence.me()
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    # This machine, same boot, a pid that is gone: free at once.
    _leave(gw_home, presence.Holder(here.host, dead.pid, here.boot, time.time(), "t").payload())
    t0 = time.monotonic()
    presence.check(cfg.mqtt, password, grace=10)
    assert time.monotonic() - t0 < 5
    # Another machine that lost power: nobody takes the session back within the grace.
    _leave(gw_home, presence.Holder("elsewhere", os.getpid(), "b", time.time(), "t").payload())
    t0 = time.monotonic()
    presence.check(cfg.mqtt, password, grace=2)
    assert 2 <= time.monotonic() - t0 < 8
    # Not a presence message at all (a stray retained payload): free.
    _leave(gw_home, b"not json")
    t0 = time.monotonic()
    presence.check(cfg.mqtt, password, grace=10)
    assert time.monotonic() - t0 < 5


def test_a_broker_that_is_down_skips_the_check_with_one_warning(gw_home, caplog):
    """The gateway starts with the broker down (ingest retries); the check says why it
    did not run, at once, instead of claiming it waited."""
    from terrapin.tools.devkit.broker import free_port

    cfg = gw_home.config
    down = SimpleNamespace(**{**vars(cfg.mqtt), "port": free_port()})
    t0 = time.monotonic()
    with caplog.at_level("WARNING", logger="terrapin.gateway.presence"):
        presence.check(down, "x")
    assert time.monotonic() - t0 < 3
    [record] = caplog.records
    assert "does not answer (Connection refused)" in record.getMessage(), record.getMessage()


def test_an_acl_without_the_presence_line_is_named(gw_home, caplog):
    """Mosquitto 2.0 grants a denied subscription and drops a denied publish silently, so
    an old home's ACL would switch the check off without a word."""
    from terrapin.gateway.mosquitto_conf import render_acl

    assert presence.ACL_LINE in render_acl().splitlines()  # what init writes, the check wants
    acl = gw_home.dir / "mosquitto" / "acl"
    assert not presence.acl_lacks_presence(acl)
    acl.write_text("".join(ln for ln in acl.read_text().splitlines(True) if "presence" not in ln))
    assert presence.acl_lacks_presence(acl)
    cfg = gw_home.config
    with caplog.at_level("WARNING", logger="terrapin.gateway.presence"):
        presence.check(cfg.mqtt, "x", acl_file=cfg.broker.acl_file)  # no broker needed
    [record] = caplog.records
    assert "has no line `pattern readwrite terrapin/gateway/%u/presence`" in record.getMessage()


def test_two_gateways_started_while_the_broker_was_down_end_with_one(
    mosquitto_exe, gw_home, tmp_path
):
    """Neither could check at start; when the broker comes, the one started later reads
    the earlier one's message on connect and stops (exit 3), the earlier one keeps the id."""
    from terrapin.tools.devkit.gatewayhome import start_broker

    twin = _twin(gw_home, tmp_path / "twin")
    first, second = GatewayProcess(gw_home), GatewayProcess(twin)
    broker = None
    try:
        first.start(wait=False)
        time.sleep(1.5)  # the first one is the earlier
        second.start(wait=False)
        time.sleep(1.5)
        assert first.running() and second.running()  # both up, broker down: no check
        broker = start_broker(gw_home)
        try:
            code = second.proc.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"both still run:\n{second.log_tail()}") from None
        log = second.log_path.read_text()
        assert code == EXIT_LOCKED, log
        assert f"(pid {first.pid})" in log, log
        first.wait_ready(15)
        time.sleep(2)
        assert first.running() and first.status()["connected"]
        assert presence.Holder.parse(_retained(gw_home)).pid == first.pid
    finally:
        first.kill()
        second.kill()
        if broker is not None:
            broker.stop()


def test_systemd_does_not_restart_a_gateway_that_deferred_to_another():
    """Each start of a refused gateway takes the holder's session for a moment: restarted
    every RestartSec it would knock the holder off in slow motion."""
    from pathlib import Path

    unit = Path(presence.__file__).parent / "systemd" / "terrapin-gateway.service"
    lines = [ln.split("=", 1) for ln in unit.read_text().splitlines() if "=" in ln]
    prevent = [v.split() for k, v in lines if k.strip() == "RestartPreventExitStatus"]
    assert prevent and str(EXIT_LOCKED) in prevent[0], unit.read_text()


def test_the_stale_message_is_ignored_but_its_holder_coming_back_is_not(gw_home, gw_broker):
    """check() found a holder gone and took over; if that holder comes back after all (a
    new publish of its message), the session that started later stops."""
    cfg = gw_home.config
    earlier = presence.Holder("elsewhere", 4242, "b", time.time() - 60, "old", at=1.0)
    _leave(gw_home, earlier.payload())
    taken: list = []
    c = presence._client(cfg.mqtt, gw_home.gateway_password())
    c.on_connect = None
    presence.attach(c, cfg.mqtt, ignore=earlier, on_taken=taken.append)
    c.reconnect_delay_set(min_delay=1, max_delay=1)
    c.connect("127.0.0.1", gw_home.mqtt_port)
    c.loop_start()
    try:
        time.sleep(1.0)
        assert taken == []  # the stale message itself: ignored
        _leave(gw_home, replace(earlier, at=2.0).payload())  # takes the session, like it would
        deadline = time.monotonic() + 10
        while not taken and time.monotonic() < deadline:
            time.sleep(0.1)
        assert taken and "(pid 4242)" in str(taken[0]), taken
        assert isinstance(taken[0], presence.ClientIdInUse)
    finally:
        c.disconnect()
        c.loop_stop()
