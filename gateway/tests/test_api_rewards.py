"""/api/rewards and /api/rewards/<owner> from the gateway database alone (no chain in
the process): every owner with its boards and amounts, one owner with its proof,
404 for an owner nobody knows, 400 for something that is not an address."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

from terrapin.gateway.api import Api, db_rewards_view
from terrapin.gateway.rewards import distribution
from terrapin.gateway.rewards import tables as rewards_store

OWNER_A = "0x" + "a1" * 20  # two boards, earned
OWNER_B = "0x" + "b2" * 20  # a board bound, nothing earned yet
BOARD_1, BOARD_2, BOARD_3 = ("0x" + f"{i:02x}" * 20 for i in (1, 2, 3))


def make_db(tmp_path: Path) -> Path:
    db = tmp_path / "gw.db"
    conn = rewards_store.connect(db)
    with conn:
        conn.executemany(
            "INSERT INTO rewards_bindings VALUES (?, ?, ?, ?, ?)",
            [
                (10, 0, bytes.fromhex(BOARD_1[2:]), bytes.fromhex(OWNER_A[2:]), 100),
                (10, 1, bytes.fromhex(BOARD_2[2:]), bytes.fromhex(OWNER_A[2:]), 100),
                (11, 0, bytes.fromhex(BOARD_3[2:]), bytes.fromhex(OWNER_B[2:]), 101),
            ],
        )
    dist = distribution.build(7, {OWNER_A: 1500}, epoch_amounts={OWNER_A: 500})
    path = distribution.write(dist, tmp_path / "rewards" / "epoch-7.json")
    rewards_store.record(conn, dist, path)
    conn.close()
    return db


def url(api: Api) -> str:
    host, port = api.address
    return f"http://{host}:{port}"


def get(base: str, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(base + path, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class FakeGateway:
    """What the Api needs from a Gateway: a snapshot method, cfg.store.path, stages."""

    def __init__(self, db: Path):
        self.cfg = SimpleNamespace(store=SimpleNamespace(path=str(db)))
        self.stages: list = []

    def snapshot(self) -> dict:
        return {"ok": True}


def test_rewards_view_of_a_gateway_without_chain(tmp_path: Path) -> None:
    db = make_db(tmp_path)
    api = Api("127.0.0.1", 0, FakeGateway(db).snapshot).start()  # the Gateway's own view
    base = url(api)
    try:
        code, view = get(base, "/api/rewards")
        assert code == 200, view
        assert view["epoch"] == 7 and view["published"] is False and view["chain"] is False
        assert view["owners"] == {
            OWNER_A: {"boards": [BOARD_1, BOARD_2], "epoch_amount": "500", "cumulative": "1500"},
            OWNER_B: {"boards": [BOARD_3], "epoch_amount": "0", "cumulative": "0"},
        }
        code, one = get(base, "/api/rewards/" + OWNER_A.upper().replace("0X", "0x"))
        assert code == 200, one
        assert one["owner"] == OWNER_A and one["boards"] == [BOARD_1, BOARD_2]
        assert one["cumulative"] == "1500" and one["epoch_amount"] == "500"
        assert one["proof"] == []  # the only leaf is the root
        code, one = get(base, "/api/rewards/" + OWNER_B[2:])  # without 0x
        assert code == 200 and one["boards"] == [BOARD_3] and one["cumulative"] == "0"

        code, err = get(base, "/api/rewards/0x" + "c3" * 20)
        assert code == 404 and err["error"] == "unknown_owner", err
        for bad in ("0x1234", "0x" + "zz" * 20, "nonsense", OWNER_A + "/x"):
            code, err = get(base, "/api/rewards/" + bad)
            assert code == 400 and err["error"] == "bad_address", (bad, err)
        assert get(base, "/api/status") == (200, {"ok": True})
    finally:
        api.stop()


def test_rewards_view_before_any_epoch(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")  # a database the rewards stage never wrote to
    for db in (empty, tmp_path / "missing.db"):
        api = Api("127.0.0.1", 0, lambda: {}, rewards=db_rewards_view(db)).start()
        try:
            code, err = get(url(api), "/api/rewards")
            assert code == 404 and err["error"] == "no_rewards", err
        finally:
            api.stop()
    api = Api("127.0.0.1", 0, lambda: {}).start()  # no gateway behind it at all
    try:
        code, err = get(url(api), "/api/rewards/" + OWNER_A)
        assert code == 404 and err["error"] == "no_rewards", err
    finally:
        api.stop()
