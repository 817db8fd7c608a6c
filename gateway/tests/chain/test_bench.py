"""Smoke run of `terrapin bench chain` at a tiny scale: keys exist, figures are sane,
and every key that names a leaf count names the count the run used."""

from __future__ import annotations

import json

from terrapin.tools.bench.chain import label, sizes
from terrapin.tools.cli.main import main


def test_bench_chain_json_smoke(capsys) -> None:
    assert main(["bench", "chain", "--json", "--leaves", "2000"]) == 0
    figures = json.loads(capsys.readouterr().out)
    for key in (
        "tree_2k_s",
        "tree_2k_baseline_s",
        "gas_per_anchor",
        "proof_bytes_1",
        "proof_bytes_1k",
        "proof_bytes_2k",
    ):
        assert key in figures, key
    # No key claims a count the run did not use.
    assert not [k for k in figures if "100k" in k], sorted(figures)
    assert figures["leaves"] == 2000 and figures["tree_runs"] == 5
    assert 0 < figures["tree_2k_s"] < figures["tree_2k_baseline_s"]
    ratio = figures["tree_2k_baseline_s"] / figures["tree_2k_s"]
    assert abs(figures["tree_speedup"] - ratio) <= 0.05 * ratio
    assert figures["proof_bytes_1"] == 0
    assert figures["proof_bytes_1k"] == 320  # 10 levels for 1,000 leaves
    assert figures["proof_bytes_2k"] == 352  # 11 levels for 2,000 leaves
    assert 0 < figures["gas_per_anchor"] <= 47_000
    by_size = figures["gas_per_anchor_by_size"]
    assert set(by_size) == {"1", "1k", "2k"}
    assert max(by_size.values()) - min(by_size.values()) <= 100
    assert abs(figures["gas_per_anchor_100th"] - by_size["1"]) <= 100
    # Rewards (issue 7): claim and epoch publication, beside the anchor figures.
    for key in ("gas_per_claim", "gas_per_epoch_root", "gas_first_epoch_root"):
        assert key in figures, key
    assert figures["reward_owners"] == 1000 and figures["claim_proof_hashes"] == 10
    assert 21_000 < figures["gas_per_epoch_root"] < figures["gas_first_epoch_root"] < 100_000
    assert 21_000 < figures["gas_per_repeat_claim"] < figures["gas_per_claim"] < 150_000


def test_leaf_counts_in_key_names() -> None:
    assert [label(n) for n in (1, 200, 1000, 1500, 2000, 100_000)] == [
        "1", "200", "1k", "1500", "2k", "100k",
    ]  # fmt: skip
    assert sizes(100_000) == [1, 1000, 100_000]
    assert sizes(1000) == [1, 1000] and sizes(200) == [1, 200] and sizes(1) == [1]


def test_bench_chain_table_shows_reward_gas_and_the_baseline_ratio(capsys) -> None:
    assert main(["bench", "chain", "--leaves", "200"]) == 0
    out = capsys.readouterr().out
    assert "gas per claim" in out and "gas per epoch root" in out
    assert "best of 5" in out and "x the fast build" in out and "200 leaves" in out
