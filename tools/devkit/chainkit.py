"""Test kit for the chain tests: a gateway database with the store's own tables,
filled with readings signed by simulated boards (tools/devkit/simboard.py), the
node cross-check scripts, anvil on a free port. Not used by the gateway itself."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

from web3 import Web3

from terrapin.gateway.store import SCHEMA
from terrapin.tools.devkit.broker import free_port
from terrapin.tools.devkit.simboard import FIXED_TIME, SimBoard

REPO = Path(__file__).resolve().parents[2]


# Anvil's first default account (public test key).
ANVIL_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


def make_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)  # the gateway store's own tables
    return conn


def add_readings(
    conn: sqlite3.Connection,
    boards: list[SimBoard],
    count: int,
    *,
    received_at: float | None = None,
    register: bool = True,
) -> list[tuple[int, SimBoard, int]]:
    """Insert `count` signed readings round-robin over `boards`; returns (id, board, seq)."""
    now = time.time() if received_at is None else received_at
    out = []
    conn.execute("BEGIN")
    for board in boards:
        if register:
            conn.execute(
                "INSERT OR IGNORE INTO devices(address, pubkey, added_at) VALUES (?, ?, ?)",
                (board.address, board.pubkey, now),
            )
    for i in range(count):
        board = boards[i % len(boards)]
        seq = (
            conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM readings WHERE device = ?", (board.address,)
            ).fetchone()[0]
            + 1
        )
        envelope, digest = board.signed_reading(seq)
        cur = conn.execute(
            "INSERT INTO readings(device, seq, digest, envelope, time, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (board.address, seq, digest, envelope, FIXED_TIME, now),
        )
        out.append((cur.lastrowid, board, seq))
    conn.execute("COMMIT")
    return out


def run_node(script: str, payload: dict, node: str = "node") -> dict:
    """Run tools/js/<script> with `payload` as JSON on stdin; its stdout parsed."""
    result = subprocess.run(
        [node, str(REPO / "tools" / "js" / script)],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    if result.returncode != 0:
        raise AssertionError(f"{script} failed:\n{result.stderr}")
    return json.loads(result.stdout)


class Anvil:
    """anvil on a free 127.0.0.1 port; stop() / start() keep the port (RPC down tests)."""

    def __init__(self, exe: str, workdir: Path, *args: str):
        self.exe = exe
        self.port = free_port()
        self.args = args
        self.log = workdir / f"anvil-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Anvil:
        cmd = [self.exe, "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        w3 = Web3(Web3.HTTPProvider(self.url, request_kwargs={"timeout": 2}))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if w3.eth.block_number >= 0:
                    return self
            except Exception:
                if self.proc.poll() is not None:
                    raise AssertionError(f"anvil exited: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.05)
        raise AssertionError(f"anvil did not answer on {self.url}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def rpc(self, method: str, *params):
        w3 = Web3(Web3.HTTPProvider(self.url))
        return w3.provider.make_request(method, list(params))


def deploy_on_rpc(url: str, key: str = ANVIL_KEY, **config: object):
    """Deploy both contracts on a JSON-RPC node with `key` (admin and gateway) and return
    the ChainConfig that points at them. The key must then be in $TERRAPIN_CHAIN_KEY."""
    from eth_account import Account

    from terrapin.gateway.chain.node import ChainConfig, deploy, grant_gateway, rpc_web3

    w3 = rpc_web3(url)
    account = Account.from_key(key)
    registry, anchor = deploy(w3, account)
    grant_gateway(w3, account, registry, account.address)
    return ChainConfig(network=url, registry=registry.address, anchor=anchor.address, **config)


def next_batch_id(anchor, gateway: str) -> int:
    """The lowest batch id `gateway` has not anchored on `anchor` (a TerrapinAnchor
    contract): the count of its batches when they have no gaps, as the anchorer sends them."""
    batch_id = 0
    while anchor.functions.rootOf(gateway, batch_id).call() != bytes(32):
        batch_id += 1
    return batch_id


class TcpProxy:
    """127.0.0.1 TCP relay to a node; down() refuses and cuts connections, up() restores.
    Makes "the RPC is down" without touching the chain behind it."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> TcpProxy:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(16)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        return self

    def down(self) -> None:
        with self._lock:
            server, self._server = self._server, None
            conns, self._conns = self._conns, []
        for sock in [server, *conns]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
