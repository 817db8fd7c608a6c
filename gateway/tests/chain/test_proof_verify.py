"""`terrapin proof` and `terrapin verify` end to end on anvil, and tampered bundles."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from terrapin.gateway.chain import tables as store
from terrapin.gateway.chain.anchorer import Anchorer
from terrapin.gateway.chain.batcher import Batcher
from terrapin.gateway.chain.node import Chain
from terrapin.tools.cli.main import main
from terrapin.tools.devkit.chainkit import ANVIL_KEY, add_readings, deploy_on_rpc, make_db
from terrapin.tools.devkit.simboard import SimBoard

pytestmark = pytest.mark.anvil


@pytest.fixture
def anchored(anvil, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A gateway db with 3 anchored batches on anvil; returns (db, readings, anvil)."""
    monkeypatch.setenv("TERRAPIN_CHAIN_KEY", ANVIL_KEY)
    db = tmp_path / "gw.db"
    conn = make_db(db)
    rng = random.Random(11)
    boards = [SimBoard.make(rng) for _ in range(3)]
    readings = add_readings(conn, boards, 20)
    # One board whose public key the devices table does not know: recovered from its signature.
    readings += add_readings(conn, [SimBoard.make(rng)], 3, register=False)
    Batcher(db, batch_size=9).close_due(force=True)
    config = deploy_on_rpc(anvil.url)
    anchorer = Anchorer(db, Chain.connect(config))
    anchorer.anchor_pending()
    anvil.anchor = config.anchor  # the anchor a verifier is told to trust
    return db, readings, anvil


def _proof(db: Path, board: SimBoard, seq: int, out: Path) -> dict:
    code = main(["proof", "0x" + board.address.hex(), str(seq), "--db", str(db), "--out", str(out)])
    assert code == 0
    return json.loads(out.read_text())


def _verify(
    path: Path, url: str | None, capsys, anchor: str | None = None
) -> tuple[int, list[dict]]:
    args = ["verify", str(path), "--json"] + (["--rpc", url, "--anchor", anchor] if url else [])
    code = main(args)
    return code, json.loads(capsys.readouterr().out)


def test_every_reading_proves_and_verifies_on_chain(anchored, tmp_path: Path, capsys) -> None:
    db, readings, anvil = anchored
    for n, (_, board, seq) in enumerate(readings[::4] + readings[-1:]):
        data = _proof(db, board, seq, tmp_path / f"r{n}.json")
        assert list(data) == [
            "version",
            "envelope",
            "pubkey",
            "device",
            "seq",
            "digest",
            "leaf",
            "proof",
            "root",
            "batch",
            "chain_id",
            "contract",
            "tx",
            "block",
        ]
        assert data["pubkey"] == board.pubkey.hex()
        code, checks = _verify(tmp_path / f"r{n}.json", anvil.url, capsys, anvil.anchor)
        assert code == 0, checks
        assert [c["name"] for c in checks][-5:] == [
            "trusted anchor",
            "chain id",
            "anchoring transaction",
            "registered gateway",
            "contract views",
        ]


def _swap_hex(text: str) -> str:
    """Change the last hex digit."""
    return text[:-1] + ("0" if text[-1] != "0" else "1")


def _tamper(data: dict, field: str, other: dict) -> dict:
    bad = dict(data)
    if field in ("seq", "batch", "chain_id", "block", "version"):
        bad[field] = data[field] + 1
    elif field == "proof":
        bad["proof"] = [*data["proof"][:-1], _swap_hex(data["proof"][-1])]
    elif field == "pubkey":
        bad["pubkey"] = other["pubkey"]
    elif field == "envelope":  # one bit of the signature (the last bytes)
        bad["envelope"] = _swap_hex(data["envelope"])
    else:
        bad[field] = _swap_hex(data[field])
    return bad


# field -> the first check that must fail, and words of its reason
EXPECTED = {
    "version": ("bundle format", "unsupported version"),
    "envelope": ("signature", "does not verify"),
    "pubkey": ("board address", "not the device"),
    "device": ("board address", "not the device"),
    "seq": ("sequence", "payload says seq"),
    "digest": ("digest", "Sig_structure"),
    "leaf": ("leaf", "hash to"),
    "proof": ("proof -> root", "proof leads to"),
    "root": ("proof -> root", "proof leads to"),
    "batch": ("anchoring transaction", "it anchored batch"),
    "chain_id": ("chain id", "bundle says"),
    "contract": ("trusted anchor", "you trust"),
    "tx": ("anchoring transaction", "no transaction"),
    "block": ("anchoring transaction", "bundle says"),
}


def test_tampered_bundles_fail_with_the_right_reason(anchored, tmp_path: Path, capsys) -> None:
    db, readings, anvil = anchored
    _, board, seq = readings[5]
    data = _proof(db, board, seq, tmp_path / "good.json")
    other = _proof(db, readings[6][1], readings[6][2], tmp_path / "other.json")
    for field, (check, words) in EXPECTED.items():
        path = tmp_path / f"bad-{field}.json"
        path.write_text(json.dumps(_tamper(data, field, other)))
        code, checks = _verify(path, anvil.url, capsys, anvil.anchor)
        failed = [c for c in checks if not c["ok"]]
        assert code == 1 and failed, f"tampered {field} verified: {checks}"
        assert failed[0]["name"] == check, f"tampered {field}: {failed}"
        assert words in failed[0]["detail"], f"tampered {field}: {failed[0]}"


def test_proof_errors_are_actionable(anchored, tmp_path: Path, capsys) -> None:
    db, readings, _ = anchored
    board = readings[0][1]
    assert main(["proof", "0x" + board.address.hex(), "999", "--db", str(db)]) == 1
    assert "not stored" in capsys.readouterr().err
    assert main(["proof", "0x1234", "1", "--db", str(db)]) == 1
    assert "20-byte" in capsys.readouterr().err
    conn = make_db(db)
    new = add_readings(conn, [board], 1)
    assert main(["proof", "0x" + board.address.hex(), str(new[0][2]), "--db", str(db)]) == 1
    assert "not in a batch yet" in capsys.readouterr().err
    Batcher(db, batch_size=9).close_due(force=True)
    assert main(["proof", "0x" + board.address.hex(), str(new[0][2]), "--db", str(db)]) == 1
    assert "not anchored yet (pending)" in capsys.readouterr().err
    assert store.batches(store.connect(db), store.PENDING)


def test_offline_verify_passes_its_checks_but_never_reads_as_verified(
    anchored, tmp_path: Path, capsys
) -> None:
    db, readings, _ = anchored
    _, board, seq = readings[-1]
    _proof(db, board, seq, tmp_path / "b.json")
    code, checks = _verify(tmp_path / "b.json", None, capsys)
    assert code == 3  # not 0: nothing was checked on chain
    assert main(["verify", str(tmp_path / "b.json")]) == 3
    out, err = capsys.readouterr()
    assert "NOTHING was checked on chain" in out and "not verified" in err
    assert [c["name"] for c in checks] == [
        "bundle format",
        "envelope",
        "board address",
        "sequence",
        "digest",
        "signature",
        "leaf",
        "proof -> root",
    ]
