"""Firmware updates over MQTT, publisher side (`terrapin device ota publish`).

The board side and the wire format are in firmware/ota_mqtt.py and
docs/PROTOCOL.md ("Firmware updates over MQTT"). This process logs in to the
broker as the OTA user `terrapin-ota` (the only user the broker ACL lets write
offers and chunks; its password is `ota.secret` beside gateway.toml, written by
`terrapin gateway init`), never as the gateway: the broker binds a client id to
its user name, so the gateway's login would take over the gateway's own
session and stop ingest for as long as the update runs. It puts a retained
offer on `terrapin/v1/<addr>/ota` for each board, answers each board's chunk
requests from the bundle in memory, and watches the boards' reports
(`.../ota/get`) and retained status until every board has come back with the
new version, refused it, rolled it back, or the time is up. On
exit it withdraws the offers (an empty retained message), so a board that
connects later does not ask for chunks nobody serves.

Why a command and not a gateway stage: an update is a rare operator action
whose outcome the operator wants to see (progress, and an exit code); the
gateway keeps only the readings path; and the bundle is already signed, so
this process needs a broker login but never the release key.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.home import OTA_SECRET
from terrapin.gateway.mosquitto_conf import OTA_USER
from terrapin.gateway.protocol.topics import STATUS_FILTER

MAX_CHUNK = 384  # firmware/ota_mqtt.py: + topic and headers < the board's 512-byte buffer
REPORT = 0xFFFFFFFF
ID_LEN = 8


class Report(IntEnum):
    """Board -> publisher report codes (firmware/ota_mqtt.py has the same numbers)."""

    FETCHED = 1
    ROLLED_BACK = 2
    REFUSED_HASH = 3
    REFUSED_BUNDLE = 4
    NOT_NEWER = 5
    GAVE_UP = 6
    NO_UPDATES = 7
    FLASH_ERROR = 8


def offer_for(bundle: bytes, chunk: int = MAX_CHUNK) -> dict:
    """The offer JSON object for a bundle (version and release from its manifest)."""
    from terrapin.tools.board.ota import MAGIC, read_manifest

    try:
        if not bundle.startswith(MAGIC):
            raise ValueError("bad magic")
        man = read_manifest(bundle)
        if not isinstance(man.get("version"), str) or not isinstance(man.get("release"), int):
            raise ValueError("the manifest has no version or release")
    except (ValueError, struct.error, AttributeError) as exc:
        raise TerrapinError(
            f"not a Terrapin OTA bundle: {exc}", hint="make one with `terrapin device ota build`"
        ) from None
    return offer_for_parts(bundle, version=man["version"], release=man["release"], chunk=chunk)


def offer_for_parts(bundle: bytes, *, version: str, release: int, chunk: int = MAX_CHUNK) -> dict:
    return {
        "v": 1,
        "version": version,
        "release": int(release),
        "size": len(bundle),
        "sha256": hashlib.sha256(bundle).hexdigest(),
        "chunk": min(chunk, MAX_CHUNK),
    }


def encode_chunk(bid: bytes, offset: int, data: bytes) -> bytes:
    return struct.pack(">8sI", bid, offset) + data


def decode_get(payload: bytes) -> tuple[bytes, int, int, str]:
    """(id, offset, length or report code, report text); raises ValueError."""
    if len(payload) < 14:
        raise ValueError("short request")
    bid, offset, length = struct.unpack(">8sIH", payload[:14])
    return bid, offset, length, payload[14:].decode("utf-8", "replace")


@dataclass
class BoardUpdate:
    address: str
    served: int = 0  # highest byte offset served
    chunks: int = 0
    started: float | None = None  # first chunk request
    fetched: float | None = None  # FETCHED report
    result: str = "waiting"  # waiting, fetching, fetched, updated, up_to_date, or a failure
    text: str = ""
    done: threading.Event = field(default_factory=threading.Event)
    fw_seen: str | None = None

    def as_dict(self) -> dict:
        transfer = round(self.fetched - self.started, 3) if self.started and self.fetched else None
        return {
            "address": self.address,
            "result": self.result,
            "text": self.text,
            "chunks": self.chunks,
            "bytes": self.served,
            "transfer_s": transfer,
        }


class Publisher:
    """Offer one bundle to some boards and serve their chunk requests."""

    def __init__(
        self,
        bundle: bytes,
        addresses: list[str],
        *,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        tls_ca: str | None = None,
        on_progress: Callable[[BoardUpdate], None] | None = None,
    ):
        import paho.mqtt.client as mqtt

        self.bundle = bundle
        self.offer = offer_for(bundle)
        self.id = bytes.fromhex(self.offer["sha256"])[:ID_LEN]
        clean = [a.lower().removeprefix("0x") for a in addresses]
        self.boards = {a: BoardUpdate(a) for a in clean}
        if not self.boards:
            raise TerrapinError("no board to update")
        for a in self.boards:
            if len(a) != 40 or any(c not in "0123456789abcdef" for c in a):
                raise TerrapinError(f"{a!r} is not a board address (40 hex characters)")
        self.on_progress = on_progress
        self.connected = threading.Event()
        self.lock = threading.Lock()
        # The id the broker gives it anyway (use_username_as_clientid): its user name.
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=username or OTA_USER)
        if username:
            c.username_pw_set(username, password or None)
        if tls_ca:
            c.tls_set(ca_certs=tls_ca)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        self.client = c
        self.host, self.port = host, port

    # -- life cycle ---------------------------------------------------------
    def start(self, timeout: float = 10.0) -> Publisher:
        try:
            self.client.connect(self.host, self.port)
        except OSError as exc:
            raise TerrapinError(
                f"cannot reach the broker at {self.host}:{self.port}: {exc}"
            ) from None
        self.client.loop_start()
        if not self.connected.wait(timeout):
            self.client.loop_stop()
            raise TerrapinError(
                f"the broker at {self.host}:{self.port} did not accept the OTA login",
                hint=f"check {OTA_SECRET} beside gateway.toml (from `terrapin gateway init`)",
            )
        return self

    def wait(self, timeout: float) -> dict[str, BoardUpdate]:
        deadline = time.monotonic() + timeout
        for b in self.boards.values():
            b.done.wait(max(0.0, deadline - time.monotonic()))
            if not b.done.is_set():
                with self.lock:
                    b.text = f"not back with the new version within {timeout:.0f} s ({b.result})"
                    b.result = "timeout"
        return self.boards

    def stop(self) -> None:
        """Withdraw the offers (empty retained messages) and disconnect."""
        infos = []
        for addr in self.boards:
            infos.append(self.client.publish(f"terrapin/v1/{addr}/ota", b"", qos=1, retain=True))
        for info in infos:
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()

    # -- MQTT ---------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason, props) -> None:
        if reason.is_failure:
            return
        import socket

        sock = client.socket()
        if sock is not None:  # one small chunk per round trip: no Nagle delay
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe("terrapin/v1/+/ota/get", qos=0)
        client.subscribe(STATUS_FILTER, qos=1)
        payload = json.dumps(self.offer, sort_keys=True, separators=(",", ":")).encode()
        for addr in self.boards:
            client.publish(f"terrapin/v1/{addr}/ota", payload, qos=1, retain=True)
        self.connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        parts = msg.topic.split("/")
        if len(parts) < 4 or parts[2] not in self.boards:
            return
        board = self.boards[parts[2]]
        if parts[3:] == ["ota", "get"]:
            self._on_get(board, msg.payload)
        elif parts[3:] == ["status"]:
            self._on_status(board, msg.payload)

    def _on_get(self, board: BoardUpdate, payload: bytes) -> None:
        try:
            bid, offset, length, text = decode_get(payload)
        except ValueError:
            return
        if bid != self.id:
            return  # another offer's request
        if offset == REPORT:
            self._on_report(board, length, text)
            return
        if offset >= len(self.bundle) or not 0 < length <= MAX_CHUNK:
            return
        data = self.bundle[offset : offset + length]
        self.client.publish(
            f"terrapin/v1/{board.address}/ota/chunk", encode_chunk(bid, offset, data), qos=0
        )
        with self.lock:
            if board.started is None:
                board.started = time.monotonic()
            board.chunks += 1
            board.served = max(board.served, offset + len(data))
            if board.result == "waiting":
                board.result = "fetching"
        if self.on_progress:
            self.on_progress(board)

    def _on_report(self, board: BoardUpdate, code: int, text: str) -> None:
        try:
            name = Report(code).name.lower()
        except ValueError:
            name = f"report {code}"
        with self.lock:
            board.text = text
            if code == Report.FETCHED:
                board.fetched = time.monotonic()
                board.result = "fetched"  # it reboots, installs, boots on trial; status tells
            elif code == Report.NOT_NEWER and board.result == "waiting":
                board.result = "up_to_date"
                board.done.set()
            elif code != Report.NOT_NEWER:
                board.result = name
                board.done.set()
        if self.on_progress:
            self.on_progress(board)

    def _on_status(self, board: BoardUpdate, payload: bytes) -> None:
        try:
            st = json.loads(payload)
        except ValueError:
            return  # `offline`
        if not isinstance(st, dict):
            return
        fw = st.get("fw")
        with self.lock:
            board.fw_seen = fw
            new = fw == self.offer["version"] and st.get("state") == "online"
            if new and board.result in ("fetched", "fetching", "waiting"):
                board.result = "up_to_date" if board.result == "waiting" else "updated"
                board.done.set()
        if self.on_progress:
            self.on_progress(board)


OK_RESULTS = ("updated", "up_to_date")


def ota_login(config_path) -> tuple[str, str]:
    """(user, password) of the OTA publisher: `terrapin-ota` and the first line of
    ota.secret beside the gateway config (never the gateway's own login)."""
    from pathlib import Path

    secret = Path(config_path).parent / OTA_SECRET
    try:
        password = secret.read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        raise TerrapinError(
            f"no OTA broker password in {secret}",
            hint="`terrapin gateway init` writes it with the OTA user; docs/GATEWAY.md "
            "(Broker identity) says how to add both to an older home",
        ) from None
    return OTA_USER, password


def publish(
    bundle: bytes,
    addresses: list[str],
    *,
    host: str,
    port: int,
    username: str | None,
    password: str | None,
    tls_ca: str | None = None,
    timeout: float = 600.0,
    on_progress: Callable[[BoardUpdate], None] | None = None,
) -> dict:
    """Run one update to the end; returns {"offer": ..., "boards": [...]}."""
    pub = Publisher(
        bundle,
        addresses,
        host=host,
        port=port,
        username=username,
        password=password,
        tls_ca=tls_ca,
        on_progress=on_progress,
    ).start()
    try:
        boards = pub.wait(timeout)
    finally:
        pub.stop()
    return {"offer": dict(pub.offer), "boards": [b.as_dict() for b in boards.values()]}


def all_boards(db_path) -> list[str]:
    """Every board on the gateway's allow-list (the store's devices table)."""
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT address FROM devices ORDER BY address").fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise TerrapinError(f"cannot read the board list from {db_path}: {exc}") from None
    return [bytes(r[0]).hex() for r in rows]
