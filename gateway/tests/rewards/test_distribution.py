"""Reward distribution: tree equals @openzeppelin/merkle-tree's, file round trip, strictness."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest

from terrapin.gateway.rewards import distribution
from terrapin.gateway.rewards.distribution import DistributionError

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "tools" / "js" / "rewards-tree.mjs"


def random_amounts(rng: random.Random, n: int) -> dict[str, int]:
    return {
        "0x" + rng.randbytes(20).hex(): rng.choice(
            [1, rng.randrange(1, 2**64), rng.randrange(2**255)]
        )
        for _ in range(n)
    }


def js_trees(node: str, cases: list[dict[str, int]]) -> list[dict]:
    payload = {"cases": [{"values": [[o, str(a)] for o, a in c.items()]} for c in cases]}
    proc = subprocess.run(
        [node, str(SCRIPT)], input=json.dumps(payload), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["results"]


def test_roots_and_proofs_equal_openzeppelin(node_exe):
    rng = random.Random(7)
    cases = [random_amounts(rng, n) for n in (1, 2, 3, 4, 5, 7, 8, 9, 16, 33, 100, 1000)]
    for amounts, js in zip(cases, js_trees(node_exe, cases), strict=True):
        dist = distribution.build(3, amounts)
        assert "0x" + dist.root.hex() == js["root"], f"{len(amounts)} owners"
        for owner, claim in dist.claims.items():
            assert ["0x" + p.hex() for p in claim.proof] == js["proofs"][owner]
            assert dist.verify(owner)


def test_leaf_is_double_keccak_of_abi_encoding():
    from eth_abi import encode
    from eth_utils import keccak

    owner, amount = "0x" + "ab" * 20, 12345 * 10**18
    assert distribution.leaf_hash(owner, amount) == keccak(
        keccak(encode(["address", "uint256"], [owner, amount]))
    )


def test_file_round_trip(tmp_path):
    dist = distribution.build(
        9,
        {"0x" + "11" * 20: 5, "0x" + "22" * 20: 7, "0x" + "33" * 20: 0},
        epoch_amounts={"0x" + "11" * 20: 2},
        rule={"budget": "10", "cap": 3},
        chain_id=31337,
    )
    assert len(dist.claims) == 2  # zero amounts get no leaf
    path = distribution.write(dist, tmp_path / "d" / "epoch-9.json")
    again = distribution.load(path)
    assert again == dist
    assert json.loads(path.read_text())["total"] == "12"


def test_nobody_earned_is_an_error():
    with pytest.raises(DistributionError, match="nobody"):
        distribution.build(1, {"0x" + "11" * 20: 0})


def _doc():
    return distribution.build(4, {"0x" + "11" * 20: 5, "0x" + "22" * 20: 7}).to_json()


def _set(path, value):
    def change(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return doc

    return change


OWNER1 = "0x" + "11" * 20


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set(["kind"], "something"), "not a Terrapin"),
        (_set(["version"], 2), "version"),
        (_set(["leaf_encoding"], ["address", "uint64"]), "leaf encoding"),
        (_set(["epoch"], -1), "epoch"),
        (_set(["root"], "0x" + "00" * 32), "does not lead to the root"),
        (_set(["root"], "0x12"), "root"),
        (_set(["total"], "13"), "total"),
        (_set(["total"], "012"), "leading zeros"),
        (_set(["claims", OWNER1, "amount"], "6"), "total"),
        (_set(["claims", OWNER1, "amount"], 5), "decimal string"),
        (_set(["claims", OWNER1, "proof"], []), "does not lead"),
        (_set(["claims", OWNER1, "proof"], ["0xzz"]), "proof element"),
        (_set(["claims"], {}), "non-empty"),
        (_set(["claims", "0x1234"], {"amount": "1", "proof": []}), "not an address"),
    ],
)
def test_invalid_files_are_refused(change, message):
    with pytest.raises(DistributionError, match=message):
        distribution.from_json(change(_doc()))


def test_load_reports_unreadable_files(tmp_path):
    with pytest.raises(DistributionError, match="cannot read"):
        distribution.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(DistributionError, match="not JSON"):
        distribution.load(bad)
