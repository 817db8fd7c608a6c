"""Firmware updates over MQTT, end to end on the unix target.

A virtual board (the real firmware as .mpy on the MicroPython unix port, 100 KB
heap) logs in to a real Mosquitto with the generated password file and ACL;
`terrapin device ota publish` (tools/board/ota_publish.py, as the gateway user)
offers bundles. A good bundle is fetched in chunks, verified, booted on trial
and reported; tampered and foreign-signed bundles are refused with nothing
switched while readings keep flowing; a bundle that crashes at boot is rolled
back and the board reports the old version again.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from pathlib import Path

import cbor2
import paho.mqtt.client as mqtt
import pytest
from coincurve import PrivateKey

from terrapin.firmware.cose import address
from terrapin.gateway import mosquitto_conf as mc
from terrapin.gateway.home import OTA_SECRET
from terrapin.tools.board import ota as host
from terrapin.tools.board import ota_publish
from terrapin.tools.board.deploy import FIRMWARE_DIR, DirTarget, deploy
from terrapin.tools.cli.main import main
from terrapin.tools.devkit.broker import Mosquitto
from terrapin.tools.devkit.virtualboard import VirtualBoard

SRC = FIRMWARE_DIR

# The board's entry script on the unix port: boot through firmware/ota.py like
# main.py does on an ESP32 (the checkout's main.py skips OTA on unix), with the
# flash folder as the OTA root.
ENTRY = """\
import sys
from terrapin.firmware import ota
def reset():
    raise SystemExit(3)  # like machine.reset(): tools/devkit/virtualboard.py starts it again
info = ota.boot(".", reset=reset)
print("[info] firmware image %s" % info)
pkg = sys.modules.get("terrapin.firmware")
for mod in ("ota", "ota_state"):
    sys.modules.pop("terrapin.firmware." + mod, None)
    if pkg is not None and mod in pkg.__dict__:
        delattr(pkg, mod)  # their RAM back
del ota, pkg, mod
from terrapin.firmware import app
app.ota_trial = info["trial"]  # as main.py tells it: the app marks a trial good
from terrapin.firmware.board import unix
unix.Board.ota_root = "."
code = unix.main()
if code:
    sys.exit(code)
"""


class Gateway:
    """The gateway's side of the broker for the test: acks readings, keeps statuses."""

    def __init__(self, port: int, password: str):
        self.lock = threading.Lock()
        self.seqs: dict[str, list[int]] = {}
        self.status: dict[str, dict] = {}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=mc.GATEWAY_USER)
        self.c.username_pw_set(mc.GATEWAY_USER, password)
        self.c.on_connect = lambda c, *a: (
            c.subscribe("terrapin/v1/+/reading", 1),
            c.subscribe("terrapin/v1/+/status", 1),
        )
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        addr, kind = msg.topic.split("/")[2:4]
        if kind == "status":
            try:
                st = json.loads(msg.payload)
            except ValueError:
                st = {"state": msg.payload.decode()}
            with self.lock:
                self.status[addr] = st
            return
        seq = cbor2.loads(cbor2.loads(msg.payload).value[2])[1]
        with self.lock:
            self.seqs.setdefault(addr, []).append(seq)
        client.publish(f"terrapin/v1/{addr}/ack", cbor2.dumps({1: [[seq, seq]]}), qos=1)

    def readings(self, addr: str) -> int:
        with self.lock:
            return len(self.seqs.get(addr, []))

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


class Net:
    def __init__(self, tmp: Path, broker: Mosquitto, gw: Gateway, board_pw: dict, gw_pw: str):
        self.tmp, self.broker, self.gw, self.board_pw, self.gw_pw = tmp, broker, gw, board_pw, gw_pw

    def gateway_toml(self) -> Path:
        path = self.tmp / "gateway.toml"
        path.write_text(
            f'[mqtt]\nhost = "127.0.0.1"\nport = {self.broker.port}\n'
            f'username = "{mc.GATEWAY_USER}"\npassword = "{self.gw_pw}"\n'
            f'[store]\npath = "{self.tmp / "gw.db"}"\n'
        )
        # `device ota publish` logs in as the OTA user, never as the gateway.
        (self.tmp / OTA_SECRET).write_text(self.board_pw[mc.OTA_USER] + "\n")
        return path


@pytest.fixture(scope="module")
def release_key() -> PrivateKey:
    return PrivateKey()


@pytest.fixture(scope="module")
def board_keys() -> list[PrivateKey]:
    return [PrivateKey(), PrivateKey()]


def addr_of(key: PrivateKey) -> str:
    return address(key.public_key.format(compressed=False)).hex()


