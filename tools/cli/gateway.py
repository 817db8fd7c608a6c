"""`terrapin gateway init|run|status|device`."""

from __future__ import annotations

import json
import signal
import threading
import urllib.error
import urllib.request

import click

from terrapin.gateway.config import DEFAULT_PATH, load_config
from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.home import init_home
from terrapin.tools.cli.gateway_device import config_option, device
from terrapin.tools.cli.gateway_scale import instance, migrate


@click.group()
def gateway() -> None:
    """Set up and run the gateway (MQTT ingest, verify, store, ack)."""


gateway.add_command(device)
gateway.add_command(migrate)
gateway.add_command(instance)


@gateway.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default=str(DEFAULT_PATH.parent),
    show_default=True,
    help="where to write gateway.toml, the database and the Mosquitto files",
)
@click.option(
    "--mqtt-port", type=int, default=None, help="broker listener port  [default: 1883, or kept]"
)
@click.option(
    "--api-port", type=int, default=None, help="status API port  [default: 8377, or kept]"
)
@click.option(
    "--force",
    is_flag=True,
    help="update an existing home: keeps its settings, secrets, boards and database, "
    "backs up each file it changes",
)
@click.option(
    "--rotate-secret",
    is_flag=True,
    help="with --force: new broker passwords for the gateway and OTA users",
)
@click.option(
    "--store",
    "store_url",
    default="",
    metavar="URL",
    help="keep readings in PostgreSQL (postgresql://user@host/db) instead of SQLite",
)
@click.option(
    "--public-host",
    help="address or name boards use for the broker (default: this machine's LAN "
    "address, or kept with --force; 127.0.0.1: local only)",
)
def init(directory, mqtt_port, api_port, force, rotate_secret, store_url, public_host):
    """Write a commented config, create the database and the Mosquitto files."""
    from terrapin.gateway.home import lan_address

    if store_url and not store_url.startswith(("postgresql://", "postgres://")):
        raise TerrapinError(f"--store {store_url!r} is not a postgresql:// URL")
    if rotate_secret and not force:
        raise TerrapinError("--rotate-secret needs --force (it changes an existing home)")
    if public_host is None and not force:
        public_host = lan_address() or ""
        if not public_host:
            click.echo("no LAN address found: real boards need --public-host HOST", err=True)
    lines = init_home(
        directory,
        mqtt_port=mqtt_port,
        api_port=api_port,
        force=force,
        rotate_secret=rotate_secret,
        public_host=public_host,
        store_url=store_url,
    )
    for line in lines:
        click.echo(line)


@gateway.command()
@config_option
def run(config_path):
    """Run the gateway until SIGTERM / Ctrl-C."""
    from terrapin.gateway.logs import setup_logging
    from terrapin.gateway.server import Gateway
    from terrapin.gateway.worker import WorkerDied

    cfg = load_config(config_path)
    setup_logging(cfg.log.level, cfg.log.format)
    gw = Gateway(cfg)
    shutdown = threading.Event()

    def stop(signum, frame):
        shutdown.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, lambda s, f: gw.request_reload())
    try:
        gw.run(shutdown)
    except WorkerDied as exc:
        raise TerrapinError(
            str(exc), hint="see the log lines above; systemd restarts the gateway"
        ) from None


@gateway.command()
@click.argument("dest", type=click.Path(file_okay=False))
@config_option
def backup(dest, config_path):
    """Back up the gateway (database, config, secrets) into the new folder DEST, while it runs."""
    from terrapin.gateway.backup import backup_home

    backup_home(config_path, dest, say=click.echo)


@gateway.command()
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default=str(DEFAULT_PATH.parent),
    show_default=True,
    help="the gateway home to restore into (its gateway must be stopped)",
)
@click.option("--force", is_flag=True, help="replace an existing home (its files kept as .bak-*)")
def restore(src, directory, force):
    """Restore a backup made by `terrapin gateway backup` into a stopped gateway home."""
    from terrapin.gateway.backup import restore_home

    for line in restore_home(src, directory, force=force):
        click.echo(line)


def fetch_status(cfg, timeout: float = 3.0) -> dict:
    url = f"http://{cfg.api.host}:{cfg.api.port}/api/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError) as exc:
        raise TerrapinError(
            f"the gateway does not answer at {url}: {exc}",
            hint="is `terrapin gateway run` running with this config?",
        ) from None


@gateway.command()
@click.option("--json", "as_json", is_flag=True, help="print the raw /api/status JSON")
@config_option
def status(as_json, config_path):
    """The running gateway: ingest, anchoring, rewards and boards (from its status API
    and, when readable here, its database)."""
    cfg = load_config(config_path)
    st = fetch_status(cfg)
    if as_json:
        click.echo(json.dumps(st, indent=2, sort_keys=True))
        return
    import shutil

    from terrapin.gateway.metrics import read_state
    from terrapin.tools.cli.gateway_status import status_text

    width = shutil.get_terminal_size((80, 24)).columns
    click.echo(status_text(st, read_state(cfg.store.path), width=max(width, 60)))
