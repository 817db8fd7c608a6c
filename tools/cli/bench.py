"""`terrapin bench ...`: each benchmark lives beside the code it measures."""

from __future__ import annotations

import click

from terrapin.tools.cli.lazy import LazyGroup

BENCHES: dict[str, tuple[str, str]] = {
    "firmware": (
        "terrapin.tools.bench.firmware:firmware",
        "Sign/verify speed and heap on the unix port.",
    ),
    "gateway": ("terrapin.tools.bench.gateway:gateway", "Ingest throughput through Mosquitto."),
    "chain": ("terrapin.tools.bench.chain:chain", "Merkle tree speed, proof size and gas."),
    "dashboard": (
        "terrapin.tools.bench.dashboard:dashboard",
        "Dashboard/API latency at 100 boards and 1M readings.",
    ),
}


@click.group(cls=LazyGroup, lazy=BENCHES)
def bench() -> None:
    """Benchmarks that print measured figures (use --json for machines)."""
