"""`terrapin device ...`: flash, deploy, provision, bind, watch and update boards.

Every command that talks to a board takes `--port` (a device path such as
/dev/ttyUSB0, or `socket://127.0.0.1:PORT` for QEMU / a virtual board's TCP
serial) or `--target unix --dir D` (a virtual board on the MicroPython unix
port whose flash is the directory D). The gateway's own device commands
(add/list/remove, tools/cli/gateway_device.py) are mounted here too.

This module holds the group and the board-setup commands (flash, deploy,
monitor, status, virtual); provision and bind are in device_provision.py, the
`ota` subgroup in device_ota.py, and the options, link and output helpers they
all share in device_common.py.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from pathlib import Path

import click

from terrapin.gateway.errors import TerrapinError
from terrapin.tools.cli.device_common import (
    check_target,
    emit,
    open_link,
    port_options,
    progress_bar,
)
from terrapin.tools.cli.device_ota import ota
from terrapin.tools.cli.device_provision import bind, provision

GATEWAY_COMMANDS = ("add", "list", "remove", "status")


class DeviceGroup(click.Group):
    """Our commands, plus the gateway's device commands imported only when asked for."""

    def _gateway(self) -> dict[str, click.Command]:
        try:
            mod = importlib.import_module("terrapin.tools.cli.gateway_device")
        except ModuleNotFoundError:
            return {}
        found: dict[str, click.Command] = {}
        for obj in vars(mod).values():
            if isinstance(obj, click.Group):
                found.update(obj.commands)
            elif isinstance(obj, click.Command) and obj.name:
                found.setdefault(obj.name, obj)
        return {n: c for n, c in found.items() if n in GATEWAY_COMMANDS and n not in self.commands}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._gateway()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None and cmd_name in GATEWAY_COMMANDS:
            cmd = self._gateway().get(cmd_name)
        return cmd


@click.group(cls=DeviceGroup)
def device() -> None:
    """Flash, deploy, provision, watch and update boards."""


# -- flash ---------------------------------------------------------------------
@device.command()
@click.option(
    "--port", help="Serial port of the board (default: the one ESP32-like port plugged in)."
)
@click.option(
    "--board",
    type=click.Choice(["esp32", "esp32s3", "esp32c3"]),
    default="esp32",
    show_default=True,
)
@click.option(
    "--image",
    type=click.Path(dir_okay=False, path_type=Path),
    help="MicroPython .bin; default ~/.cache/terrapin/micropython/<board>.bin.",
)
@click.option("--baud", default=460800, show_default=True)
@click.option("--no-erase", is_flag=True, help="Skip erasing the flash first.")
@click.option("--json", "as_json", is_flag=True)
def flash(port, board, image, baud, no_erase, as_json) -> None:
    """Write MicroPython to an ESP32 board with esptool."""
    from terrapin.tools.board import flash as flasher
    from terrapin.tools.cli.device_common import pick_port

    port = port or pick_port()
    with progress_bar("writing", not as_json) as bar:
        task = bar.add_task("flash", total=None, name="")

        def progress(cur: int, total: int) -> None:
            bar.update(task, completed=cur, total=total)

        def note(text: str) -> None:
            if not as_json:
                bar.console.print(text, markup=False)

        result = flasher.flash(
            port, board, image, baud=baud, erase=not no_erase, progress=progress, note=note
        )
    emit(as_json, result, f"flashed MicroPython to the {result['chip']} ({result['mac']})")


# -- ports ---------------------------------------------------------------------
@device.command()
@click.option("--json", "as_json", is_flag=True)
def ports(as_json: bool) -> None:
    """List serial ports with their USB vid:pid; ESP32-like ones are marked."""
    from terrapin.tools.board.ports import list_ports

    found = list_ports()
    rows = [
        {"device": p.device, "usb_id": p.usb_id, "description": p.description, "bridge": p.bridge}
        for p in found
    ]
    text = "\n".join(p.label() for p in found) or "no serial ports found"
    emit(as_json, {"ports": rows}, text)


# -- deploy --------------------------------------------------------------------
@device.command()
@port_options
@click.option("--force", is_flag=True, help="Copy every file, ignoring the board's manifest.")
@click.option("--mpy-cross", "mpy_cross", help="Use this mpy-cross binary.")
@click.option("--no-reset", is_flag=True, help="Do not soft-reset the board afterwards.")
@click.option(
    "--call-timeout",
    type=click.FloatRange(min=0.1),
    default=20.0,
    show_default=True,
    help="Seconds to wait for each raw-REPL call (more for an emulated board).",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Stalls to resume from per file before giving up.",
)
@click.option("--json", "as_json", is_flag=True)
def deploy(
    port, target, flash_dir, force, mpy_cross, no_reset, as_json, call_timeout=20.0, retries=2
) -> None:
    """Compile the firmware to .mpy and copy what changed to the board."""
    from terrapin.tools.board import deploy as dep

    port = check_target(port, target, flash_dir)
    with progress_bar("deploying", not as_json) as bar:
        task = bar.add_task("deploy", total=None, name="")

        def progress(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, name=name)

        if target == "unix":
            result = dep.deploy(
                dep.DirTarget(flash_dir), mpy_cross=mpy_cross, force=force, progress=progress
            )
        else:
            from terrapin.tools.board.serialconsole import RawRepl

            with open_link(port, target, flash_dir) as link:
                repl = RawRepl(link)
                repl.enter(timeout=max(5.0, call_timeout))

                def note(text: str) -> None:
                    if not as_json:
                        bar.console.print(text, markup=False)

                board = dep.ReplTarget(repl, call_timeout, retries, note)
                result = dep.deploy(board, mpy_cross=mpy_cross, force=force, progress=progress)
                if not no_reset:
                    repl.soft_reset()
                else:
                    repl.exit()
    emit(
        as_json,
        result.as_dict(),
        f"deployed: {len(result.uploaded)} copied ({result.bytes_uploaded} bytes), "
        f"{len(result.unchanged)} unchanged, {len(result.deleted)} removed; "
        f".mpy {result.mpy_cross} for a board running {result.board_mpy}",
    )