@pytest.fixture
def net(tmp_path, mosquitto_exe, board_keys):
    users = {mc.GATEWAY_USER: mc.random_password(), mc.OTA_USER: mc.random_password()}
    for k in board_keys:
        users[addr_of(k)] = mc.random_password()
    passwd = tmp_path / "passwd"
    for u, p in users.items():
        mc.set_user(passwd, u, p)
    acl = tmp_path / "acl"
    acl.write_text(mc.render_acl())
    # The client-id rule of the generated config: the publisher and the gateway
    # (its own user) run side by side without taking over each other's session.
    broker = Mosquitto(
        tmp_path / "broker",
        password_file=passwd,
        acl_file=acl,
        persistence=False,
        extra_config="use_username_as_clientid true",
    )
    broker.start()
    gw = Gateway(broker.port, users[mc.GATEWAY_USER])
    try:
        yield Net(tmp_path, broker, gw, users, users[mc.GATEWAY_USER])
    finally:
        gw.close()
        broker.stop()


def start_board(
    net: Net, key: PrivateKey, release_pub: str, ota_files: dict | None = None
) -> VirtualBoard:
    flash = net.tmp / "flash"
    flash.mkdir()
    deploy(DirTarget(flash), src=SRC)
    if ota_files:
        (flash / "ota").mkdir()
        for name, data in ota_files.items():
            (flash / "ota" / name).write_bytes(data)
    (flash / "key.bin").write_bytes(key.secret)  # a plain 32-byte key file
    addr = addr_of(key)
    (flash / "config.json").write_text(
        json.dumps(
            {
                "broker": {
                    "host": "127.0.0.1",
                    "port": net.broker.port,
                    "user": addr,
                    "password": net.board_pw[addr],
                    "keepalive_s": 30,
                },
                "sensors": [{"driver": "simulated"}],
                "sample_period_s": 0.5,
                "ack_timeout_s": 2,
                "backoff_max_s": 1,
                "ota_pubkey": release_pub,
            }
        )
    )
    (flash / "ota_main.py").write_text(ENTRY)
    vb = VirtualBoard(
        flash,
        script=flash / "ota_main.py",
        args=("--config", "config.json", "--flash", "."),
        tcp_port=None,
        deploy=False,
    )
    return vb.start()


def bundle(tmp: Path, mpy, key, version: str, release: int, crash: bool = False) -> bytes:
    src = SRC
    if crash:
        src = tmp / f"src-{version}"
        shutil.copytree(SRC, src, ignore=shutil.ignore_patterns("tests", "__pycache__"))
        app = src / "app.py"
        app.write_text('raise RuntimeError("new firmware dies at boot")\n' + app.read_text())
    files = host.firmware_files(mpy, src, version=version)
    return host.build_bundle(files, version=version, release=release, key=key, mpy=mpy.raw)


def wait_for(what, cond, timeout: float, vb: VirtualBoard):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(
        f"timed out waiting for {what}\n--- console ---\n{vb.console_log()[-4000:]}"
    )


def publish(net: Net, data: bytes, addr: str, timeout: float = 40.0, tamper=None) -> dict:
    pub = ota_publish.Publisher(
        data,
        [addr],
        host="127.0.0.1",
        port=net.broker.port,
        username=mc.OTA_USER,
        password=net.board_pw[mc.OTA_USER],
    )
    if tamper is not None:
        pub.bundle = tamper  # what is served differs from what was offered
    pub.start()
    try:
        boards = pub.wait(timeout)
    finally:
        pub.stop()
    return boards[addr].as_dict()


def ota_state(flash: Path) -> dict | None:
    """The OTA pointer state as the firmware reads it; None before the first install."""
    from terrapin.firmware import ota_state as board_state

    if not list((flash / "ota").glob("state.*")):
        return None
    return board_state.read(str(flash))


