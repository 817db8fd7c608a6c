"""`terrapin bench chain [--json]`: Merkle tree speed, proof size, gas per anchor,
gas per reward claim and per epoch root.

Every key that names a leaf count names the count actually used: `--leaves N`
(default 100,000) gives `tree_<N>_s`, `proof_bytes_<N>`, `gas_per_anchor_<N>`,
with N written as `label(N)` (100000 -> "100k", 2000 -> "2k", 200 -> "200"),
beside the fixed sizes 1 and 1k that are smaller than N; `leaves` repeats N.

- tree_<N>_s: build of the N-leaf tree with the safe-pysha3 keccak, best of
  TREE_RUNS; tree_<N>_baseline_s: the same build with pycryptodome's keccak,
  best of the same TREE_RUNS, in the same run; tree_speedup = baseline / fast;
- proof_bytes_<n>: the proof of the middle leaf of an n-leaf tree;
- gas_per_anchor_<n>: one anchor transaction of an n-leaf tree's root and count
  on the embedded chain; gas_per_anchor_100th: the same gateway's 100th anchor
  (flat: no counter is rewritten); gas_per_anchor: the largest of them;
- the rewards figures (`gas_per_claim`, `gas_per_epoch_root`, ...) from
  `terrapin.gateway.rewards.onchain.gas_figures` on a fresh embedded chain.
"""

from __future__ import annotations

import json
import random
import time

import click

from terrapin.gateway.chain import merkle
from terrapin.gateway.chain.node import Chain, ChainConfig, transact
from terrapin.gateway.errors import TerrapinError

SMALL_SIZES = (1, 1_000)  # proof and anchor figures beside the big tree
TREE_RUNS = 5  # best-of count of both tree builds
REWARD_OWNERS = 1_000  # leaves of the distribution the claim is measured with


def _values(n: int, rng: random.Random) -> list[merkle.Reading]:
    return [(rng.randbytes(20), i, rng.randbytes(32)) for i in range(n)]


def label(n: int) -> str:
    """A leaf count as it appears in a key: 1000 -> "1k", 100000 -> "100k"."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def sizes(leaves: int) -> list[int]:
    """The tree sizes measured: 1 and 1k when smaller than `leaves`, then `leaves`."""
    return [n for n in SMALL_SIZES if n < leaves] + [leaves]


def _best_of(runs: int, fn) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(leaves: int = 100_000, runs: int = TREE_RUNS) -> dict[str, object]:
    rng = random.Random(2026)
    values = _values(leaves, rng)
    big = label(leaves)
    figures: dict[str, object] = {"leaves": leaves, "tree_runs": runs}
    fast = _best_of(runs, lambda: merkle.build_tree(values))
    baseline = _best_of(runs, lambda: merkle.build_tree(values, merkle.pycryptodome_keccak))
    figures[f"tree_{big}_s"] = round(fast, 4)
    figures[f"tree_{big}_baseline_s"] = round(baseline, 4)
    figures["tree_speedup"] = round(baseline / fast, 2)
    chain = Chain.connect(ChainConfig())
    gas: dict[str, int] = {}
    for batch_id, size in enumerate(sizes(leaves)):
        name = label(size)
        tree = merkle.build_tree(values[:size])
        proof = tree.proof(size // 2)
        figures[f"proof_bytes_{name}"] = len(proof) * merkle.HASH_SIZE
        if not merkle.verify(tree.root, *values[size // 2], proof):
            raise TerrapinError(f"proof from the {name} tree does not verify")
        data = chain.anchor.functions.anchor(batch_id, tree.root, size)._encode_transaction_data()
        receipt = transact(chain.w3, chain.account, {"to": chain.anchor.address, "data": data})
        gas[name] = receipt["gasUsed"]
        figures[f"gas_per_anchor_{name}"] = receipt["gasUsed"]
    # The 100th anchor of the same gateway costs what the first did (per-gateway roots, no
    # counter or total to rewrite): fill batch ids up to 99 with the 1-reading tree.
    tree = merkle.build_tree(values[:1])
    for batch_id in range(len(gas), 100):
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
    help="Leaves in the big tree (smaller for a smoke run; keys name the count used).",
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
    big, runs = label(leaves), figures["tree_runs"]
    table.add_row(f"tree build, safe-pysha3, best of {runs}", f"{figures[f'tree_{big}_s']:.3f} s")
    table.add_row(
        f"tree build, pycryptodome (baseline), best of {runs}",
        f"{figures[f'tree_{big}_baseline_s']:.3f} s ({figures['tree_speedup']}x the fast build)",
    )
    names = [label(n) for n in sizes(leaves)]
    for name in names:
        table.add_row(f"proof size, {name} leaves", f"{figures[f'proof_bytes_{name}']} B")
    for name in names:
        table.add_row(f"gas per anchor, {name} readings", f"{figures[f'gas_per_anchor_{name}']:,}")
    table.add_row("gas of the 100th anchor, 1 reading", f"{figures['gas_per_anchor_100th']:,}")
    owners = f"{figures['reward_owners']:,} owners, {figures['claim_proof_hashes']}-hash proof"
    table.add_row("gas per epoch root (later epoch)", f"{figures['gas_per_epoch_root']:,}")
    table.add_row("gas of the first epoch root", f"{figures['gas_first_epoch_root']:,}")
    table.add_row("gas of the second epoch root", f"{figures['gas_second_epoch_root']:,}")
    table.add_row(f"gas per claim (first, {owners})", f"{figures['gas_per_claim']:,}")
    table.add_row("gas per later claim, same owner", f"{figures['gas_per_repeat_claim']:,}")
    Console().print(table)
