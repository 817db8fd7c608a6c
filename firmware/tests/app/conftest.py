"""Helpers for the firmware application tests: virtual boards and a test gateway.

The test gateway is deliberately independent of the firmware: it decodes
envelopes with cbor2 and checks signatures with python-ecdsa and the board
address with pysha3, then acknowledges in the ACK format of the brief.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cbor2
import ecdsa
import paho.mqtt.client as mqtt
import pytest
import sha3
from ecdsa.util import sigdecode_string

from terrapin.tools.devkit import appboard
from terrapin.tools.devkit.virtualboard import APP_MAIN, REPO, VirtualBoard, VirtualBoardError
from terrapin.tools.micropython import ESP32_HEAP

MAIN = APP_MAIN
HALF_N = ecdsa.SECP256k1.order // 2


def board_config(port: int, **over: object) -> dict:
    cfg: dict = {
        "broker": {"host": "127.0.0.1", "port": port, "keepalive_s": 30},
        "sample_period_s": 0.05,
        "sensors": [{"driver": "simulated"}],
        "ack_timeout_s": 1,
        "backoff_max_s": 2,
        "log": "debug",
    }
    for key, value in over.items():
        cfg[key] = value
    return cfg


class AppBoard(VirtualBoard):
    """The real firmware app on the unix port (tools/devkit's VirtualBoard), one
    process per boot, run from the checkout, with what these tests read back."""

    def __init__(self, exe: str, workdir: Path, cfg: dict, name: str = "board"):
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "config.json"
        self.config.write_text(json.dumps(cfg))
        self.flash = self.dir / "flash"
        super().__init__(
            self.flash,
            script=MAIN,
            args=("--config", str(self.config), "--flash", str(self.flash)),
            deploy=False,
            serial=False,
            log_dir=self.dir,
            cwd=REPO,
        )

    def start(self, *args: str, heap: str = ESP32_HEAP) -> AppBoard:
        self.heapsize = heap
        super().start(*args)
        return self

    def wait(self, timeout: float) -> int:
        try:
            return self.wait_exit(timeout)
        except VirtualBoardError:
            self.kill()
            raise AssertionError(f"board did not exit in {timeout} s:\n{self.console()}") from None

    def kill(self) -> None:
        self.power_cut()

    def console(self, all_boots: bool = False) -> str:
        return super().console(all_boots)

    def stored_seqs(self) -> list[int]:
        """Every seq the firmware reported as written to its outbox, all boots."""
        return appboard.signed(self.console(all_boots=True))

    def stats(self) -> dict:
        for line in self.console().splitlines():
            if line.startswith("TP-STATS "):
                return json.loads(line[9:])
        raise AssertionError("no TP-STATS line:\n" + self.console()[-3000:])

    def address(self) -> str:
        for line in self.console(all_boots=True).splitlines():
            if line.startswith("[info] board address "):
                return line.split()[3]
        raise AssertionError("no address printed:\n" + self.console())


def verify_envelope(envelope: bytes, topic_addr: str, pub: bytes | None = None) -> dict:
    """Check one envelope independently of the firmware; returns the payload map."""
    tag = cbor2.loads(envelope)
    assert cbor2.dumps(tag, canonical=True) == envelope, "envelope not canonical"
    assert isinstance(tag, cbor2.CBORTag) and tag.tag == 18
    protected, unprotected, payload, sig = tag.value
    assert protected == bytes.fromhex("a101382e")
    kid = unprotected[4]
    assert kid.hex() == topic_addr
    sig_structure = cbor2.dumps(["Signature1", protected, b"", payload])
    digest = hashlib.sha256(sig_structure).digest()
    assert int.from_bytes(sig[32:], "big") <= HALF_N, "high S"
    if pub is None:
        keys = ecdsa.VerifyingKey.from_public_key_recovery_with_digest(
            sig, digest, ecdsa.SECP256k1, sigdecode=sigdecode_string
        )
        matches = [k for k in keys if sha3.keccak_256(k.to_string()).digest()[12:] == kid]
        assert matches, "no recovered key matches the kid"
    else:
        assert sha3.keccak_256(pub[1:]).digest()[12:] == kid
        vk = ecdsa.VerifyingKey.from_string(pub[1:], curve=ecdsa.SECP256k1)
        assert vk.verify_digest(sig, digest, sigdecode=sigdecode_string)
    body = cbor2.loads(payload)
    assert cbor2.dumps(body, canonical=True) == payload
    assert set(body) == {1, 2, 3} and 1 <= len(body[3]) <= 16
    body["digest"] = digest
    return body


def merge(seqs: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for s in sorted(set(seqs)):
        if out and out[-1][1] + 1 == s:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


class TestGateway:  # noqa: D101 - not a test class
    __test__ = False

    """Subscribes to every board's readings, checks them, acknowledges them."""

    def __init__(self, host: str, port: int, verify: bool = True):
        self.verify = verify
        self.lock = threading.Lock()
        self.digests: dict[tuple[str, int], bytes] = {}
        self.first_order: dict[str, list[int]] = {}
        self.received = 0
        self.problems: list[str] = []
        self.status: dict[str, bytes] = {}
        self.pubs: dict[str, bytes] = {}
        self.ack_enabled = True
        self.deaf = 0  # readings still to miss, as if not subscribed yet
        self.reject: dict[int, int] = {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-gateway")
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.connect(host, port)
        self.client.loop_start()
        deadline = time.time() + 10
        while not self.client.is_connected() and time.time() < deadline:
            time.sleep(0.02)

    def _on_connect(self, client, userdata, flags, reason, props):  # type: ignore[no-untyped-def]
        sock = client.socket()
        if sock is not None:  # acks go out at once, not after a Nagle delay
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe("terrapin/v1/+/reading", qos=1)
        client.subscribe("terrapin/v1/+/status", qos=1)

    def _on_message(self, client, userdata, msg):  # type: ignore[no-untyped-def]
        _, _, addr, kind = msg.topic.split("/")
        if kind == "reading" and self.deaf > 0:
            self.deaf -= 1
            return
        if kind == "status":
            self.status[addr] = msg.payload
            if msg.payload != b"offline":
                self.pubs[addr] = bytes.fromhex(json.loads(msg.payload)["pub"])
            return
        try:
            body = (
                verify_envelope(msg.payload, addr, self.pubs.get(addr))
                if self.verify
                else (cbor2.loads(cbor2.loads(msg.payload).value[2]) | {"digest": msg.payload})
            )
        except Exception as exc:  # noqa: BLE001 - recorded and asserted by tests
            self.problems.append(f"{addr}: bad envelope: {exc!r}")
            return
        seq = body[1]
        with self.lock:
            self.received += 1
            old = self.digests.get((addr, seq))
            if old is None:
                self.digests[(addr, seq)] = body["digest"]
                self.first_order.setdefault(addr, []).append(seq)
            elif old != body["digest"]:
                self.problems.append(f"{addr}: seq {seq} reused with a different reading")
            ack_it = self.ack_enabled
        if ack_it:
            self.ack(addr, [seq])

    def ack(self, addr: str, seqs: list[int]) -> None:
        stored = [s for s in seqs if s not in self.reject]
        out: dict[int, list] = {}
        if stored:
            out[1] = merge(stored)
        rej = [[s, self.reject[s]] for s in seqs if s in self.reject]
        if rej:
            out[2] = rej
        self.client.publish(f"terrapin/v1/{addr}/ack", cbor2.dumps(out, canonical=True), qos=1)

    def seqs(self, addr: str) -> set[int]:
        with self.lock:
            return {s for (a, s) in self.digests if a == addr}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def gateway(mosquitto) -> Iterator[TestGateway]:  # type: ignore[no-untyped-def]
    gw = TestGateway(mosquitto.host, mosquitto.port)
    yield gw
    gw.close()
    assert not gw.problems, gw.problems


def wait_for(cond, timeout: float, what: str, context=lambda: "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}\n{context()}")


class Helpers:
    """What the tests use, as one fixture (test files cannot import conftest)."""

    AppBoard = AppBoard
    TestGateway = TestGateway
    board_config = staticmethod(board_config)
    wait_for = staticmethod(wait_for)
    verify_envelope = staticmethod(verify_envelope)
    merge = staticmethod(merge)


@pytest.fixture
def fw() -> type[Helpers]:
    return Helpers
