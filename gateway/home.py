"""A gateway's home folder: gateway.toml, its secret, the database and the Mosquitto files.

`init_home` is what `terrapin gateway init` does; the demo and the test kit call it
directly. It returns the lines the command prints, so every caller says the same.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from terrapin.gateway import mosquitto_conf, secretfile
from terrapin.gateway.config import DEFAULT_PATH, load_config, render_config
from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.store import Store

OTA_SECRET = "ota.secret"  # the OTA publisher's broker password, beside gateway.toml
# Never routed: "connecting" a UDP socket there sends nothing, but picks the source
# address of the default route, which is the address boards on the LAN reach.
_UNROUTED = ("10.255.255.255", 1)


def lan_address() -> str | None:
    """This machine's LAN address (the default route's source), or None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(_UNROUTED)
            found = probe.getsockname()[0]
        except OSError:
            return None
    return None if is_loopback(found) or found == "0.0.0.0" else found


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost": on a board that address is the board."""
    if host.strip().lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def board_listener(port: int, public_host: str) -> str:
    """The Mosquitto listener boards connect to, with the same client-id rule as the
    loopback one (listener options apply per listener). Bound to `public_host` when it
    is an address, to the LAN address for a host name; "" when there is none (a listener
    on every interface would collide with the loopback one on the same port)."""
    try:
        ipaddress.ip_address(public_host)
        bind: str | None = public_host
    except ValueError:  # a host name (pi.local): bind where the LAN is
        bind = lan_address()
    if bind is None:
        return ""
    return (
        "# The listener boards reach (`gateway init --public-host`, docs/GATEWAY.md).\n"
        f"listener {port} {bind}\n"
        "use_username_as_clientid true\n"
    )


def init_home(
    directory: str | Path,
    *,
    mqtt_port: int = 1883,
    api_port: int = 8377,
    force: bool = False,
    public_host: str = "",
) -> list[str]:
    """Write a commented config, create the database and the Mosquitto files.

    `public_host` is the address boards use for the broker (`lan_address()` from the
    command): a listener is written for it beside the loopback one. Empty or a loopback
    address: the broker is local only (the demo, tests, virtual boards)."""
    public_host = "" if is_loopback(public_host) else public_host.strip()
    d = Path(directory).resolve()
    cfg_path = d / "gateway.toml"
    if cfg_path.exists() and not force:
        raise TerrapinError(f"{cfg_path} exists", hint="use --force to overwrite it")
    mq = d / "mosquitto"
    mq.mkdir(parents=True, exist_ok=True)
    db = "/var/lib/terrapin/gateway.db" if d == DEFAULT_PATH.parent else "gateway.db"
    password, ota_password = mosquitto_conf.random_password(), mosquitto_conf.random_password()
    # Secrets are 0600 from the moment they exist (never written, then chmodded).
    secretfile.write_secret(d / "gateway.secret", password + "\n")
    secretfile.write_secret(d / OTA_SECRET, ota_password + "\n")
    passwd, acl = mq / "passwd", mq / "acl"
    users = mosquitto_conf.read_passwd(passwd)
    users[mosquitto_conf.GATEWAY_USER] = mosquitto_conf.hash_password(password)
    users[mosquitto_conf.OTA_USER] = mosquitto_conf.hash_password(ota_password)
    mosquitto_conf.write_passwd(passwd, users)
    acl.write_text(mosquitto_conf.render_acl())
    conf = mosquitto_conf.render_conf(
        port=mqtt_port, password_file=passwd, acl_file=acl, persistence_dir=mq / "data"
    )
    listener = board_listener(mqtt_port, public_host) if public_host else ""
    (mq / "mosquitto.conf").write_text(conf + listener)
    mosquitto_conf.make_data_dir(mq / "data")
    cfg_path.write_text(
        render_config(
            {
                "mqtt": {"port": mqtt_port, "password_file": "gateway.secret"},
                "broker": {
                    "password_file": "mosquitto/passwd",
                    "acl_file": "mosquitto/acl",
                    "public_host": public_host,
                },
                "store": {"path": db},
                "api": {"port": api_port},
            }
        )
    )
    cfg = load_config(cfg_path)
    Store(cfg.store.path).close()
    return [
        f"wrote {cfg_path}",
        f"wrote {d}/gateway.secret, {OTA_SECRET} (broker passwords, mode 0600)",
        f"wrote {mq}/mosquitto.conf, passwd, acl (gateway user {mosquitto_conf.GATEWAY_USER}, "
        f"OTA user {mosquitto_conf.OTA_USER})",
        f"created {cfg.store.path}",
        f"boards connect to {public_host}:{mqtt_port} (public_host; --public-host to change)"
        if listener
        else f"no address of this machine's for {public_host}: broker on 127.0.0.1 only; "
        "add a listener for boards to mosquitto.conf"
        if public_host
        else "broker on 127.0.0.1 only: virtual boards and local tools "
        "(--public-host HOST for real boards)",
        f"next: mosquitto -c {mq}/mosquitto.conf  (or see docs/GATEWAY.md for Debian)",
        f"      terrapin gateway device add ADDRESS --config {cfg_path}",
        f"      terrapin gateway run --config {cfg_path}",
    ]
