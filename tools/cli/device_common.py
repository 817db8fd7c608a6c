"""Shared pieces of the `terrapin device` commands: board options, the link, output.

`port_options` adds `--port` / `--target` / `--dir` to a command (without --port,
`check_target` picks the one ESP32-like port plugged in); `open_link`
turns them into a Link to the board (a serial port, or a virtual board on the
unix port started for the command); `emit` prints a result as text or as one
JSON object (`--json`); `progress_bar` is the rich progress bar the transfer
commands share.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import click

from terrapin.gateway.errors import TerrapinError


def emit(as_json: bool, obj: dict, text: str) -> None:
    if as_json:
        click.echo(json.dumps(obj, sort_keys=True))
    else:
        click.echo(text)


def progress_bar(label: str, enabled: bool = True):
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    return Progress(
        TextColumn(label),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[name]}"),
        disable=not enabled,
        transient=True,
    )


def port_options(f):
    f = click.option(
        "--dir",
        "flash_dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Flash directory of a virtual board (with --target unix).",
    )(f)
    f = click.option(
        "--target",
        type=click.Choice(["serial", "unix"]),
        default="serial",
        show_default=True,
        help="A board on a serial port, or a virtual board on the unix port.",
    )(f)
    f = click.option("--port", help="Serial port: /dev/ttyUSB0 or socket://HOST:PORT.")(f)
    return f


def check_target(port: str | None, target: str, flash_dir: Path | None) -> str | None:
    """The serial port to use: --port, else the one ESP32-like port plugged in (said
    on stderr); None for a virtual board."""
    if target == "unix":
        if flash_dir is None:
            raise TerrapinError("--target unix needs --dir D (the virtual board's flash)")
        return port
    return port or pick_port()


def pick_port() -> str:
    """The one ESP32-like serial port (tools/board/ports.py), said on stderr."""
    from terrapin.tools.board.ports import choose_port, list_ports

    chosen = choose_port(list_ports())
    click.echo(f"using {chosen.label()} (--port to choose another)", err=True)
    return chosen.device


@contextlib.contextmanager
def open_link(
    port: str | None, target: str, flash_dir: Path | None, board_args: tuple[str, ...] = ()
) -> Iterator:
    """A Link to the board: the serial port, or a virtual board started for the command."""
    from terrapin.tools.board.serialconsole import Link, open_port

    port = check_target(port, target, flash_dir)
    if target == "unix":
        from terrapin.tools.devkit.virtualboard import VirtualBoard

        with VirtualBoard(flash_dir, tcp_port=None, args=board_args) as vb:
            link = Link(open_port(vb.pty_path))
            try:
                yield link
            finally:
                link.close()
        return
    link = Link(open_port(port))
    try:
        yield link
    finally:
        link.close()
