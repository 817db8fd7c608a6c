"""`terrapin device ...`: flash, deploy, provision, bind, watch and update boards.

Every command that talks to a board takes `--port` (a device path such as
/dev/ttyUSB0, or `socket://127.0.0.1:PORT` for QEMU / a virtual board's TCP
serial) or `--target unix --dir D` (a virtual board on the MicroPython unix
port whose flash is the directory D). The gateway's own device commands
(add/list/remove, gateway/devicecmd.py) are mounted here too.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import Iterator
from pathlib import Path

import click

from terrapin.tools.errors import TerrapinError

GATEWAY_COMMANDS = ("add", "list", "remove", "status")


class DeviceGroup(click.Group):
    """Our commands, plus the gateway's device commands imported only when asked for."""

    def _gateway(self) -> dict[str, click.Command]:
        try:
            mod = importlib.import_module("terrapin.gateway.devicecmd")
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


def _emit(as_json: bool, obj: dict, text: str) -> None:
    if as_json:
        click.echo(json.dumps(obj, sort_keys=True))
    else:
        click.echo(text)


def _progress(label: str, enabled: bool = True):
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


def _check_target(port: str | None, target: str, flash_dir: Path | None) -> None:
    if target == "unix":
        if flash_dir is None:
            raise TerrapinError("--target unix needs --dir D (the virtual board's flash)")
    elif not port:
        raise TerrapinError(
            "which board? pass --port (e.g. /dev/ttyUSB0) or --target unix --dir D",
            hint="plugged-in boards usually appear as /dev/ttyUSB0 or /dev/ttyACM0",
        )


@contextlib.contextmanager
def open_link(
    port: str | None, target: str, flash_dir: Path | None, board_args: tuple[str, ...] = ()
) -> Iterator:
    """A Link to the board: the serial port, or a virtual board started for the command."""
    from terrapin.tools.serialconsole import Link, open_port

    _check_target(port, target, flash_dir)
    if target == "unix":
        from terrapin.tools.virtualboard import VirtualBoard

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


# -- flash ---------------------------------------------------------------------
@device.command()
@click.option("--port", required=True, help="Serial port of the board (e.g. /dev/ttyUSB0).")
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
    from terrapin.tools import flash as flasher

    with _progress("writing", not as_json) as bar:
        task = bar.add_task("flash", total=None, name="")

        def progress(cur: int, total: int) -> None:
            bar.update(task, completed=cur, total=total)

        def note(text: str) -> None:
            if not as_json:
                bar.console.print(text, markup=False)

        result = flasher.flash(
            port, board, image, baud=baud, erase=not no_erase, progress=progress, note=note
        )
    _emit(as_json, result, f"flashed MicroPython to the {result['chip']} ({result['mac']})")


# -- deploy --------------------------------------------------------------------
@device.command()
@port_options
@click.option("--force", is_flag=True, help="Copy every file, ignoring the board's manifest.")
@click.option("--mpy-cross", "mpy_cross", help="Use this mpy-cross binary.")
@click.option("--no-reset", is_flag=True, help="Do not soft-reset the board afterwards.")
@click.option("--json", "as_json", is_flag=True)
def deploy(port, target, flash_dir, force, mpy_cross, no_reset, as_json) -> None:
    """Compile the firmware to .mpy and copy what changed to the board."""
    from terrapin.tools import deploy as dep

    _check_target(port, target, flash_dir)
    with _progress("deploying", not as_json) as bar:
        task = bar.add_task("deploy", total=None, name="")

        def progress(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, name=name)

        if target == "unix":
            result = dep.deploy(
                dep.DirTarget(flash_dir), mpy_cross=mpy_cross, force=force, progress=progress
            )
        else:
            from terrapin.tools.serialconsole import RawRepl

            with open_link(port, target, flash_dir) as link:
                repl = RawRepl(link)
                repl.enter()
                result = dep.deploy(
                    dep.ReplTarget(repl), mpy_cross=mpy_cross, force=force, progress=progress
                )
                if not no_reset:
                    repl.soft_reset()
                else:
                    repl.exit()
    _emit(
        as_json,
        result.as_dict(),
        f"deployed: {len(result.uploaded)} copied ({result.bytes_uploaded} bytes), "
        f"{len(result.unchanged)} unchanged, {len(result.deleted)} removed; "
        f".mpy {result.mpy_cross} for a board running {result.board_mpy}",
    )


