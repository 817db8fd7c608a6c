"""`terrapin device ota ...`: release key, signed bundles, pushing a bundle to a board.

keygen, build and push (over the serial console, or straight into a virtual
board's flash) are here, on top of tools/board/ota.py; publish (over MQTT) is in
tools/board/ota_publish.py and joins the group below.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from terrapin.gateway.errors import TerrapinError
from terrapin.tools.board.ota_publish import ota_publish  # over MQTT (docs/PROTOCOL.md 13)
from terrapin.tools.cli.device_common import (
    check_target,
    emit,
    open_link,
    port_options,
    progress_bar,
)


@click.group()
def ota() -> None:
    """Signed firmware updates: release key, bundles, pushing them to a board."""


@ota.command("keygen")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def ota_keygen(out: Path) -> None:
    """Make a release key (keep it secret); prints the public key boards trust."""
    from terrapin.tools.board import ota as host

    pub = host.new_release_key(out)
    click.echo(f"release key written to {out} (mode 0600)\nota_pubkey: {pub}")


@ota.command("build")
@click.option("--key", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--version", "version", required=True)
@click.option("--release", required=True, type=int, help="Grows with every bundle.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--src", type=click.Path(file_okay=False, path_type=Path), help="Firmware folder.")
@click.option("--board-mpy", type=int, help="The board's sys.implementation._mpy (default: unix).")
@click.option("--json", "as_json", is_flag=True)
def ota_build(key, version, release, out, src, board_mpy, as_json) -> None:
    """Compile the firmware and write a signed bundle."""
    from terrapin.tools.board import ota as host
    from terrapin.tools.board.deploy import FIRMWARE_DIR, BoardMpy, DirTarget

    mpy = BoardMpy(board_mpy) if board_mpy is not None else DirTarget(Path(".")).mpy()
    files = host.firmware_files(mpy, src or FIRMWARE_DIR, version=version)
    bundle = host.build_bundle(
        files, version=version, release=release, key=host.load_release_key(key), mpy=mpy.raw
    )
    out.write_bytes(bundle)
    emit(
        as_json,
        {"bundle": str(out), "size": len(bundle), "files": len(files), "version": version},
        f"wrote {out}: {len(files)} files, {len(bundle)} bytes, version {version}",
    )


@ota.command("push")
@port_options
@click.argument("bundle", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--pubkey", help="Trusted release key (--target unix; default: the board config).")
@click.option("--no-reboot", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def ota_push(port, target, flash_dir, bundle, pubkey, no_reboot, as_json) -> None:
    """Send a bundle; the board verifies it, stages it and boots it on trial."""
    from terrapin.tools.board import ota as host
    from terrapin.tools.board.serialconsole import BoardConsole

    check_target(port, target, flash_dir)
    data = bundle.read_bytes()
    if target == "unix":
        if not pubkey:
            try:
                pubkey = json.loads((flash_dir / "config.json").read_text())["ota_pubkey"]
            except (OSError, ValueError, KeyError) as exc:
                raise TerrapinError("no --pubkey and no ota_pubkey in the board config") from exc
        result = host.install_dir(flash_dir, bundle, pubkey)
    else:
        with (
            open_link(port, target, flash_dir) as link,
            progress_bar("sending", not as_json) as bar,
        ):
            task = bar.add_task("ota", total=len(data), name=bundle.name)
            console = BoardConsole(link)
            console.wait_ready()
            result = host.push_serial(
                console, data, lambda done, total: bar.update(task, completed=done)
            )
            if not no_reboot:
                console.request("reboot")
    emit(
        as_json,
        result,
        f"the board accepted version {result['version']} (release {result['release']}); "
        "it boots it on trial and keeps it once the firmware confirms",
    )


ota.add_command(ota_publish)
