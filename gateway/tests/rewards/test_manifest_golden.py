"""The golden epoch manifest (tools/rewards_golden.py): regenerated to the byte, every
figure recomputed from its inputs, its tree equal to @openzeppelin/merkle-tree's, and
tampered copies (a flag, a binding, a reading added or removed, the evidence) failing
`terrapin rewards verify` with the first difference named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from terrapin.gateway.chain.merkle import build_from_leaves
from terrapin.gateway.protocol.reasons import Flag
from terrapin.gateway.rewards import manifest as fmt
from terrapin.gateway.rewards import recompute
from terrapin.gateway.rewards.distribution import leaf_hash
from terrapin.tools import rewards_golden
from terrapin.tools.cli.main import main
from terrapin.tools.devkit import chainkit
from terrapin.tools.rewardsverify import run

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = (FIXTURES / "epoch-golden.manifest.json").read_bytes()
SUMMARY = json.loads((FIXTURES / "epoch-golden.json").read_text())
EPOCH = SUMMARY["epoch"]


def dumps(doc: dict) -> bytes:
    return (json.dumps(doc, indent=1, ensure_ascii=True) + "\n").encode()


def first_failure(data: bytes) -> tuple[str, str]:
    checks = run(data, EPOCH)
    failed = [c for c in checks.items if not c.ok]
    assert failed, "the tampered manifest verified"
    return failed[0].name, failed[0].detail


def test_the_generator_reproduces_the_fixtures_byte_for_byte():
    m = rewards_golden.golden()
    data = fmt.to_bytes(m)
    assert data == GOLDEN, "rerun: .venv/bin/python -m terrapin.tools.rewards_golden"
    assert rewards_golden.summary(m, data) == SUMMARY
    assert rewards_golden.main(["--check"]) == 0


def test_every_figure_and_the_root_are_recomputed_from_the_inputs():
    listed = fmt.loads(GOLDEN)
    # Strip every derived value: only the inputs remain, then build them again.
    inputs = fmt.Manifest(
        listed.epoch,
        listed.rule,
        listed.chain,
        listed.cutoff_block,
        listed.cutoff_timestamp,
        [
            fmt.Batch(
                b.gateway, b.id, b.tx, b.block, b.timestamp, b.root, b.count,
                [fmt.Leaf(r.board, r.seq, r.digest, r.envelope) for r in b.readings],
            )
            for b in listed.batches
        ],
        listed.equivocations,
        listed.bindings,
        previous=listed.previous,
    )  # fmt: skip
    rebuilt = recompute.build(inputs)
    assert fmt.to_bytes(rebuilt) == GOLDEN
    assert "0x" + rebuilt.root.hex() == SUMMARY["root"]
    assert str(rebuilt.total) == SUMMARY["total"]
    assert "0x" + fmt.manifest_hash(GOLDEN).hex() == SUMMARY["manifest_hash"]
    # What the golden epoch covers (so a change of the generator cannot drop a case):
    flags = {r.flags for b in rebuilt.batches for r in b.readings}
    for flag in ("TIME_UNSYNCED", "TIME_FUTURE", "TIME_OLD", "OUT_OF_RANGE", "UNKNOWN_UNIT"):
        assert Flag[flag] in flags, flag
    assert Flag.EQUIVOCATED in flags
    reasons = [r.reason for b in rebuilt.batches for r in b.readings]
    assert reasons.count("duplicate") == 1 and None in reasons
    assert any(f.weight < f.counted for f in rebuilt.boards.values())  # the cap
    assert any(f.owner is None for f in rebuilt.boards.values()) and rebuilt.unowned > 0
    assert rebuilt.remainder > 0
    idle = [o for o in rebuilt.cumulative if o not in rebuilt.epoch_amounts]
    assert idle, "an owner with a cumulative amount and nothing this epoch"


def test_offline_verify_passes_but_is_not_a_verification(capsys):
    checks = run(GOLDEN, EPOCH)
    assert checks.ok and not checks.on_chain, [c for c in checks.items if not c.ok]
    path = FIXTURES / "epoch-golden.manifest.json"
    code = main(["rewards", "verify", "--epoch", str(EPOCH), "--manifest", str(path)])
    out = capsys.readouterr()
    assert code == 3, out
    assert "NOTHING was checked on chain" in out.err + out.out


def test_the_tree_is_openzeppelins(node_exe):
    m = fmt.loads(GOLDEN)
    values = [["0x" + o.hex(), str(a)] for o, a in sorted(m.cumulative.items())]
    result = chainkit.run_node("rewards-tree.mjs", {"cases": [{"values": values}]}, node_exe)
    (oz,) = result["results"]
    assert oz["root"] == "0x" + m.root.hex()
    assert oz["tree"] == ["0x" + n.hex() for n in m.tree]
    leaves = [leaf_hash(o, a) for o, a in sorted(m.cumulative.items())]
    assert build_from_leaves(leaves).nodes == m.tree


def _tamper_flag(doc):
    doc["batches"][0]["readings"][2]["flags"] = int(Flag.OUT_OF_RANGE)
    r = doc["batches"][0]["readings"][2]
    return ("flags", f"seq {r['seq']}: the manifest says flags 16 (OUT_OF_RANGE), recomputed 0")


def _tamper_binding(doc):
    doc["bindings"][3]["owner"] = "0x" + "c4" * 20  # b3's re-binding, to someone else
    return ("board figures and amounts", "owner: the manifest says 0xb0b0")


def _tamper_add(doc):
    doc["batches"][1]["readings"].append(dict(doc["batches"][0]["readings"][-1]))
    return ("readings and batches", "batch 8: 7 readings listed, its count is 6")


def _tamper_remove(doc):
    del doc["batches"][0]["readings"][4]
    return ("readings and batches", "batch 7: 10 readings listed, its count is 11")


def _tamper_remove_and_recount(doc):
    del doc["batches"][0]["readings"][4]
    doc["batches"][0]["count"] = 10
    return ("readings and batches", "batch 7: its listed readings build root")


def _tamper_evidence(doc):
    other = doc["batches"][0]["readings"][3]["envelope"]  # another board's envelope
    doc["equivocations"][0]["envelope"] = other
    return ("equivocation evidence", "the envelope names board")


def _tamper_signature(doc):
    r = doc["batches"][0]["readings"][0]
    r["envelope"] = r["envelope"][:-128] + "00" * 64  # r = s = 0: no curve point signs that
    return ("readings and batches", f"seq {r['seq']}: not signed by the board")


def _tamper_amount(doc):
    owner = sorted(doc["epoch_amounts"])[0]
    doc["epoch_amounts"][owner] = str(int(doc["epoch_amounts"][owner]) + 1)
    return ("board figures and amounts", f"owner {owner} epoch amount")


def _tamper_cumulative(doc):
    owner = sorted(doc["previous"]["cumulative"])[0]
    doc["previous"]["cumulative"][owner] = "1"
    return ("cumulative amounts and root", "previous root")


@pytest.mark.parametrize(
    "tamper",
    [
        _tamper_flag,
        _tamper_binding,
        _tamper_add,
        _tamper_remove,
        _tamper_remove_and_recount,
        _tamper_evidence,
        _tamper_signature,
        _tamper_amount,
        _tamper_cumulative,
    ],
)
def test_a_tampered_manifest_fails_with_the_first_difference_named(tamper, tmp_path, capsys):
    doc = json.loads(GOLDEN)
    name, detail = tamper(doc)
    data = dumps(doc)
    got_name, got_detail = first_failure(data)
    assert (got_name, detail in got_detail) == (name, True), got_detail
    path = tmp_path / "tampered.json"
    path.write_bytes(data)
    code = main(["rewards", "verify", "--epoch", str(EPOCH), "--manifest", str(path)])
    err = capsys.readouterr().err
    assert code == 1 and name in err and detail in err, err


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(version=2), "unsupported manifest version 2"),
        (lambda d: d["rule"].update(version=1), "rule.version"),
        (lambda d: d["batches"][0]["readings"][0].update(seq=-1), "seq: must be an integer"),
        (lambda d: d["batches"][0]["readings"][0].update(seq=2**64), "seq: must be an integer"),
        (lambda d: d.update(extra=1), "unknown ['extra']"),
        (lambda d: d["batches"][0].update(root="0xAB"), "root: must be 0x and lowercase hex"),
    ],
)
def test_a_malformed_manifest_is_named(edit, message):
    doc = json.loads(GOLDEN)
    edit(doc)
    name, detail = first_failure(dumps(doc))
    assert name == "manifest format" and message in detail, detail


def test_unreadable_manifest_is_exit_2(tmp_path, capsys):
    code = main(["rewards", "verify", "--epoch", "1", "--manifest", str(tmp_path / "none.json")])
    assert code == 2 and "cannot read the manifest" in capsys.readouterr().err


def _docs_flags(envelope_hex: str, block_time: int, params: dict) -> int:
    """The flag table of docs/REWARDS.md written again from the document with cbor2 (no
    project code): TIME_UNSYNCED 1, TIME_FUTURE 2, TIME_OLD 4, UNKNOWN_UNIT 8,
    OUT_OF_RANGE 16, NON_FINITE 32 (EQUIVOCATED comes from the evidence)."""
    import math

    import cbor2

    cose = cbor2.loads(bytes.fromhex(envelope_hex[2:]))
    payload = cbor2.loads(cose.value[2])
    t, records = payload[2], payload[3]
    flags = 0
    if t == 0:
        flags |= 1
    elif t > block_time + params["max_clock_skew"]:
        flags |= 2
    elif t < block_time - params["max_age"] or t < params["min_time"]:
        flags |= 4
    for record in records:
        unit, value = record.get(1), record.get(2)
        if unit not in params["units"] and unit not in params["ranges"]:
            flags |= 8
        if not math.isfinite(value):
            flags |= 32
        elif unit in params["ranges"]:
            low, high = params["ranges"][unit]
            flags |= 0 if low <= value <= high else 16
    return flags


def test_a_second_implementation_from_the_docs_gives_the_golden_figures(independent_rule, oz_root):
    """Flags (cbor2 + the docs' table), amounts (conftest's rule from the docs) and the
    tree (@openzeppelin/merkle-tree) from the golden manifest's inputs: its figures."""
    doc = json.loads(GOLDEN)
    params, rule = doc["rule"]["flags"], doc["rule"]
    evidence = {(e["board"], e["seq"]) for e in doc["equivocations"]}
    readings = []
    for batch in doc["batches"]:
        for r in batch["readings"]:
            flags = _docs_flags(r["envelope"], batch["timestamp"], params)
            flags |= 64 if (r["board"], r["seq"]) in evidence else 0
            assert flags == r["flags"], (batch["id"], r["board"], r["seq"])
            readings.append((r["board"], r["seq"], flags, EPOCH))
    bindings = [(b["board"], b["owner"], b["timestamp"]) for b in doc["bindings"]]
    per_epoch, _ = independent_rule(readings, bindings, EPOCH, int(rule["budget"]), rule["cap"])
    assert per_epoch[EPOCH] == {o: int(a) for o, a in doc["epoch_amounts"].items()}
    cumulative = {o: int(a) for o, a in doc["previous"]["cumulative"].items()}
    for owner, amount in per_epoch[EPOCH].items():
        cumulative[owner] = cumulative.get(owner, 0) + amount
    assert cumulative == {o: int(a) for o, a in doc["cumulative"].items()}
    assert oz_root(cumulative) == doc["root"] == SUMMARY["root"]