# -- provision -------------------------------------------------------------------
@device.command()
@port_options
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON config to write (may hold secrets; never printed).",
)
@click.option("--wifi-ssid", help="WiFi network; the password comes from $TERRAPIN_WIFI_PASSWORD.")
@click.option("--broker", help="MQTT broker HOST[:PORT].")
@click.option("--mqtt-user", help="MQTT user; password from $TERRAPIN_MQTT_PASSWORD.")
@click.option("--ota-pubkey", help="Release public key the board trusts for updates (hex).")
@click.option(
    "--gateway-config",
    type=click.Path(dir_okay=False),
    help="Register with this gateway (allow-list + broker user; credentials go to the board).",
)
@click.option(
    "--gateway-db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Only allow-list the board in this gateway database.",
)
@click.option("--owner", help="Bind the board to this owner address (0x...).")
@click.option("--chain-id", type=int, help="Chain id of the registry (with --owner).")
@click.option("--contract", help="Registry contract address (with --owner).")
@click.option("--nonce", type=int, help="Binding nonce (default: read from the chain, else 0).")
@click.option("--rpc", help="JSON-RPC URL: send bindBoard there (with --owner).")
@click.option("--key-env", help="Env var holding the private key that pays for bindBoard.")
@click.option("--finish", is_flag=True, help="Leave provisioning mode afterwards.")
@click.option("--no-prompt", is_flag=True, help="Never prompt; secrets from the environment.")
@click.option("--json", "as_json", is_flag=True)
def provision(
    port,
    target,
    flash_dir,
    config_file,
    wifi_ssid,
    broker,
    mqtt_user,
    ota_pubkey,
    gateway_config,
    gateway_db,
    owner,
    chain_id,
    contract,
    nonce,
    rpc,
    key_env,
    finish,
    no_prompt,
    as_json,
) -> None:
    """Configure a board, make its key on the board, register and bind it."""
    from terrapin.tools import provision as prov
    from terrapin.tools.serialconsole import BoardConsole

    _check_target(port, target, flash_dir)
    cfg = prov.build_config(config_file, wifi_ssid, broker, mqtt_user, ota_pubkey, not no_prompt)
    binding = None
    submit = None
    if owner:
        if not contract:
            raise TerrapinError("--owner needs --contract (the registry) and --chain-id or --rpc")
        if rpc:
            chain, read_nonce, submit = prov.chain_binding(owner, contract, rpc, key_env)
            binding = prov.Binding(owner, chain_id or chain, contract, nonce)
            binding.read_nonce = read_nonce if nonce is None else None
        elif chain_id is None:
            raise TerrapinError("--owner needs --chain-id and --contract (the registry)")
        else:
            binding = prov.Binding(owner, chain_id, contract, nonce or 0)
    register = None
    if gateway_config:
        register = prov.register_with_gateway(gateway_config)
    elif gateway_db:
        register = prov.register_in_store(gateway_db)

    def say(text: str) -> None:
        if not as_json:
            click.echo(text)

    with open_link(port, target, flash_dir) as link:
        result = prov.provision(
            BoardConsole(link),
            config=cfg,
            register=register,
            binding=binding,
            finish=finish,
            say=say,
            submit=submit,
        )
    _emit(
        as_json,
        result.as_dict(),
        f"board {result.address}\npublic key {result.pubkey}"
        + ("".join(f"\nconfig: {p}" for p in result.config_problems)),
    )


