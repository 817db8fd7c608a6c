"""`terrapin rewards verify` against a hostile oracle/gateway (issue 19's sign-off), on anvil.

Two epochs are settled by the gateway's own code; then the hostile side re-anchors a
reading of the first epoch in a batch of the second, and forges manifests that are
consistent in themselves (every derived field rebuilt by the independent implementation,
`independent.py`) and publishes their roots and hashes with the oracle key on a
TerrapinRewards it controls. Each forgery must fail verify, with the check named."""

from __future__ import annotations

import copy
import importlib.util
import json
import random
from pathlib import Path

import pytest
from eth_account import Account

from terrapin.gateway.rewards import onchain as rewards_chain
from terrapin.tools.cli.main import main
from terrapin.tools.devkit import chainkit
from terrapin.tools.devkit.simboard import SimBoard
from terrapin.tools.rewardsverify import ManifestUnreadable, earlier_source, run
from terrapin.tools.verifier import Trust

HERE = Path(__file__).resolve().parent


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"rewards_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ind, epochnet = load("independent"), load("epochnet")
DAY = epochnet.DAY
ALICE, BOB, CAROL = ("0x" + c * 20 for c in ("a1", "b2", "c3"))


STRANGER = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil #1


class Scene:
    """Two settled epochs on anvil; in the second, a re-anchored reading of the first (by
    the gateway key) and a batch anchored by a key the registry never authorised."""

    def __init__(self, request, monkeypatch, tmp_path: Path):
        self.net = net = epochnet.Network("anvil", request, monkeypatch, tmp_path)
        self.w3, rng = net.w3, random.Random(4242)
        b = self.boards = [SimBoard.make(rng) for _ in range(4)]
        self.day0 = day0 = int(self.w3.eth.get_block("latest")["timestamp"]) // DAY + 2
        t0, t1 = day0 * DAY + 600, (day0 + 1) * DAY + 600
        net.at(t0)
        net.bind_in_one_block([(b[0], ALICE), (b[1], BOB), (b[2], CAROL)])
        for board, seq in ((b[0], 1), (b[0], 2), (b[1], 1), (b[2], 1)):
            net.ingest(board, seq, t0)
        net.anchor()
        net.at(t1)
        net.ingest(b[0], 3, t1)
        net.ingest(b[3], 1, t1)
        net.anchor()
        self.m0 = json.loads(net.settle(day0))
        net.at(t1 + 60)
        self.again = self.anchor_batch(self.m0["batches"][0]["readings"][:1])
        self.foreign = self.anchor_batch(
            self.m0["batches"][0]["readings"][1:2], Account.from_key(STRANGER)
        )
        net.at((day0 + 2) * DAY + 600)
        self.m1 = json.loads(net.settle(day0 + 1))
        self.trust = Trust(anchor=bytes.fromhex(net.chain.anchor.address[2:]))
        self.evil = None
        self.forged: dict[int, bytes] = {}

    def anchor_batch(self, readings: list[dict], sender=None) -> dict:
        """A batch of `readings` anchored by `sender` (the gateway key by default)."""
        sender = sender or self.net.chain.account
        anchor = self.net.chain.anchor
        batch_id = chainkit.next_batch_id(anchor, sender.address)
        leaves = [ind.reading_leaf(r["board"], r["seq"], r["digest"]) for r in readings]
        root = ind.tree_nodes(leaves)[0]
        receipt = self.net.transact(anchor.functions.anchor(batch_id, root, len(leaves)), sender)
        block = self.w3.eth.get_block(receipt["blockNumber"])
        return {"gateway": sender.address.lower(), "id": batch_id,
                "tx": ind.hx(bytes(receipt["transactionHash"])), "block": block["number"],
                "timestamp": block["timestamp"], "root": ind.hx(root), "count": len(leaves),
                "readings": copy.deepcopy(readings)}  # fmt: skip

    def publish(self, data: bytes) -> None:
        """The oracle key publishes a manifest's root, total and hash on the hostile contract."""
        m = json.loads(data)
        call = self.evil.functions.publishRoot(
            m["epoch"], ind.unhex(m["root"]), int(m["total"]), ind.unhex(ind.manifest_hash(data))
        )
        self.net.transact(call)

    def forge(self, which: int, edit, rebuild: bool = True) -> bytes:
        """Epoch day0+which's manifest edited, its derived fields rebuilt, published with
        the oracle key on a fresh TerrapinRewards the hostile side deployed (epoch day0
        published there first, unchanged but for the contract's address)."""
        self.evil = rewards_chain.deploy_rewards(
            self.w3, self.net.chain.account, admin=Account.create().address
        )
        forged = []
        for i, m in enumerate((self.m0, self.m1)[: which + 1]):
            m = copy.deepcopy(m)
            m["chain"]["rewards"] = self.evil.address.lower()
            if i == which:
                edit(m)
            forged.append(ind.dump(ind.rebuild(m) if rebuild or i < which else m))
        for data in forged:
            self.publish(data)
        self.forged = {self.day0 + i: data for i, data in enumerate(forged)}
        return forged[-1]

    def verify(self, data: bytes, **kw) -> tuple[str | None, str]:
        """(first failed check or None, its detail or the last line) of rewards verify."""
        if self.evil is not None:
            kw.setdefault("rewards", bytes.fromhex(self.evil.address[2:]))
        kw.setdefault("history", lambda k: self.forged[k])
        checks = run(data, json.loads(data)["epoch"], w3=self.w3, trust=self.trust, **kw)
        failed = [c for c in checks.items if not c.ok]
        if failed:
            return failed[0].name, failed[0].detail
        assert checks.on_chain
        return None, checks.items[-1].detail


