"""`terrapin bench chain [--json]`: Merkle tree speed, proof size, gas per anchor,
gas per reward claim and per epoch root.

Tree build time for 100,000 leaves with the safe-pysha3 backend, beside the same build
with pycryptodome's keccak (the baseline, measured in the same run); proof size for 1,
1k and 100k leaves; gas of one anchor transaction for batches of 1, 1,000 and 100,000
readings on the embedded chain (a real tree's root and count each time) and of the same
gateway's 100th anchor (flat: no counter is rewritten); the rewards
figures (`gas_per_claim`, `gas_per_epoch_root`, ...) from
`terrapin.gateway.rewards.onchain.gas_figures` on a fresh embedded chain.
"""

from __future__ import annotations

import json
import random
import time

import click

from terrapin.gateway.chain import merkle
from terrapin.gateway.chain.node import Chain, ChainConfig, transact

SIZES = {"1": 1, "1k": 1_000, "100k": 100_000}
REWARD_OWNERS = 1_000  # leaves of the distribution the claim is measured with


def _values(n: int, rng: random.Random) -> list[merkle.Reading]:
    return [(rng.randbytes(20), i, rng.randbytes(32)) for i in range(n)]


def _best_of(runs: int, fn) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(leaves: int = 100_000, runs: int = 5) -> dict[str, object]:
    rng = random.Random(2026)
    values = _values(leaves, rng)
    figures: dict[str, object] = {"leaves": leaves}
    figures["tree_100k_s"] = round(_best_of(runs, lambda: merkle.build_tree(values)), 4)
    figures["tree_100k_baseline_s"] = round(
        _best_of(1, lambda: merkle.build_tree(values, merkle.pycryptodome_keccak)), 4
    )
    figures["tree_speedup"] = round(figures["tree_100k_baseline_s"] / figures["tree_100k_s"], 2)
    chain = Chain.connect(ChainConfig())
    gas: dict[str, int] = {}
    for batch_id, (label, size) in enumerate(SIZES.items()):
        size = min(size, leaves)
        tree = merkle.build_tree(values[:size])
        proof = tree.proof(size // 2)
        figures[f"proof_bytes_{label}"] = len(proof) * merkle.HASH_SIZE
        if not merkle.verify(tree.root, *values[size // 2], proof):
            raise RuntimeError(f"proof from the {label} tree does not verify")
        data = chain.anchor.functions.anchor(batch_id, tree.root, size)._encode_transaction_data()
        receipt = transact(chain.w3, chain.account, {"to": chain.anchor.address, "data": data})
        gas[label] = receipt["gasUsed"]
        figures[f"gas_per_anchor_{label}"] = receipt["gasUsed"]
    # The 100th anchor of the same gateway costs what the first did (per-gateway roots, no
    # counter or total to rewrite): fill batch ids up to 99 with the 1-reading tree.
    tree = merkle.build_tree(values[:1])
    for batch_id in range(len(SIZES), 100):
        data = chain.anchor.functions.anchor(batch_id, tree.root, 1)._encode_transaction_data()
        receipt = transact(chain.w3, chain.account, {"to": chain.anchor.address, "data": data})
    figures["gas_per_anchor_100th"] = receipt["gasUsed"]
    figures["gas_per_anchor"] = max(*gas.values(), receipt["gasUsed"])
    figures["gas_per_anchor_by_size"] = gas
    from terrapin.gateway.rewards import onchain as rewards_chain

    rewards = rewards_chain.gas_figures(owners=min(REWARD_OWNERS, leaves))
    rewards["reward_owners"] = rewards.pop("owners")
    figures.update(rewards)
    return figures


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option(
    "--leaves",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    help="Leaves in the big tree (smaller for a smoke run).",
)
def chain(as_json: bool, leaves: int) -> None:
    """Merkle tree build time, proof size, gas per anchor, per claim and per epoch root."""
    figures = measure(leaves)
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"terrapin bench chain ({leaves:,} leaves)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("tree build, safe-pysha3", f"{figures['tree_100k_s']:.3f} s")
    table.add_row("tree build, pycryptodome (baseline)", f"{figures['tree_100k_baseline_s']:.3f} s")
    table.add_row("speed-up", f"{figures['tree_speedup']}x")
    for label in SIZES:
        table.add_row(f"proof size, {label} leaves", f"{figures[f'proof_bytes_{label}']} B")
    for label in SIZES:
        table.add_row(
            f"gas per anchor, {label} readings", f"{figures[f'gas_per_anchor_{label}']:,}"
        )
    table.add_row("gas of the 100th anchor, 1 reading", f"{figures['gas_per_anchor_100th']:,}")
    owners = f"{figures['reward_owners']:,} owners, {figures['claim_proof_hashes']}-hash proof"
    table.add_row("gas per epoch root (later epoch)", f"{figures['gas_per_epoch_root']:,}")
    table.add_row("gas of the first epoch root", f"{figures['gas_first_epoch_root']:,}")
    table.add_row("gas of the second epoch root", f"{figures['gas_second_epoch_root']:,}")
    table.add_row(f"gas per claim (first, {owners})", f"{figures['gas_per_claim']:,}")
    table.add_row("gas per later claim, same owner", f"{figures['gas_per_repeat_claim']:,}")
    Console().print(table)
