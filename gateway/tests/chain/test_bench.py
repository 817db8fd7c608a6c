"""Smoke run of `terrapin bench chain` at a tiny scale: keys exist, figures are sane."""

from __future__ import annotations

import json

from terrapin.tools.cli.main import main


def test_bench_chain_json_smoke(capsys) -> None:
    assert main(["bench", "chain", "--json", "--leaves", "2000"]) == 0
    figures = json.loads(capsys.readouterr().out)
    for key in (
        "tree_100k_s",
        "tree_100k_baseline_s",
        "gas_per_anchor",
        "proof_bytes_1",
        "proof_bytes_1k",
        "proof_bytes_100k",
    ):
        assert key in figures, key
    assert 0 < figures["tree_100k_s"] < figures["tree_100k_baseline_s"]
    assert figures["proof_bytes_1"] == 0
    assert figures["proof_bytes_1k"] == 320  # 10 levels for 1,000 leaves
    assert 0 < figures["gas_per_anchor"] <= 47_000
    by_size = figures["gas_per_anchor_by_size"]
    assert max(by_size.values()) - min(by_size.values()) <= 100
    assert abs(figures["gas_per_anchor_100th"] - by_size["1"]) <= 100
    # Rewards (issue 7): claim and epoch publication, beside the anchor figures.
    for key in ("gas_per_claim", "gas_per_epoch_root", "gas_first_epoch_root"):
        assert key in figures, key
    assert figures["reward_owners"] == 1000 and figures["claim_proof_hashes"] == 10
    assert 21_000 < figures["gas_per_epoch_root"] < figures["gas_first_epoch_root"] < 100_000
    assert 21_000 < figures["gas_per_repeat_claim"] < figures["gas_per_claim"] < 150_000


def test_bench_chain_table_shows_reward_gas(capsys) -> None:
    assert main(["bench", "chain", "--leaves", "200"]) == 0
    out = capsys.readouterr().out
    assert "gas per claim" in out and "gas per epoch root" in out