@pytest.fixture
def scene(request, monkeypatch, tmp_path) -> Scene:
    return Scene(request, monkeypatch, tmp_path)


def test_omitted_unanchored_and_foreign_readings_and_batches_fail(scene):
    # The settled epochs: day0 verifies; day0+1 misses the re-anchoring batch.
    assert scene.verify(json.dumps(scene.m0, indent=1).encode() + b"\n")[0] is None
    name, detail = scene.verify(json.dumps(scene.m1, indent=1).encode() + b"\n")
    assert name == "every anchored batch listed" and "is not in the manifest" in detail

    def omit_reading(m):  # a reading anchored in the epoch left out of its batch
        m["batches"][0]["readings"].pop()

    def unanchored(m):  # a batch no transaction anchored
        m["batches"].append(copy.deepcopy(m["batches"][0]) | {"id": 99, "tx": "0x" + "77" * 32})

    def foreign(m):  # a batch anchored by a key the registry never authorised
        m["chain"]["gateways"].append(scene.foreign["gateway"])
        m["batches"].append(copy.deepcopy(scene.foreign))

    def other_epoch(m):  # a batch anchored in epoch day0, listed in day0+1
        m["batches"].insert(0, copy.deepcopy(scene.m0["batches"][0]))

    assert scene.verify(scene.forge(0, omit_reading))[0] == "batches on chain"
    name, detail = scene.verify(scene.forge(0, unanchored, rebuild=False))
    assert name == "batches on chain" and "not found" in detail, (name, detail)
    name, detail = scene.verify(scene.forge(1, foreign))
    assert name == "batches on chain" and "not a registered gateway" in detail, detail
    data = scene.forge(1, other_epoch, rebuild=False)
    assert scene.verify(data)[0] == "readings and batches"


def test_a_reading_counted_in_two_epochs_fails(scene):
    def count_again(m):  # the re-anchored reading of day0, counted again in day0+1
        m["batches"].append(copy.deepcopy(scene.again))

    data = scene.forge(1, count_again)
    again = scene.again["readings"][0]
    counted = [r for b in json.loads(data)["batches"] for r in b["readings"] if r == again | r]
    assert any(r["reason"] is None for r in counted)  # the forgery counts it
    name, detail = scene.verify(data)
    assert name == "earlier epochs", f"a reading of epoch {scene.day0} counted again: {detail}"
    # On the way, the anchors of a key the manifest does not count (the stranger's batch)
    # are named: whose anchors count is the manifest's word (docs/REWARDS.md).
    checks = run(
        data,
        scene.day0 + 1,
        w3=scene.w3,
        trust=scene.trust,
        rewards=bytes.fromhex(scene.evil.address[2:]),
        history=scene.forged.get,
    )
    (listed,) = [c for c in checks.items if c.name == "every anchored batch listed"]
    assert listed.ok and scene.foreign["gateway"] in listed.detail, listed.detail
    assert f"seq 1 was anchored in epoch {scene.day0}" in detail, detail
    # Without the earlier manifest at hand, the check cannot be made: an error, never a pass.
    with pytest.raises(ManifestUnreadable, match="counted in two epochs"):
        scene.verify(
            data, history=earlier_source(str(scene.net.out / "nowhere" / "x.json"), scene.day0 + 1)
        )


