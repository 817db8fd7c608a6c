"""`terrapin gateway init|run|status|device`."""

from __future__ import annotations

import json
import signal
import threading
import urllib.error
import urllib.request

import click
from rich.console import Console
from rich.table import Column, Table

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
@click.option("--mqtt-port", type=int, default=1883, show_default=True, help="broker listener port")
@click.option("--api-port", type=int, default=8377, show_default=True, help="status API port")
@click.option("--force", is_flag=True, help="overwrite an existing gateway.toml")
@click.option(
    "--store",
    "store_url",
    default="",
    metavar="URL",
    help="keep readings in PostgreSQL (postgresql://user@host/db) instead of SQLite",
)
def init(directory, mqtt_port, api_port, force, store_url):
    """Write a commented config, create the database and the Mosquitto files."""
    if store_url and not store_url.startswith(("postgresql://", "postgres://")):
        raise TerrapinError(f"--store {store_url!r} is not a postgresql:// URL")
    lines = init_home(
        directory, mqtt_port=mqtt_port, api_port=api_port, force=force, store_url=store_url
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
    """Counters of the running gateway (from its status API)."""
    cfg = load_config(config_path)
    st = fetch_status(cfg)
    if as_json:
        click.echo(json.dumps(st, indent=2, sort_keys=True))
        return
    c = st["counts"]
    con = Console()
    con.print(
        f"uptime {st['uptime_s']:.0f} s, broker {'connected' if st['connected'] else 'DOWN'}, "
        f"queue {st['queue_depth']}, store {st['store_bytes'] / 1e6:.1f} MB"
    )
    con.print(
        f"received {c['received']}, stored {c['stored']}, duplicates {c['duplicate']}, "
        f"rejected {c['rejected_total']}, commits {c['commits']}"
    )
    rej = {k: v for k, v in c["rejected"].items() if v}
    if rej:
        con.print("rejected by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(rej.items())))
    table = Table(
        Column("board", no_wrap=True, min_width=40),
        "stored",
        "last seq",
        "last time",
        "flags",
        "status",
    )
    for addr, b in sorted(st["boards"].items()):
        state = st["board_status"].get(addr, {}).get("state", "")
        table.add_row(
            addr,
            str(b["stored"]),
            str(b["last_seq"]),
            str(b["last_time"]),
            str(b["last_flags"]),
            state,
        )
    con.print(table)