# -- bind ------------------------------------------------------------------------
@device.command()
@port_options
@click.option("--owner", required=True, help="Bind the board to this owner address (0x...).")
@click.option("--rpc", help="JSON-RPC URL of the chain with the registry.")
@click.option("--contract", help="Registry address (default with --config: [chain] registry).")
@click.option("--key-env", help="Env var holding the private key that pays for bindBoard.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Gateway config: chain, registry and (without --key-env) the gateway's key.",
)
@click.option("--json", "as_json", is_flag=True)
def bind(port, target, flash_dir, owner, rpc, contract, key_env, config_path, as_json) -> None:
    """Bind a board to an owner on chain with the board's own signature (EIP-712).

    Reads the board's address, the registry's bindNonce, has the board sign the
    BindBoard digest (only in provisioning mode), checks that the signature recovers
    to the board, sends bindBoard and prints the transaction and the new owner.
    """
    from terrapin.gateway.rewards import RewardsError, normalise_address
    from terrapin.tools import provision as prov
    from terrapin.tools.serialconsole import BoardConsole

    _check_target(port, target, flash_dir)
    try:
        owner = normalise_address(owner)
    except RewardsError as exc:
        raise TerrapinError(f"--owner: {exc}") from None
    w3 = sender = None
    if config_path:
        w3, registry, sender = prov.chain_from_config(config_path, key_env)
        contract = contract or registry
    elif not rpc:
        raise TerrapinError(
            "which chain? pass --rpc URL --contract REGISTRY --key-env VAR, or --config FILE"
        )
    if not contract:
        raise TerrapinError("--rpc needs --contract (the registry address)")
    if not key_env and sender is None:
        raise TerrapinError(
            "no key to pay for bindBoard",
            hint="pass --key-env VAR with a funded account's private key in $VAR",
        )
    chain_id, read_nonce, submit = prov.chain_binding(
        owner, contract, rpc, key_env, w3=w3, sender=sender
    )
    binding = prov.Binding(owner, chain_id, contract, None, read_nonce)

    def say(text: str) -> None:
        if not as_json:
            click.echo(text)

    with open_link(port, target, flash_dir) as link:
        console = BoardConsole(link)
        addr = prov.board_address(console)
        say(f"board 0x{addr}")
        result = prov.bind_and_submit(console, addr, binding, submit, say)
    result["board"] = "0x" + addr
    _emit(
        as_json,
        result,
        f"board 0x{addr} is now owned by {result['chain']['owner']} "
        f"(tx {result['chain']['tx']}, block {result['chain']['block']}, nonce {result['nonce']})",
    )


# -- monitor -------------------------------------------------------------------
@device.command()
@port_options
@click.option("--for", "duration", type=float, help="Stop after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print status events as JSON lines.")
def monitor(port, target, flash_dir, duration, as_json) -> None:
    """Show the board's console with status lines decoded (Ctrl-C to stop)."""
    from rich.console import Console

    from terrapin.tools.monitor import monitor as run

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
@click.option("--json", "as_json", is_flag=True)
def status(address, config_path, db, api, as_json) -> None:
    """One board as the gateway sees it: readings, rejections, backlog, rewards."""
    from terrapin.tools import boardstatus

    addr = boardstatus.parse_address(address)
    if db is None:
        from terrapin.gateway.config import load_config

        cfg = load_config(config_path)
        db = Path(cfg.store.path)
        if api is None and cfg.api.enabled:
            api = f"http://{cfg.api.host}:{cfg.api.port}"
    result = boardstatus.board_status(addr, db=db, api=api)
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    click.echo(boardstatus.as_text(result))


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

    from terrapin.tools.virtualboard import VirtualBoard

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


# -- ota -----------------------------------------------------------------------
@device.group()
def ota() -> None:
    """Signed firmware updates: release key, bundles, pushing them to a board."""


@ota.command("keygen")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def ota_keygen(out: Path) -> None:
    """Make a release key (keep it secret); prints the public key boards trust."""
    from terrapin.tools import ota as host

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
    from terrapin.tools import ota as host
    from terrapin.tools.deploy import FIRMWARE_DIR, BoardMpy, DirTarget

    mpy = BoardMpy(board_mpy) if board_mpy is not None else DirTarget(Path(".")).mpy()
    files = host.firmware_files(mpy, src or FIRMWARE_DIR, version=version)
    bundle = host.build_bundle(
        files, version=version, release=release, key=host.load_release_key(key), mpy=mpy.raw
    )
    out.write_bytes(bundle)
    _emit(
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
    from terrapin.tools import ota as host
    from terrapin.tools.serialconsole import BoardConsole

    _check_target(port, target, flash_dir)
    data = bundle.read_bytes()
    if target == "unix":
        if not pubkey:
            try:
                pubkey = json.loads((flash_dir / "config.json").read_text())["ota_pubkey"]
            except (OSError, ValueError, KeyError) as exc:
                raise TerrapinError("no --pubkey and no ota_pubkey in the board config") from exc
        result = host.install_dir(flash_dir, bundle, pubkey)
    else:
        with open_link(port, target, flash_dir) as link, _progress("sending", not as_json) as bar:
            task = bar.add_task("ota", total=len(data), name=bundle.name)
            console = BoardConsole(link)
            console.wait_ready()
            result = host.push_serial(
                console, data, lambda done, total: bar.update(task, completed=done)
            )
            if not no_reboot:
                console.request("reboot")
    _emit(
        as_json,
        result,
        f"the board accepted version {result['version']} (release {result['release']}); "
        "it boots it on trial and keeps it once the firmware confirms",
    )


from terrapin.tools.ota_publish import ota_publish  # noqa: E402 - over MQTT (docs/PROTOCOL.md 13)

ota.add_command(ota_publish)