def test_bindings_reordered_or_an_owner_dropped_fail(scene):
    m0 = scene.m0
    same_block = [b for b in m0["bindings"] if b["block"] == m0["bindings"][0]["block"]]
    assert len(same_block) == 3  # three BoardBound events in one block

    def reorder(m):  # the events of one block listed in another order
        m["bindings"][0], m["bindings"][1] = m["bindings"][1], m["bindings"][0]

    def swap_log_index(m):  # ...or with their log indexes swapped to look ordered
        a, b = m["bindings"][0], m["bindings"][1]
        a["log_index"], b["log_index"] = b["log_index"], a["log_index"]
        m["bindings"][0], m["bindings"][1] = b, a

    def drop_owner(m):  # an owner left out of the previous cumulative amounts
        m["batches"].append(copy.deepcopy(scene.again))  # (every anchored batch listed)
        m["previous"]["cumulative"].pop(min(m["previous"]["cumulative"]))

    assert scene.verify(scene.forge(0, reorder))[0] == "bindings order"
    assert scene.verify(scene.forge(0, swap_log_index))[0] == "bindings on chain"
    name, detail = scene.verify(scene.forge(1, drop_owner))
    assert name == "previous root on chain", (name, detail)
    # Dropped from this epoch's cumulative amounts only (not rebuilt): the derivation.
    data = scene.forge(0, lambda m: m["cumulative"].pop(min(m["cumulative"])), rebuild=False)
    assert scene.verify(data)[0] == "cumulative amounts and root"


def test_a_manifest_for_another_chain_or_contract_fails(scene, capsys):
    def other_chain(m):
        m["chain"]["chain_id"] = 1

    def other_anchor(m):
        m["chain"]["anchor"] = "0x" + "99" * 20

    assert scene.verify(scene.forge(0, other_chain))[0] == "chain and cut-off"
    assert scene.verify(scene.forge(0, other_anchor))[0] == "chain and cut-off"
    # Another rewards contract: the hostile one, named by the manifest, the user pinning
    # none (the command, as a stranger runs it): not a verification.
    data = scene.forge(0, lambda m: None)
    path = scene.net.out / "forged" / f"epoch-{scene.day0}.manifest.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    argv = ["rewards", "verify", "--epoch", str(scene.day0), "--manifest", str(path),
            "--rpc", scene.net.url, "--anchor", scene.net.chain.anchor.address]  # fmt: skip
    assert main(argv) == 3
    assert "which you did not pin: not a verification" in capsys.readouterr().err
    # Pinned to the network's contract (--rewards): the copy naming another is refused.
    assert main([*argv, "--rewards", scene.net.token.address]) == 1
    assert "you trust" in capsys.readouterr().err
    assert scene.verify(data, rewards=bytes.fromhex(scene.net.token.address[2:]))[0] == (
        "rewards contract"
    )
    # ...and the hostile contract pinned by the user is what the user asked for.
    assert main([*argv, "--rewards", scene.evil.address]) == 0
    assert "verified on chain against the anchor and rewards you trust" in capsys.readouterr().out
    # The network file may pin it too ("rewards" beside chain_id, anchor, registry).
    network = path.parent / "network.json"
    c = scene.net.chain
    network.write_text(json.dumps({"chain_id": 31337, "anchor": c.anchor.address,
                                   "registry": c.registry.address,
                                   "rewards": scene.net.token.address}))  # fmt: skip
    pinned = ["rewards", "verify", "--epoch", str(scene.day0), "--manifest", str(path),
              "--rpc", scene.net.url, "--network", str(network)]  # fmt: skip
    assert main(pinned) == 1
    assert "rewards contract: the manifest names" in capsys.readouterr().out
