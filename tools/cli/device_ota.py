"""`terrapin device ota ...`: release key, signed bundles, pushing a bundle to a board.

keygen, build and push (over the serial console, or straight into a virtual
board's flash) on top of tools/board/ota.py; publish (over MQTT) on top of
tools/board/ota_publish.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from terrapin.gateway.errors import TerrapinError
from terrapin.tools.board.ota_publish import (  # over MQTT (docs/PROTOCOL.md 13)
    OK_RESULTS,
    BoardUpdate,
    all_boards,
    offer_for,
    ota_login,
    publish,
)
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

    port = check_target(port, target, flash_dir)
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
            # else a board taken into console mode for this goes back to the app
            # (and so boots the update) after 5 quiet minutes (LEAVE_MS)
    emit(
        as_json,
        result,
        f"the board accepted version {result['version']} (release {result['release']}); "
        "it boots it on trial and keeps it once the firmware confirms",
    )


@ota.command("publish")
@click.argument("bundle", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--address", "addresses", multiple=True, help="Board address (repeat for more).")
@click.option("--all", "all_", is_flag=True, help="Every board on the gateway's allow-list.")
@click.option("--config", "config_path", help="Gateway config (default: the gateway's own).")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait for boards.")
@click.option("--json", "as_json", is_flag=True)
def ota_publish(bundle, addresses, all_, config_path, timeout, as_json) -> None:
    """Offer a signed bundle to boards over MQTT and serve it until they report.

    Logs in as the OTA broker user (password in ota.secret beside the
    gateway config, from `gateway init`); each board fetches the bundle in
    small chunks, verifies it, reboots into it on trial and reports the new
    version in its status. Exits non-zero unless every board is updated.
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from terrapin.gateway.config import load_config

    cfg = load_config(config_path)
    targets = list(addresses)
    if all_:
        targets += all_boards(cfg.store.path)
    if not targets:
        raise TerrapinError("which boards? pass --address ADDR (repeatable) or --all")
    data = bundle.read_bytes()
    offer = offer_for(data)
    ota_user, ota_password = ota_login(cfg.path)  # its own broker user, not the gateway's
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[state]}"),
        disable=as_json,
        transient=True,
    ) as bar:
        tasks = {}
        for a in targets:
            addr = a.lower().removeprefix("0x")
            tasks[addr] = bar.add_task(addr[:10], total=len(data), state="waiting")

        def progress(b: BoardUpdate) -> None:
            bar.update(tasks[b.address], completed=b.served, state=b.result)

        result = publish(
            data,
            targets,
            host=cfg.mqtt.host,
            port=cfg.mqtt.port,
            username=ota_user,
            password=ota_password,
            tls_ca=cfg.mqtt.tls_ca or None,
            timeout=timeout,
            on_progress=progress,
        )
    failed = [b for b in result["boards"] if b["result"] not in OK_RESULTS]
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        click.echo(
            f"offered {offer['version']} (release {offer['release']}, {offer['size']} bytes)"
        )
        for b in result["boards"]:
            took = f", {b['transfer_s']} s transfer" if b["transfer_s"] is not None else ""
            click.echo(f"{b['address']}: {b['result']}{took}  {b['text']}".rstrip())
    if failed:
        raise TerrapinError(
            f"{len(failed)} of {len(result['boards'])} boards not updated: "
            + ", ".join(f"{b['address'][:10]} {b['result']}" for b in failed)
        )
