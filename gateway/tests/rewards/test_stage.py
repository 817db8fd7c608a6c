"""The rewards stage inside a running gateway (workers = 0) on the embedded chain:
signed readings through a real Mosquitto, the chain stages anchor them, the rewards
stage settles each ended epoch exactly once, also across a restart of the stage, and
/api/rewards shows each owner's boards, amounts and what the contract lets it claim."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from terrapin.firmware import secp256k1
from terrapin.gateway.chain import stage
from terrapin.gateway.config import validate
from terrapin.gateway.rewards import binding as rewards_binding
from terrapin.gateway.rewards import manifest as fmt
from terrapin.gateway.rewards import onchain as rewards_chain
from terrapin.gateway.rewards.stage import rewards
from terrapin.gateway.server import Gateway
from terrapin.gateway.store import Store
from terrapin.tools.devkit.broker import free_port
from terrapin.tools.devkit.simboard import SimBoard

EPOCH_SECONDS = 2
BUDGET = 10**21
OWNER = "0x" + "a1" * 20
STRANGER = "0x" + "b2" * 20


def gateway_config(tmp_path: Path, mqtt_port: int, api_port: int):
    return validate(
        {
            "mqtt": {"port": mqtt_port, "client_id": f"gw-{api_port}"},
            "store": {"path": str(tmp_path / "gw.db")},
            "pipeline": {
                "workers": 0,
                "stages": ["batch", "anchor", "rewards"],
            },
            "api": {"port": api_port},
            "log": {"level": "warning"},
            # chain_for keeps one chain per distinct [chain] section in the process: a
            # value of this test's own gives it its own embedded chain.
            "chain": {
                "batch_size": 1000,
                "batch_seconds": 0.3,
                "poll_seconds": 0.1,
                "stuck_after": 90 + (time.time_ns() % 10**6) / 10**9,
            },
            "rewards": {
                "epoch_seconds": EPOCH_SECONDS,
                "budget": str(BUDGET),
                "poll_seconds": 0.2,
                "out_dir": str(tmp_path / "rewards"),
            },
        }
    )


class Running:
    def __init__(self, cfg):
        self.gateway = Gateway(cfg)
        self.shutdown = threading.Event()
        self.thread = threading.Thread(target=self.gateway.run, args=(self.shutdown,))
        self.thread.start()
        if not self.gateway.ingest.connected.wait(10):
            raise AssertionError("gateway did not connect to the broker")
        time.sleep(0.2)

    @property
    def rewards(self):
        return next(s for s in self.gateway.stages if type(s).__name__ == "RewardsStage")

    def stop(self) -> None:
        self.shutdown.set()
        self.thread.join(20)
        assert not self.thread.is_alive(), "gateway did not stop"


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(predicate, what: str, timeout: float = 30.0, context=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{context()}")


def published_epochs(token) -> list[int]:
    return [e["args"]["epoch"] for e in token.events.RootPublished().get_logs(from_block=0)]


def send(board: SimBoard, seqs) -> None:
    for seq in seqs:
        board.publish(board.envelope(seq), seq)
    assert board.wait_settled(seqs, 15), f"readings {list(seqs)} not acked"


def test_stage_settles_each_epoch_once_across_restarts(mosquitto, tmp_path: Path) -> None:
    api_port = free_port()
    cfg = gateway_config(tmp_path, mosquitto.port, api_port)
    board = SimBoard("127.0.0.1", mosquitto.port).start()
    unowned = SimBoard("127.0.0.1", mosquitto.port).start()
    store = Store(cfg.store.path)
    for b in (board, unowned):
        store.add_device(b.address, b.public)
    store.close()
    running = Running(cfg)
    try:
        chain = stage.chain_for(cfg)  # the very chain the anchorer and the stage use
        stage_obj = running.rewards
        assert stage_obj.chain is chain
        token = stage_obj.token
        registry = rewards_chain.binding_contract(chain.w3, chain.registry.address)
        # The board binds itself to OWNER with its own key (EIP-712, nonce 0).
        digest = rewards_binding.bind_digest(OWNER, 0, chain.chain_id, registry.address)
        sig, v = secp256k1.sign_recoverable(board.key, digest)
        rewards_binding.check_binding(
            board.address, OWNER, 0, chain.chain_id, registry.address, bytes(sig) + bytes([v + 27])
        )
        rewards_chain.bind_board(
            chain.w3,
            chain.account,
            registry,
            "0x" + board.hex,
            OWNER,
            bytes(sig) + bytes([v + 27]),
        )

        def context() -> str:
            return json.dumps(running.gateway.snapshot()["stages"], indent=1, default=str)

        # One batch (so one anchoring block, one epoch): publish both, then wait.
        for b, seqs in ((board, range(1, 6)), (unowned, range(1, 4))):
            for seq in seqs:
                b.publish(b.envelope(seq), seq)
        assert board.wait_settled(range(1, 6), 15) and unowned.wait_settled(range(1, 4), 15)
        first = wait_for(
            lambda: running.rewards.status()["last_settled_epoch"],
            "the first epoch to be settled",
            context=context,
        )
        status = running.rewards.status()
        assert status["settled"] == 1 and status["last_tx"], status
        assert published_epochs(token) == [first]
        # Only the owned board's share is paid: two boards, weights 5 and 3.
        code, view = get(f"http://127.0.0.1:{api_port}/api/rewards")
        assert code == 200, view
        assert view["epoch"] == first and view["published"] is True
        assert view["boards"] == {"0x" + board.hex: OWNER}
        mine = view["owners"][OWNER]
        assert mine["boards"] == ["0x" + board.hex]
        assert int(mine["cumulative"]) == BUDGET * 5 // 8 == int(mine["epoch_amount"])
        assert mine["claimed"] == "0" and mine["claimable"] == mine["cumulative"]
        code, one = get(f"http://127.0.0.1:{api_port}/api/rewards/{OWNER.upper()[2:]}")
        assert code == 200 and one["owner"] == OWNER and one["boards"] == ["0x" + board.hex], one
        assert one["claimable"] == mine["cumulative"] and one["published_epoch"] == first

        # The owner claims; the API sees it.
        receipt = rewards_chain.claim(
            chain.w3, chain.account, token, load_distribution(tmp_path, first), OWNER
        )
        assert receipt["status"] == 1
        code, one = get(f"http://127.0.0.1:{api_port}/api/rewards/{OWNER}")
        assert one["claimed"] == one["cumulative"] and one["claimable"] == "0", one
        assert one["balance"] == one["cumulative"]

        # Unknown and malformed owners.
        code, err = get(f"http://127.0.0.1:{api_port}/api/rewards/{STRANGER}")
        assert code == 404 and err["error"] == "unknown_owner" and err["owner"] == STRANGER
        code, err = get(f"http://127.0.0.1:{api_port}/api/rewards/0x1234")
        assert code == 400 and err["error"] == "bad_address", err

        # Restart the stage (a new Gateway in the same process: the same embedded chain).
        polls = running.rewards.polls
        wait_for(lambda: running.rewards.polls >= polls + 3, "more polls")
        running.stop()
        running = Running(cfg)
        assert running.rewards.token.address == token.address  # reused, not redeployed
        wait_for(lambda: running.rewards.polls >= 5, "the restarted stage to poll")
        assert published_epochs(token) == [first]
        assert running.rewards.status()["last_settled_epoch"] == first

        # A later epoch: settled once more, the earlier one still exactly once.
        while int(time.time()) // EPOCH_SECONDS <= first:
            time.sleep(0.1)
        send(board, range(6, 9))
        second = wait_for(
            lambda: (
                (running.rewards.status()["last_settled_epoch"] or 0) > first
                and running.rewards.status()["last_settled_epoch"]
            ),
            "a second epoch to be settled",
            context=context,
        )
        epochs = published_epochs(token)
        # Epochs go up by one on chain: any skipped (empty) epoch carries the root over.
        assert epochs == list(range(first, second + 1)), epochs
        assert len(set(epochs)) == len(epochs)
        # The stage settles from its own record: a step now does nothing more.
        assert running.rewards.step() == []
        assert published_epochs(token) == epochs
        code, view = get(f"http://127.0.0.1:{api_port}/api/rewards")
        assert view["epoch"] == second
        assert int(view["owners"][OWNER]["cumulative"]) == BUDGET * 5 // 8 + BUDGET
        assert view["owners"][OWNER]["claimable"] == str(BUDGET)
        status = get(f"http://127.0.0.1:{api_port}/api/status")[1]["stages"]["RewardsStage"]
        assert status["last_settled_epoch"] == second and status["settled"] == 2
        assert status["error"] is None

        # Killed after the publishing transaction but before the record: the next start
        # finds the root on chain, records it with that transaction, sends nothing.
        running.stop()
        with sqlite3.connect(cfg.store.path) as conn:
            conn.execute("DELETE FROM rewards_settled WHERE epoch = ?", (second,))
            conn.execute("UPDATE rewards_epochs SET publish_tx = NULL WHERE epoch = ?", (second,))
        again = rewards(cfg)
        assert again.step() == [second]
        assert published_epochs(token) == epochs
        event = token.events.RootPublished().get_logs(from_block=0)[-1]
        assert again.status()["last_tx"] == event["transactionHash"].to_0x_hex()
        # The recovered epoch's manifest is the one the chain committed to, byte for byte.
        manifest = "0x" + bytes(event["args"]["manifestHash"]).hex()
        assert again.status()["last_manifest_hash"] == manifest
        path = Path(cfg.store.path).parent / "rewards" / f"epoch-{second}.manifest.json"
        assert "0x" + fmt.manifest_hash(path.read_bytes()).hex() == manifest
    finally:
        running.stop()
        board.stop()
        unowned.stop()


def load_distribution(tmp_path: Path, epoch: int):
    from terrapin.gateway.rewards import distribution

    return distribution.load(tmp_path / "rewards" / f"epoch-{epoch}.json")


@pytest.mark.parametrize("bad", [{"poll_seconds": 0}, {"epoch_seconds": -1}, {"nonsense": 1}])
def test_stage_config_errors_are_messages(tmp_path: Path, bad: dict) -> None:
    from terrapin.gateway.errors import ConfigError

    cfg = validate({"store": {"path": str(tmp_path / "gw.db")}, "rewards": bad})
    with pytest.raises(ConfigError):
        rewards(cfg)
