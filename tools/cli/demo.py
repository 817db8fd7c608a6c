"""`terrapin demo`: the whole network on this machine (terrapin.tools.demo.run)."""

from __future__ import annotations

from pathlib import Path

import click

from terrapin.tools.demo.run import run_demo


@click.command()
@click.option("--boards", "n_boards", default=3, show_default=True, type=click.IntRange(1, 16),
              help="Virtual boards (the firmware on the MicroPython unix port).")  # fmt: skip
@click.option("--readings", default=10, show_default=True, type=click.IntRange(1, 1000),
              help="Readings each board signs and publishes.")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Write the proof bundles, the rewards file and summary.json here.")  # fmt: skip
@click.option("--rpc", help="JSON-RPC URL (e.g. anvil) instead of the embedded chain.")
@click.option("--key-env", default="TERRAPIN_CHAIN_KEY", show_default=True,
              help="With --rpc: the variable holding the funded gateway key.")  # fmt: skip
@click.option("--keep-running", is_flag=True, help="Leave the network up until Ctrl-C.")
def demo(n_boards, readings, out, rpc, key_env, keep_running) -> None:
    """Run the whole network locally: boards, Mosquitto, gateway, chain, rewards."""
    run_demo(n_boards, readings, out, rpc, key_env, keep_running)