def test_update_over_mqtt_good_refused_and_rolled_back(
    net, tmp_path, release_key, board_keys, micropython_exe, capsys
):
    mpy = DirTarget(tmp_path).mpy()
    pub_hex = host.public_hex(release_key)
    good = bundle(tmp_path, mpy, release_key, "0.2.0", 1)
    crash = bundle(tmp_path, mpy, release_key, "0.3.0", 2, crash=True)
    foreign = host.build_bundle(
        {f["path"]: b"" for f in host.read_manifest(good)["files"][:1]},
        version="0.9.0",
        release=9,
        key=PrivateKey(),
        mpy=mpy.raw,
    )
    addr = addr_of(board_keys[0])
    vb = start_board(net, board_keys[0], pub_hex)
    try:
        gw = net.gw
        wait_for("first readings", lambda: gw.readings(addr) >= 2, 30, vb)
        assert gw.status[addr]["fw"] == "0.1.0"

        # Tampered: a body byte flipped, offered with its own (matching) sha256.
        bad = bytearray(good)
        bad[-100] ^= 1
        res = publish(net, bytes(bad), addr)
        assert res["result"] == "refused_bundle" and "HashMismatch" in res["text"], res
        # Served bytes that are not the offered bundle.
        res = publish(net, good, addr, tamper=bytes(bad))
        assert res["result"] == "refused_hash", res
        # Signed by a key the board does not trust.
        res = publish(net, foreign, addr)
        assert res["result"] == "refused_bundle" and "SignatureError" in res["text"], res
        assert ota_state(vb.flash_dir) is None  # nothing switched
        assert not (vb.flash_dir / "ota" / "incoming.bin").exists()
        # A bundle whose SHA-256 is the offer's is verified by the installer at
        # boot (the heap is free there): a reboot to install and one after it,
        # then the same image as before.
        assert vb.exit_codes == [3, 3, 3, 3], vb.exit_codes
        n = gw.readings(addr)
        wait_for("readings after the refusals", lambda: gw.readings(addr) >= n + 2, 15, vb)

        # Good: fetched, verified, booted on trial, reported, confirmed.
        toml = net.gateway_toml()
        (tmp_path / "good.tpota").write_bytes(good)
        args = ["device", "ota", "publish", str(tmp_path / "good.tpota"), "--address", addr]
        assert main([*args, "--config", str(toml), "--timeout", "60", "--json"]) == 0, (
            capsys.readouterr(),
            vb.console_log()[-4000:],
        )
        out = json.loads(capsys.readouterr().out)
        res = out["boards"][0]
        assert res["result"] == "updated" and res["bytes"] == len(good), res
        # (its status may be the broker's `offline` of the reset for a moment)
        wait_for("status 0.2.0", lambda: gw.status[addr].get("fw") == "0.2.0", 15, vb)
        marker = vb.flash_dir / "ota" / "confirm"
        wait_for("the trial marked good at its first ACK", marker.exists, 15, vb)
        assert ota_state(vb.flash_dir)["trial"]["version"] == "0.2.0"  # until the next boot
        assert vb.exit_codes == [3] * 6, vb.exit_codes  # fetched, installed: two resets
        log = vb.console_log()
        heap = [int(h) for h in re.findall(r"heap free (\d+)", log)]
        print(
            f"\nOTA over MQTT: bundle {len(good)} bytes, {res['chunks']} chunks, "
            f"transfer {res['transfer_s']} s; heap free after a collection, start/end of "
            f"each fetch: {heap}"
        )
        n = gw.readings(addr)
        wait_for("readings on 0.2.0", lambda: gw.readings(addr) >= n + 2, 15, vb)

        # Crashes at boot: two trial boots fail, the third rolls back to 0.2.0,
        # which sees the offer again and reports the rollback.
        res = publish(net, crash, addr, timeout=60)
        assert res["result"] == "rolled_back", (res, vb.console_log()[-4000:])
        assert "new firmware dies at boot" in vb.console_log()
        wait_for("status 0.2.0 again", lambda: gw.status[addr].get("fw") == "0.2.0", 15, vb)
        crashed = [c for c in vb.exit_codes if c not in (0, 3)]
        assert len(crashed) == 2, vb.exit_codes
        st = ota_state(vb.flash_dir)  # 0.2.0 confirmed by the boot that installed 0.3.0
        assert st["version"] == "0.2.0" and st["release"] == 1 and st["trial"] is None
        assert st["rolled_back"]["version"] == "0.3.0"
        n = gw.readings(addr)
        wait_for("readings after the rollback", lambda: gw.readings(addr) >= n + 2, 15, vb)
    finally:
        vb.stop()


def test_damaged_ota_state_refuses_updates_over_mqtt(net, release_key, board_keys, micropython_exe):
    """The attack: the OTA pointer state is corrupted on flash, then an old signed
    release is offered. Old code read a broken ota/state.json as release 0 and
    fetched and installed any release; now the board reports NO_UPDATES with the
    reason and fetches nothing, while its readings keep flowing."""
    old_release = host.build_bundle(
        {"terrapin/firmware/x.py": b"X = 1\n"},
        version="0.0.1",
        release=1,
        key=release_key,
        mpy=None,
    )
    damaged = {
        "state.a": b'{"gen": 4, "release": 7}\n00000000\n',  # CRC does not match
        "state.b": b'{"gen": 4, "rel',  # torn
        "state.json": b'{"active": "a", "rel',  # the old format, torn
    }
    addr = addr_of(board_keys[0])
    vb = start_board(net, board_keys[0], host.public_hex(release_key), ota_files=damaged)
    try:
        gw = net.gw
        wait_for("first readings", lambda: gw.readings(addr) >= 2, 30, vb)
        res = publish(net, old_release, addr)
        assert res["result"] == "no_updates" and "damaged" in res["text"], res
        assert "updates refused" in vb.console_log()  # said at boot
        assert not (vb.flash_dir / "ota" / "incoming.bin").exists()
        assert not (vb.flash_dir / "ota" / "pending.json").exists()
        assert {n: (vb.flash_dir / "ota" / n).read_bytes() for n in damaged} == damaged
        n = gw.readings(addr)
        wait_for("readings after the refusal", lambda: gw.readings(addr) >= n + 2, 15, vb)
    finally:
        vb.stop()
