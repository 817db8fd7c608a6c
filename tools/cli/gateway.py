"""`terrapin gateway init|run|status|device`."""

from __future__ import annotations

import json
import os
import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path

import click
from rich.console import Console
from rich.table import Column, Table

from terrapin.gateway import mosquitto_conf
from terrapin.gateway.config import DEFAULT_PATH, load_config, render_config
from terrapin.gateway.errors import TerrapinError
from terrapin.tools.cli.gateway_device import config_option, device


@click.group()
def gateway() -> None:
    """Set up and run the gateway (MQTT ingest, verify, store, ack)."""


gateway.add_command(device)


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
def init(directory, mqtt_port, api_port, force):
    """Write a commented config, create the database and the Mosquitto files."""
    d = Path(directory).resolve()
    cfg_path = d / "gateway.toml"
    if cfg_path.exists() and not force:
        raise TerrapinError(f"{cfg_path} exists", hint="use --force to overwrite it")
    mq = d / "mosquitto"
    mq.mkdir(parents=True, exist_ok=True)
    db = "/var/lib/terrapin/gateway.db" if d == DEFAULT_PATH.parent else "gateway.db"
    password = mosquitto_conf.random_password()
    secret = d / "gateway.secret"
    secret.write_text(password + "\n")
    os.chmod(secret, 0o600)
    passwd, acl = mq / "passwd", mq / "acl"
    users = mosquitto_conf.read_passwd(passwd)
    users[mosquitto_conf.GATEWAY_USER] = mosquitto_conf.hash_password(password)
    mosquitto_conf.write_passwd(passwd, users)
    acl.write_text(mosquitto_conf.render_acl())
    (mq / "mosquitto.conf").write_text(
        mosquitto_conf.render_conf(
            port=mqtt_port, password_file=passwd, acl_file=acl, persistence_dir=mq / "data"
        )
    )
    (mq / "data").mkdir(exist_ok=True)
    cfg_path.write_text(
        render_config(
            {
                "mqtt": {"port": mqtt_port, "password_file": "gateway.secret"},
                "broker": {"password_file": "mosquitto/passwd", "acl_file": "mosquitto/acl"},
                "store": {"path": db},
                "api": {"port": api_port},
            }
        )
    )
    cfg = load_config(cfg_path)
    from terrapin.gateway.store import Store

    Store(cfg.store.path).close()
    click.echo(f"wrote {cfg_path}")
    click.echo(
        f"wrote {mq}/mosquitto.conf, passwd, acl (gateway user {mosquitto_conf.GATEWAY_USER})"
    )
    click.echo(f"created {cfg.store.path}")
    click.echo(f"next: mosquitto -c {mq}/mosquitto.conf  (or see docs/GATEWAY.md for Debian)")
    click.echo(f"      terrapin gateway device add ADDRESS --config {cfg_path}")
    click.echo(f"      terrapin gateway run --config {cfg_path}")


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