def test_a_manifest_of_another_chain_is_a_named_difference_on_chain():
    """The golden epoch names blocks and transactions this chain never had: each is a
    failed check with the node's answer, not a traceback (and not exit 2)."""
    from terrapin.gateway.chain.node import Chain, ChainConfig
    from terrapin.tools.verifier import Trust

    chain = Chain.connect(ChainConfig())
    doc = json.loads(GOLDEN)
    doc["chain"]["anchor"] = chain.anchor.address.lower()
    trust = Trust(anchor=bytes.fromhex(chain.anchor.address[2:]))
    checks = run(dumps(doc), EPOCH, w3=chain.w3, trust=trust)
    assert not checks.unreachable and not checks.on_chain
    name, detail = next((c.name, c.detail) for c in checks.items if not c.ok)
    assert name == "chain and cut-off" and "node is chain" in detail, detail
    doc["chain"]["chain_id"] = chain.chain_id
    name, detail = first_failure_on(dumps(doc), chain, trust)
    assert name == "chain and cut-off" and "BlockNotFound" in detail, detail


def first_failure_on(data: bytes, chain, trust) -> tuple[str, str]:
    checks = run(data, EPOCH, w3=chain.w3, trust=trust)
    return next((c.name, c.detail) for c in checks.items if not c.ok)