# -- monitor -------------------------------------------------------------------
@device.command()
@port_options
@click.option("--for", "duration", type=float, help="Stop after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print status events as JSON lines.")
def monitor(port, target, flash_dir, duration, as_json) -> None:
    """Show the board's console with status lines decoded (Ctrl-C to stop)."""
    from rich.console import Console

    from terrapin.tools.board.monitor import monitor as run

    out = Console(highlight=False)

    def show(text: str, ev: dict | None) -> None:
        if as_json:
            if ev is not None:
                click.echo(json.dumps(ev, sort_keys=True))
        elif ev is not None:
            out.print(f"[bold green]status[/] {text}", markup=True)
        else:
            out.print(text, markup=False)

    board_args = ("--status-every", "2")  # a console-only virtual board's status lines
    with (
        open_link(port, target, flash_dir, board_args) as link,
        contextlib.suppress(KeyboardInterrupt),
    ):
        run(link, show, duration=duration)


# -- status --------------------------------------------------------------------
@device.command("status")
@click.argument("address")
@click.option("--config", "config_path", help="Gateway config (default: the gateway's own).")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="Gateway database.")
@click.option("--api", help="Gateway status API URL (default: from the config).")
@click.option("--rpc", help="JSON-RPC URL to ask the registry for the board's owner.")
@click.option("--contract", help="Registry address (default with a config: [chain] registry).")
@click.option("--json", "as_json", is_flag=True)
def status(address, config_path, db, api, rpc, contract, as_json) -> None:
    """One board as the gateway sees it: readings, latest values and whether they are
    anchored, rejections, backlog, owner (asked on chain when a JSON-RPC chain is
    known), rewards."""
    from terrapin.tools.board import status as boardstatus

    addr = boardstatus.parse_address(address)
    if db is None:
        from terrapin.gateway.config import load_config

        cfg = load_config(config_path)
        db = Path(cfg.store.path)
        if api is None and cfg.api.enabled:
            api = f"http://{cfg.api.host}:{cfg.api.port}"
        rpc, contract = _registry_of(cfg, rpc, contract)
    if rpc and not contract:
        raise TerrapinError("--rpc needs --contract (the registry address)")
    chain = (rpc, contract) if rpc else None
    result = boardstatus.board_status(addr, db=db, api=api, chain=chain)
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    click.echo(boardstatus.as_text(result))


def _registry_of(cfg, rpc: str | None, contract: str | None) -> tuple[str | None, str | None]:
    """The chain and registry `device status` asks for the owner: the options, else the
    config's JSON-RPC [chain] (the embedded chain lives inside the gateway process)."""
    chain = dict(cfg.section("chain"))
    network = chain.get("network")
    if rpc is None and isinstance(network, str) and network.startswith(("http://", "https://")):
        rpc = network
    if contract is None and rpc is not None:
        contract = dict(cfg.section("rewards")).get("binding") or chain.get("registry")
    return rpc, contract


# -- virtual -------------------------------------------------------------------
@device.command()
@click.option("--dir", "flash_dir", required=True, type=click.Path(path_type=Path))
@click.option("--tcp-port", type=int, default=0, show_default=True, help="0 picks a free port.")
@click.option("--status-every", type=int, default=10, show_default=True)
@click.option(
    "--app",
    is_flag=True,
    help="Boot the deployed firmware app (main.py --config config.json) instead of the "
    "console-only board.",
)
def virtual(flash_dir, tcp_port, status_every, app) -> None:
    """Run a virtual board (unix port) on a pty and a TCP serial socket until Ctrl-C.

    The checkout's firmware is deployed into DIR first (only changed files).
    """
    import time

    from terrapin.tools.devkit.virtualboard import VirtualBoard

    if app:
        vb = VirtualBoard(
            flash_dir,
            tcp_port=tcp_port,
            script=Path(flash_dir).resolve() / "main.py",
            args=("--config", "config.json", "--flash", "."),
        )
    else:
        vb = VirtualBoard(flash_dir, tcp_port=tcp_port, args=("--status-every", str(status_every)))
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with vb:
        click.echo(f"virtual board: --port {vb.pty_path}  or  --port {vb.url}")
        click.echo(f"console log: {vb.log_path}")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(1)


device.add_command(provision)
device.add_command(bind)
device.add_command(ota)
