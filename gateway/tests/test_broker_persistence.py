"""The broker started exactly as docs/GATEWAY.md says (`mosquitto -c
D/mosquitto/mosquitto.conf` on the files `gateway init` wrote) saves its
database, and after a restart still holds the readings queued for the gateway.

Run as root (this test machine, and systemd on a Pi), Mosquitto drops to user
`mosquitto`; `gateway init` run as root hands it the persistence folder.
Before that the folder was root's: every save failed with Permission denied
and a broker restart lost every queued reading. Run as another user, Mosquitto
stays that user, and the same test checks the same thing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from terrapin.gateway import mosquitto_conf
from terrapin.gateway.home import init_home
from terrapin.gateway.store import Store
from terrapin.tools.devkit.broker import find_mosquitto, free_port, wait_for_port
from terrapin.tools.devkit.gatewayhome import GatewayHome
from terrapin.tools.devkit.gatewayproc import GatewayThread
from terrapin.tools.devkit.simboard import SimBoard, board_address, new_key


class DocumentedBroker:
    """`mosquitto -c D/mosquitto/mosquitto.conf`, nothing added; its log on stderr."""

    def __init__(self, home: Path, port: int):
        self.conf = home / "mosquitto" / "mosquitto.conf"
        self.port = port
        self.log = home / "broker.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> DocumentedBroker:
        exe = find_mosquitto()
        if exe is None:
            pytest.fail("mosquitto is not installed")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stderr=log)
        wait_for_port("127.0.0.1", self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # saves the database on the way out
            self.proc.wait(10)
        self.proc = None

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def open_dir():
    """A folder the broker's user can reach (pytest's tmp_path is 0700 root)."""
    d = Path(tempfile.mkdtemp(prefix="terrapin-broker-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _stored(cfg, board: bytes) -> int:
    store = Store(cfg.store.path)
    try:
        return store.count_readings(board)
    finally:
        store.close()


def test_the_documented_broker_saves_and_keeps_queued_readings_over_a_restart(
    open_dir, mosquitto_exe
):
    home = GatewayHome(open_dir / "gw")  # `gateway init`, in a folder others can reach
    home_dir, port = home.dir, home.mqtt_port
    key = new_key()
    password = home.add_board(board_address(key).hex())
    data = home_dir / "mosquitto" / "data"
    owner = mosquitto_conf.broker_user()  # as root: the user Mosquitto drops to

    broker = DocumentedBroker(home_dir, port).start()
    board = None
    try:
        GatewayThread(home.config).start().stop()  # its session exists; now it is down
        board = SimBoard("127.0.0.1", port, key, password=password).start()
        seqs = range(1, 21)
        for seq in seqs:
            board.publish(board.envelope(seq), seq).wait_for_publish(5)
        board.stop()
        board = None
        broker.proc.send_signal(signal.SIGUSR1)  # autosave now (mosquitto(8))
        db = data / "mosquitto.db"
        deadline = time.monotonic() + 10
        while not db.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert db.exists(), f"the broker saved nothing in {data}\n{broker.text()[-2000:]}"
        if owner is not None:
            assert db.stat().st_uid == owner[0], "saved by a user other than the dropped-to one"
        broker.stop()
        assert "Permission denied" not in broker.text(), broker.text()[-2000:]
        assert "Error saving" not in broker.text(), broker.text()[-2000:]

        broker.start()  # the same command again
        running = GatewayThread(home.config).start()
        try:
            deadline = time.monotonic() + 20
            while _stored(home.config, board_address(key)) < len(seqs):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        finally:
            running.stop()
        stored = _stored(home.config, board_address(key))
        assert stored == len(seqs), (
            f"{stored} of {len(seqs)} queued readings survived the broker restart\n"
            + broker.text()[-2000:]
        )
    finally:
        if board is not None:
            board.stop()
        broker.stop()


def test_init_as_root_hands_the_data_folder_to_the_broker_user(open_dir):
    init_home(open_dir / "gw", mqtt_port=free_port(), api_port=free_port())
    data = open_dir / "gw" / "mosquitto" / "data"
    assert data.stat().st_mode & 0o777 == 0o700
    owner = mosquitto_conf.broker_user()
    want = owner if os.geteuid() == 0 else (os.geteuid(), os.getegid())
    assert (data.stat().st_uid, data.stat().st_gid) == want
    assert "use_username_as_clientid true" in (data.parent / "mosquitto.conf").read_text()
