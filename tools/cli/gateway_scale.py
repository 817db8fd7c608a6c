"""`terrapin gateway migrate`: beyond one machine (docs/SCALE.md)."""

from __future__ import annotations

import sys
import time

import click

from terrapin.gateway.config import load_config
from terrapin.gateway.pgsql import redact_url
from terrapin.tools.cli.gateway_device import config_option


@click.command()
@click.option(
    "--to", "url", required=True, metavar="URL", help="the new, empty PostgreSQL database"
)
@config_option
def migrate(url, config_path):
    """Copy this gateway's SQLite database into PostgreSQL (stop the gateway first)."""
    from terrapin.gateway.migrate import migrate as run_migration

    cfg = load_config(config_path)
    started = time.monotonic()
    last = [0.0]

    def progress(line: str) -> None:
        now = time.monotonic()
        if line.endswith("copied") or now - last[0] > 1.0:  # a line a second at most
            last[0] = now
            click.echo(line, err=not line.endswith("copied"))

    copied = run_migration(cfg.store.path, url, progress=progress)
    took = time.monotonic() - started
    click.echo(
        f"migrated {sum(copied.values()):,} rows in {len(copied)} tables from {cfg.store.path}"
        f" to {redact_url(url)} in {took:.1f} s"
    )
    where = cfg.path or "gateway.toml"
    click.echo(f'next: set [store] url = "{redact_url(url)}" in {where}, then start the gateway')
    sys.stdout.flush()


@click.group()
def instance() -> None:
    """Several gateway instances on one PostgreSQL store (docs/SCALE.md)."""


@instance.command("add")
@click.argument("name")
@click.option("--api-port", type=int, required=True, help="this instance's status API port")
@click.option(
    "--share-group", default="", help="MQTT shared-subscription group (default: terrapin)"
)
@config_option
def instance_add(name, api_port, share_group, config_path):
    """Add instance NAME: its broker user, secret and gateway-NAME.toml."""
    from terrapin.gateway.config import default_path
    from terrapin.gateway.instances import add_instance

    _, lines = add_instance(
        config_path or default_path(), name, api_port=api_port, share_group=share_group
    )
    for line in lines:
        click.echo(line)
