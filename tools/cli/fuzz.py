"""`terrapin fuzz`: feed generated hostile inputs to every parser that faces the network or a file.

    terrapin fuzz                              a million inputs through each parser
    terrapin fuzz --parser ack --count 50000   one parser, fewer inputs
    terrapin fuzz --parser ota --replay FILE   run one saved input again
    terrapin fuzz --micropython --count 100000 the board's ACK decoder on the unix port

Prints inputs, crashes, inputs/s and wall time per parser; a crash's input is
written to --crash-dir and the command exits 1. docs/FUZZING.md has the rules.
"""

from __future__ import annotations

from pathlib import Path

import click

from terrapin.gateway.errors import TerrapinError
from terrapin.tools.devkit.fuzz import TIME_LIMIT, fuzz, replay, write_crashes
from terrapin.tools.devkit.fuzz_targets import TARGETS


@click.command("fuzz")
@click.option(
    "--parser",
    "parsers",
    multiple=True,
    type=click.Choice(TARGETS),
    help="Parser to fuzz (repeatable); default: all.",
)
@click.option("--count", default=1_000_000, show_default=True, help="Inputs per parser.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same inputs.")
@click.option("--processes", "-j", type=int, default=None, help="Worker processes [all cores].")
@click.option(
    "--time-limit", default=TIME_LIMIT, show_default=True, help="Seconds one input may take."
)
@click.option(
    "--crash-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("fuzz-crashes"),
    show_default=True,
    help="Where crashing inputs are written.",
)
@click.option(
    "--replay",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Run this one saved input through --parser instead.",
)
@click.option(
    "--micropython",
    is_flag=True,
    help="Run the board's ACK decoder on the MicroPython unix port (100 KB heap) instead.",
)
def fuzz_command(parsers, count, seed, processes, time_limit, crash_dir, replay, micropython):
    """Feed generated inputs to the parsers; exit 1 on any crash."""
    if replay is not None:
        return _replay(parsers, replay, time_limit)
    if micropython:
        return _micropython(count, seed)
    click.echo(f"{'parser':<15} {'inputs':>10} {'crashes':>8} {'inputs/s':>9} {'wall s':>8}")
    failed = []
    for name in parsers or TARGETS:
        r = fuzz(name, count, seed=seed, processes=processes, time_limit=time_limit)
        click.echo(
            f"{name:<15} {r.inputs:>10} {len(r.crashes):>8} {r.rate:>9.0f} {r.seconds:>8.1f}"
            f"   (slowest input {r.slowest * 1000:.0f} ms)"
        )
        if r.crashes:
            for path in write_crashes(r, seed, crash_dir):
                click.echo(f"  crash: {path}  ({path.with_suffix('.txt').name})")
            failed.append(f"{name}: {len(r.crashes)}")
    if failed:
        raise TerrapinError(
            f"crashes found ({', '.join(failed)}); inputs in {crash_dir}",
            hint="terrapin fuzz --parser NAME --replay FILE runs one again",
        )


def _micropython(count: int, seed: int) -> None:
    from terrapin.tools.devkit.fuzz_mp import fuzz_ack_on_micropython

    r = fuzz_ack_on_micropython(count, seed)
    click.echo(f"ack on the unix port: {r.inputs} inputs, {len(r.crashes)} crashes, ")
    click.echo(f"  {r.rate:.0f} inputs/s, {r.seconds:.1f} s (inputs made beforehand)")
    for line in r.crashes[:20]:
        click.echo(f"  {line}")
    if r.crashes or r.inputs != count:
        raise TerrapinError(f"the unix port's ACK decoder crashed ({len(r.crashes)})")


def _replay(parsers, path: Path, time_limit: float) -> None:
    if len(parsers) != 1:
        raise TerrapinError("--replay needs exactly one --parser")
    error = replay(parsers[0], path.read_bytes(), time_limit)
    if error is not None:
        click.echo(error, err=True)
        raise TerrapinError(f"{path} crashes the {parsers[0]} parser")
    click.echo(f"{path}: handled by the {parsers[0]} parser (its typed error or accepted)")
