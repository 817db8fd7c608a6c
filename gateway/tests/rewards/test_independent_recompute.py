"""Issue 19's sign-off: epochs recomputed by a second implementation written from
docs/REWARDS.md alone (`independent.py`: cbor2, ecdsa, eth-hash, web3), byte for byte:
the golden manifest, several epochs with 3 and then 5 boards settled by the gateway's
own code on the embedded chain and on anvil, and `terrapin demo` runs (3 boards on the
embedded chain, 5 on anvil). Each rebuilt manifest must serialise to the published
bytes, its keccak256 must be the `RootPublished` manifest hash, its root and total the
published ones, its batch roots the `Anchored` ones, its bindings the `BoardBound` events,
and the trees @openzeppelin/merkle-tree's (node)."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from web3 import Web3

from terrapin.tools.devkit import chainkit
from terrapin.tools.devkit.simboard import SimBoard

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


def load(name: str):
    """A helper module beside this file (pytest imports tests with importlib)."""
    spec = importlib.util.spec_from_file_location(f"rewards_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ind, epochnet = load("independent"), load("epochnet")
DAY = epochnet.DAY
OWNERS = ["0x" + c * 20 for c in ("a1", "b2", "c3")]


def node_tree(node_exe: str, script: str, cases: list[dict]) -> list[dict]:
    proc = subprocess.run(
        [node_exe, str(REPO / "tools/js" / script)],
        input=json.dumps({"cases": cases}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["results"]


def check_independently(
    data: bytes, node_exe: str, w3: Web3 | None = None, rewards: str | None = None
) -> dict:
    """Everything this file checks of one published manifest; returns the rebuilt one.
    On chain, `rewards` is the contract the test knows it published on (pinned)."""
    m = json.loads(data)
    if w3 is not None:
        assert m["chain"]["rewards"] == rewards.lower()
    rebuilt = ind.rebuild(m)
    for key in m:  # name the first field that differs, then the bytes
        assert rebuilt[key] == m[key], f"{key}: published {m[key]!r}, recomputed {rebuilt[key]!r}"
    assert ind.dump(rebuilt) == data, "same content, other bytes: the doc's format is incomplete"
    # The trees, node for node, against @openzeppelin/merkle-tree.
    if rebuilt["cumulative"]:
        values = [[o, a] for o, a in rebuilt["cumulative"].items()]
        (oz,) = node_tree(node_exe, "rewards-tree.mjs", [{"values": values}])
        assert oz["tree"] == rebuilt["tree"]["nodes"]
    cases = [
        {"values": [[r["board"], str(r["seq"]), r["digest"]] for r in b["readings"]], "proofs": []}
        for b in rebuilt["batches"]
    ]
    if cases:
        results = node_tree(node_exe, "merkle-check.mjs", cases)
        assert [r["root"] for r in results] == [b["root"] for b in rebuilt["batches"]]
    if w3 is None:
        return rebuilt
    facts = ind.chain_facts(w3, m)
    assert facts["published"] == {
        "root": rebuilt["root"],
        "total": rebuilt["total"],
        "manifest_hash": ind.manifest_hash(data),
    }
    listed = [
        {k: b[k] for k in ("gateway", "id", "block", "root", "count")} for b in rebuilt["batches"]
    ]
    assert sorted(facts["anchored"], key=lambda a: (a["block"], a["id"])) == listed
    for b in rebuilt["batches"]:
        assert w3.eth.get_block(b["block"])["timestamp"] == b["timestamp"]
    bound = [
        {k: e[k] for k in ("block", "log_index", "board", "owner", "timestamp")}
        for e in facts["bindings"]
    ]
    assert bound == m["bindings"]
    cut = w3.eth.get_block(m["cutoff"]["block"])
    assert cut["timestamp"] == m["cutoff"]["timestamp"]
    assert cut["timestamp"] >= (m["epoch"] + 1) * m["rule"]["epoch_seconds"]
    return rebuilt


def test_the_golden_manifest_is_rebuilt_to_its_bytes(node_exe):
    fixtures = HERE / "fixtures"
    data = (fixtures / "epoch-golden.manifest.json").read_bytes()
    golden = json.loads((fixtures / "epoch-golden.json").read_text())
    rebuilt = check_independently(data, node_exe)
    assert (rebuilt["root"], rebuilt["total"]) == (golden["root"], golden["total"])
    assert ind.manifest_hash(data) == golden["manifest_hash"]
    # The rebuild can fail: a tampered input changes what it derives.
    tampered = json.loads(data)
    tampered["rule"]["cap"] = 2
    with pytest.raises(AssertionError, match="boards: published"):
        check_independently(ind.dump(tampered), node_exe)


@pytest.mark.parametrize("kind", ["embedded", "anvil"])
def test_several_epochs_with_3_then_5_boards_are_rebuilt_and_match_the_chain(
    kind, request, monkeypatch, tmp_path, node_exe
):
    net = epochnet.Network(kind, request, monkeypatch, tmp_path)
    rng = random.Random(1919)
    boards = [SimBoard.make(rng) for _ in range(5)]
    day0 = int(net.w3.eth.get_block("latest")["timestamp"]) // DAY + 2
    seqs = dict.fromkeys(range(5), 0)

    def readings(day: int, active: int, per_board: int, odd=()) -> None:
        t = day * DAY + 900
        net.at(t)
        for i in range(active):
            for _ in range(per_board + i % 3):  # unequal counts, some past the cap
                seqs[i] += 1
                net.ingest(boards[i], seqs[i], t, 900.0 if (i, seqs[i]) in odd else 21.5)
            net.anchor()  # one batch per board: several batches an epoch

    # Epoch 0: 3 boards (owners a1, b2; the third unowned), one out-of-range reading.
    net.at(day0 * DAY + 300)
    net.bind(boards[0], OWNERS[0])
    net.bind(boards[1], OWNERS[1])
    readings(day0, 3, 3, odd={(1, 2)})
    # Epoch 1: 5 boards; board 2 bound to c3, board 0 moved to b2 inside the epoch.
    net.at((day0 + 1) * DAY + 300)
    net.bind(boards[2], OWNERS[2])
    net.bind(boards[3], OWNERS[0])
    readings(day0 + 1, 5, 2)
    net.bind(boards[0], OWNERS[1])
    # Epoch 2: 5 boards again; board 3 unbound (zero owner), an equivocation before settling.
    net.at((day0 + 2) * DAY + 300)
    net.bind(boards[3], "0x" + "00" * 20)
    readings(day0 + 2, 5, 1)
    net.ingest(boards[4], seqs[4], (day0 + 2) * DAY + 900, value=22.5)
    net.at((day0 + 3) * DAY + 300)

    published = [net.settle(day0 + k) for k in range(3)]
    rebuilt = [check_independently(data, node_exe, net.w3, net.token.address) for data in published]
    sizes = [len({b for b in r["boards"]}) for r in rebuilt]
    assert sizes == [3, 5, 5]
    assert rebuilt[2]["previous"]["root"] == rebuilt[1]["root"]
    assert any(
        r["reason"] == "flagged" and r["flags"] == 64
        for b in rebuilt[2]["batches"]
        for r in b["readings"]
    )
    net.close()


def demo(out: Path, boards: int, *rpc: str, env: dict | None = None) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "terrapin.tools.cli.main",
            "demo",
            "--boards",
            str(boards),
            "--readings",
            "3",
            "--out",
            str(out),
            *rpc,
        ],
        capture_output=True,
        text=True,
        timeout=170,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((out / "summary.json").read_text())


@pytest.mark.timeout(240)
def test_demo_runs_are_rebuilt_on_the_embedded_chain_and_on_anvil(
    micropython_exe, mosquitto_exe, anvil_exe, node_exe, tmp_path
):
    # 3 boards, embedded chain: the chain ends with the demo, so what it published is
    # what the demo's summary records (and its in-process verify).
    summary = demo(tmp_path / "embedded", 3)
    r = summary["rewards"]
    data = Path(r["manifest"]).read_bytes()
    rebuilt = check_independently(data, node_exe)
    assert (rebuilt["root"], rebuilt["total"]) == (r["root"], r["total"])
    assert ind.manifest_hash(data) == r["manifest_hash"] and r["manifest_verified_on_chain"]
    assert len(rebuilt["boards"]) == 3
    # 5 boards on anvil: the chain outlives the demo and is read directly.
    node = chainkit.Anvil(anvil_exe, tmp_path).start()
    try:
        summary = demo(
            tmp_path / "anvil",
            5,
            "--rpc",
            node.url,
            "--key-env",
            "K",
            env={"K": chainkit.ANVIL_KEY},
        )
        data = Path(summary["rewards"]["manifest"]).read_bytes()
        w3 = Web3(Web3.HTTPProvider(node.url))
        rebuilt = check_independently(data, node_exe, w3, summary["chain"]["rewards"])
        assert len(rebuilt["boards"]) == 5
    finally:
        node.stop()
