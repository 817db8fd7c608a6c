"""`device add|list|remove`: the gateway's allow-list and the boards' broker users.

Mounted as `terrapin gateway device ...` (and meant for `terrapin device ...`),
over terrapin.gateway.allowlist. A board's broker user name is its address in
hex, which is also its client id (the generated Mosquitto config binds the two);
its password is printed once by `add` and only its hash is kept, in the
Mosquitto password file named by [broker] password_file. A password is never
taken on the command line (other users see it in `ps` and shell history): a
new random one, or $TERRAPIN_BOARD_PASSWORD, or the first line of
--password-file.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console
from rich.table import Column, Table

from terrapin.gateway import allowlist
from terrapin.gateway.allowlist import parse_address, reload_hint
from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.protocol.topics import board_topic

PASSWORD_ENV = "TERRAPIN_BOARD_PASSWORD"

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="gateway config (default /etc/terrapin/gateway.toml or $TERRAPIN_GATEWAY_CONFIG)",
)


@click.group()
def device() -> None:
    """Boards allowed to send readings, and their broker credentials."""


def board_password(password_file: str | None) -> str | None:
    """The password to set: --password-file's first line, else $TERRAPIN_BOARD_PASSWORD,
    else None (a new random one)."""
    if password_file:
        try:
            lines = Path(password_file).read_text().splitlines()
        except OSError as exc:
            raise TerrapinError(f"cannot read --password-file {password_file}: {exc}") from None
        if not lines or not lines[0].strip():
            raise TerrapinError(
                f"--password-file {password_file} has no password on its first line"
            )
        return lines[0].strip()
    return os.environ.get(PASSWORD_ENV) or None


@device.command("add")
@click.argument("address")
@click.option("--pubkey", default=None, help="the board's public key (130 hex chars, 04...)")
@click.option("--label", default="", help="a name for people")
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"file whose first line is the broker password (else ${PASSWORD_ENV}, "
    "else a new random one; never on the command line)",
)
@click.option(
    "--rotate-password",
    is_flag=True,
    help="ADDRESS is already allowed: give it a new password (the board needs it too)",
)
@click.option("--password", "password_arg", default=None, hidden=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@config_option
def add(address, pubkey, label, password_file, rotate_password, password_arg, as_json, config_path):
    """Allow ADDRESS and create its broker user; prints the board's credentials."""
    if password_arg is not None:
        raise TerrapinError(
            "a password on the command line is seen by every user (ps, shell history)",
            hint=f"set ${PASSWORD_ENV}, or pass --password-file FILE",
        )
    addr = parse_address(address)
    pub = allowlist.parse_pubkey(pubkey, addr) if pubkey else None
    added = allowlist.add_board(
        config_path, addr, pub, label, board_password(password_file), rotate=rotate_password
    )
    cfg, new, password = added.cfg, added.new, added.password
    creds = {
        "address": addr.hex(),
        "new": new,
        "mqtt_host": cfg.broker.public_host or cfg.mqtt.host,
        "mqtt_port": cfg.mqtt.port,
        "mqtt_user": addr.hex(),
        "mqtt_password": password,
        "client_id": addr.hex(),  # the broker replaces any id with the user name
        "topic_prefix": board_topic(addr, ""),
    }
    if as_json:
        click.echo(json.dumps(creds))
        return
    click.echo(("added" if new else "already allowed (password rotated)") + f" {addr.hex()}")
    for key in ("mqtt_host", "mqtt_port", "mqtt_user", "mqtt_password", "client_id"):
        click.echo(f"  {key}: {creds[key]}")
    click.echo("keep the password: it is shown only now.")
    click.echo(reload_hint(cfg))


@device.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@config_option
def list_(as_json, config_path):
    """Allowed boards, with reading counts."""
    _cfg, store = allowlist.open_store(config_path)
    try:
        rows = [
            (d, store.count_readings(d.address), store.highest_seq(d.address))
            for d in store.devices()
        ]
    finally:
        store.close()
    if as_json:
        out = [
            {
                "address": d.address.hex(),
                "label": d.label,
                "pubkey": d.pubkey.hex() if d.pubkey else None,
                "added_at": d.added_at,
                "readings": n,
                "highest_seq": top,
                "equivocations": d.equivocations,
            }
            for d, n, top in rows
        ]
        click.echo(json.dumps(out))
        return
    table = Table(
        Column("address", no_wrap=True, min_width=40),
        "label",
        "readings",
        "highest seq",
        "key known",
        "equivocations",
        "added",
    )
    for d, n, top in rows:
        added = datetime.fromtimestamp(d.added_at or 0, UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row(
            d.address.hex(),
            d.label,
            str(n),
            "-" if top is None else str(top),
            "yes" if d.pubkey else "no",
            str(d.equivocations),
            added,
        )
    Console().print(table)


@device.command("release")
@click.argument("address")
@config_option
def release(address, config_path):
    """Lift ADDRESS's broker quarantine now (the running gateway does it within a second)."""
    from terrapin.gateway.config import load_config
    from terrapin.gateway.quarantine import request_release

    addr = parse_address(address)
    cfg = load_config(config_path)
    try:
        request_release(cfg.store.path, addr)
    except OSError as exc:
        raise TerrapinError(
            f"cannot ask the gateway to release {addr.hex()}: {exc}",
            hint="run this as the user the gateway runs as (it writes beside the database)",
        ) from None
    click.echo(f"asked the gateway to lift the quarantine of {addr.hex()}")
    click.echo("check with `terrapin gateway status` (the gateway logs the release)")


@device.command("remove")
@click.argument("address")
@config_option
def remove(address, config_path):
    """Stop accepting ADDRESS and delete its broker user (its readings stay)."""
    addr = parse_address(address)
    cfg = allowlist.remove_board(config_path, addr)
    click.echo(f"removed {addr.hex()}; its stored readings are kept")
    click.echo(reload_hint(cfg))
