"""`terrapin`: the one command-line entry point.

Each subcommand lives in its own module and raises `TerrapinError`; this is
the single place that turns errors into a message and an exit code.
"""

from __future__ import annotations

import sys

import click

from terrapin.gateway.errors import TerrapinError
from terrapin.tools.cli.lazy import LazyGroup

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("terrapin.tools.cli.demo:demo", "Run the whole network locally and prove a reading."),
    "bench": ("terrapin.tools.cli.bench:bench", "Benchmarks that print measured figures."),
    "gateway": ("terrapin.tools.cli.gateway:gateway", "Set up and run the gateway."),
    "device": ("terrapin.tools.cli.device:device", "Flash, deploy, provision and watch boards."),
    "proof": ("terrapin.tools.cli.proof:proof", "Write a proof bundle for one reading."),
    "chain": ("terrapin.tools.cli.chain:chain", "Deploy the contracts a gateway anchors to."),
    "verify": ("terrapin.tools.cli.verify:verify", "Check a proof bundle without the gateway."),
    "rewards": ("terrapin.tools.cli.rewards:rewards", "Compute, publish and claim rewards."),
    "sim": ("terrapin.tools.sim:sim", "Simulate a fleet of boards."),
    "vectors": ("terrapin.tools.cli.vectors:vectors", "Regenerate or check protocol test vectors."),
    "fuzz": ("terrapin.tools.cli.fuzz:fuzz_command", "Feed hostile inputs to every parser."),
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="terrapin-sensor-network")
def cli() -> None:
    """Terrapin: signed sensor readings, anchored on chain."""


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, standalone_mode=False)
    except TerrapinError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
