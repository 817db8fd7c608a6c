"""Fixtures for the gateway ingest tests: a gateway home made by `gateway init`,
a real Mosquitto with the generated password file and ACL, and a gateway
running in a thread (or as a subprocess in the crash test)."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from terrapin.gateway.config import GatewayConfig, load_config
from terrapin.gateway.server import Gateway
from terrapin.tools.cli.gateway import gateway as gateway_cli
from terrapin.tools.devkit.broker import Mosquitto, free_port
from terrapin.tools.devkit.simboard import SimBoard, new_key


def run_cli(*args: str) -> str:
    result = CliRunner().invoke(gateway_cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@dataclass
class Home:
    dir: Path
    config_path: Path
    mqtt_port: int
    api_port: int

    @property
    def config(self) -> GatewayConfig:
        return load_config(self.config_path)

    def add_board(self, key: bytes | None = None, **kw) -> tuple[bytes, str]:
        """Allow a new (or given) board key; returns (key, broker password)."""
        key = key or new_key()
        from terrapin.tools.devkit.simboard import board_address

        out = run_cli(
            "device", "add", board_address(key).hex(), "--json", "--config", str(self.config_path)
        )
        return key, json.loads(out)["mqtt_password"]

    def gateway_password(self) -> str:
        return (self.dir / "gateway.secret").read_text().strip()


@pytest.fixture
def gw_home(tmp_path: Path) -> Home:
    mqtt_port, api_port = free_port(), free_port()
    run_cli(
        "init",
        "--dir",
        str(tmp_path / "gw"),
        "--mqtt-port",
        str(mqtt_port),
        "--api-port",
        str(api_port),
    )
    return Home(tmp_path / "gw", tmp_path / "gw" / "gateway.toml", mqtt_port, api_port)


@pytest.fixture
def gw_broker(mosquitto_exe: str, gw_home: Home):
    """Mosquitto with the files `gateway init` wrote (passwords + ACL), persistence on."""
    mq = gw_home.dir / "mosquitto"
    broker = Mosquitto(
        mq / "run",
        port=gw_home.mqtt_port,
        password_file=mq / "passwd",
        acl_file=mq / "acl",
        persistence=True,
        # tools.broker sets set_tcp_nodelay and, as root, `user root` (Mosquitto
        # would otherwise drop to a user that cannot enter pytest's tmp folders).
        extra_config="max_inflight_messages 1000",
    ).start()
    try:
        yield broker
    finally:
        broker.stop()


def reload_broker(broker: Mosquitto) -> None:
    """SIGHUP: Mosquitto re-reads its password file and ACL."""
    assert broker.process is not None
    broker.process.send_signal(signal.SIGHUP)
    time.sleep(0.3)


class RunningGateway:
    def __init__(self, cfg: GatewayConfig, workers: int | None = 0):
        if workers is not None:  # in-thread by default: no process start per test
            cfg.pipeline.workers = workers
        self.gateway = Gateway(cfg)
        self.shutdown = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            self.gateway.run(self.shutdown)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self, timeout: float = 10.0) -> RunningGateway:
        self.thread.start()
        if not self.gateway.ingest.connected.wait(timeout):
            raise AssertionError("gateway did not connect to the broker")
        time.sleep(0.2)  # let the SUBACK arrive
        return self

    def stop(self):
        self.shutdown.set()
        self.thread.join(15)
        assert not self.thread.is_alive(), "gateway did not stop"
        if self.error:
            raise self.error

    @property
    def counts(self) -> dict:
        return self.gateway.stats.snapshot()["counts"]


@pytest.fixture
def gw_running(gw_home: Home, gw_broker: Mosquitto):
    running = RunningGateway(gw_home.config).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def gw_board(gw_home: Home, gw_broker: Mosquitto):
    """One allowed board connected with its own credentials."""
    key, password = gw_home.add_board()
    reload_broker(gw_broker)
    board = SimBoard("127.0.0.1", gw_home.mqtt_port, key, password=password).start()
    try:
        yield board
    finally:
        board.stop()


def wait_settled(boards, published: dict, timeout: float = 60.0) -> None:
    """Until every board has every reading it published acked (or the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(b.settled(published[b.address]) for b in boards):
            return
        time.sleep(0.5)


def check_exactly_once(db_path, boards, published: dict, log_text: str = "") -> None:
    """Every reading each board published is stored once and acked; none rejected."""
    db = sqlite3.connect(db_path)
    try:
        for b in boards:
            want = published[b.address]
            found = db.execute("SELECT seq FROM readings WHERE device=?", (b.address,))
            rows = [r[0] for r in found]
            missing = sorted(want - set(rows))
            assert not missing, (
                f"board {b.hex}: {len(missing)} readings lost, e.g. {missing[:10]}\n"
                + log_text[-2000:]
            )
            assert len(rows) == len(set(rows)) == len(want), f"board {b.hex}: stored twice or extra"
            unacked = sorted(want - b.acked)
            assert not unacked, f"board {b.hex}: {len(unacked)} never acked, e.g. {unacked[:10]}"
            assert not b.rejected, f"board {b.hex}: rejected {list(b.rejected.items())[:5]}"
    finally:
        db.close()


@pytest.fixture
def gw_tools():
    """Helpers for tests (conftest itself is not importable under importlib mode)."""
    return SimpleNamespace(
        RunningGateway=RunningGateway,
        reload_broker=reload_broker,
        wait_settled=wait_settled,
        check_exactly_once=check_exactly_once,
    )
