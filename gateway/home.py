"""A gateway's home folder: gateway.toml, its secret, the database and the Mosquitto files.

`init_home` is what `terrapin gateway init` does; the demo and the test kit call it
directly. It returns the lines the command prints, so every caller says the same.

On a home that exists (`force`), it keeps what is there: every section and setting
of gateway.toml (only the ports asked for change), the broker secrets (unless
`rotate_secret`), the board users in the password file and the database. A file
whose content changes is first copied to `<name>.bak-<UTC time>`; each printed
line says what was written, kept or backed up.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
import tomllib
from pathlib import Path
from typing import Any

from terrapin.gateway import mosquitto_conf, secretfile
from terrapin.gateway.config import (
    DEFAULT_PATH,
    SCHEMA,
    load_config,
    render_config,
    toml_value,
    validate,
)
from terrapin.gateway.errors import ConfigError, TerrapinError
from terrapin.gateway.instancelock import holder
from terrapin.gateway.pgsql import redact_url
from terrapin.gateway.storebase import open_store, store_location

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
    mqtt_port: int | None = None,
    api_port: int | None = None,
    force: bool = False,
    rotate_secret: bool = False,
    public_host: str | None = None,
    store_url: str = "",
) -> list[str]:
    """Write a commented config, create the database and the Mosquitto files
    (ports: None keeps an existing home's, else 1883 and 8377).

    `public_host` is the address boards use for the broker (`lan_address()` from the
    command; None keeps an existing home's): a listener is written for it beside the
    loopback one. Empty or a loopback address: the broker is local only (the demo,
    tests, virtual boards). `store_url`: a postgresql:// URL to keep the readings in
    (docs/SCALE.md)."""
    d = Path(directory).resolve()
    cfg_path = d / "gateway.toml"
    if cfg_path.exists() and not force:
        raise TerrapinError(
            f"{cfg_path} exists",
            hint="--force updates it, keeping its settings, secrets, boards and database",
        )
    old = _read_existing(cfg_path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    mq = d / "mosquitto"
    mq.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    db = "/var/lib/terrapin/gateway.db" if d == DEFAULT_PATH.parent else "gateway.db"
    wanted: dict[str, dict[str, Any]] = {
        "mqtt": {"port": 1883, "password_file": "gateway.secret"},
        "broker": {"password_file": "mosquitto/passwd", "acl_file": "mosquitto/acl"},
        "store": {"path": db},
        "api": {"port": 8377},
    }
    overrides = _merge(wanted, old)
    if mqtt_port is not None:
        overrides["mqtt"]["port"] = mqtt_port
    if api_port is not None:
        overrides["api"]["port"] = api_port
    if store_url:
        overrides["store"]["url"] = store_url
    if public_host is not None:
        overrides["broker"]["public_host"] = "" if is_loopback(public_host) else public_host.strip()
    host = overrides["broker"].get("public_host", "")
    password = _secret(d / "gateway.secret", rotate_secret, stamp, lines)
    ota_password = _secret(d / OTA_SECRET, rotate_secret, stamp, lines)
    passwd, acl = mq / "passwd", mq / "acl"
    _broker_users(passwd, password, ota_password, lines)
    _put(acl, mosquitto_conf.render_acl(), stamp, lines)
    port = overrides["mqtt"]["port"]
    conf = mosquitto_conf.render_conf(
        port=port, password_file=passwd, acl_file=acl, persistence_dir=mq / "data"
    )
    listener = board_listener(port, host) if host else ""
    _put(mq / "mosquitto.conf", conf + listener, stamp, lines)
    mosquitto_conf.make_data_dir(mq / "data")
    _put(cfg_path, _config_text(overrides, old), stamp, lines)
    cfg = load_config(cfg_path)
    location = store_location(cfg)
    if cfg.store.url:  # PostgreSQL: the schema is created if missing, never dropped
        open_store(location).close()
        lines.append(f"database {redact_url(cfg.store.url)} (schema created if missing)")
        pid = None
    else:
        db_path = Path(cfg.store.path)
        existed = db_path.exists()
        open_store(location).close()
        lines.append(f"{'kept' if existed else 'created'} database {db_path}")
        pid = holder(db_path)
    if pid is not None and any(line.startswith(("wrote", "changed")) for line in lines):
        lines.append(f"the gateway (pid {pid}) runs on this home: restart it to use the changes")
    return [
        *lines,
        f"boards connect to {host}:{port} (public_host; --public-host to change)"
        if listener
        else f"no address of this machine's for {host}: broker on 127.0.0.1 only; "
        "add a listener for boards to mosquitto.conf"
        if host
        else "broker on 127.0.0.1 only: virtual boards and local tools "
        "(--public-host HOST for real boards)",
        f"next: mosquitto -c {mq}/mosquitto.conf  (or see docs/GATEWAY.md for Debian)",
        f"      terrapin gateway device add ADDRESS --config {cfg_path}",
        f"      terrapin gateway run --config {cfg_path}",
    ]


def _read_existing(cfg_path: Path) -> dict[str, Any]:
    """The existing gateway.toml as data ({} if none); a broken one is refused, unchanged."""
    if not cfg_path.exists():
        return {}
    try:
        data = tomllib.loads(cfg_path.read_text())
        validate(data, cfg_path)
    except (tomllib.TOMLDecodeError, ConfigError) as exc:
        raise ConfigError(
            f"not updating {cfg_path}: {exc}",
            hint="fix it (or move it away to start over), then run init again",
        ) from None
    return data


def _merge(wanted: dict[str, dict[str, Any]], old: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """init's settings, with every setting the existing file has kept as it is."""
    merged = {name: dict(keys) for name, keys in wanted.items()}
    for name in SCHEMA:
        merged.setdefault(name, {}).update(old.get(name, {}))
    return merged


def _config_text(overrides: dict[str, dict[str, Any]], old: dict[str, Any]) -> str:
    """The commented file, then every other section ([chain], [rewards]) as it was."""
    text = render_config(overrides)
    for name, section in old.items():
        if name in SCHEMA:
            continue
        body = "".join(f"{_key(k)} = {toml_value(v)}\n" for k, v in section.items())
        text += f"\n[{name}]\n{body}"
    return text


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_value(key)


def _backup(path: Path, stamp: str) -> Path:
    """A copy of `path` beside it, mode 0600 from creation (it may hold a password)."""
    backup = path.with_name(f"{path.name}.bak-{stamp}")
    secretfile.write_secret(backup, path.read_bytes())
    return backup


def _put(path: Path, text: str, stamp: str, lines: list[str]) -> None:
    """Write `text` to `path` unless it holds it already; back up what it replaces."""
    if path.exists():
        if path.read_text() == text:
            lines.append(f"kept {path} (unchanged)")
            return
        backup = _backup(path, stamp)
        path.write_text(text)
        lines.append(f"changed {path} (the old one is {backup.name})")
        return
    path.write_text(text)
    lines.append(f"wrote {path}")


def _secret(path: Path, rotate: bool, stamp: str, lines: list[str]) -> str:
    """The broker password in `path`: kept if there, new if not (or if `rotate`)."""
    if path.exists() and not rotate:
        current = path.read_text().strip()
        if current:
            lines.append(f"kept {path} (--rotate-secret replaces it)")
            return current
    password = mosquitto_conf.random_password()
    if path.exists():
        backup = _backup(path, stamp)
        lines.append(f"changed {path}, mode 0600 (the old one is {backup.name})")
    else:
        lines.append(f"wrote {path} (broker password, mode 0600)")
    # Secrets are 0600 from the moment they exist (never written, then chmodded).
    secretfile.write_secret(path, password + "\n")
    return password


def _broker_users(passwd: Path, password: str, ota_password: str, lines: list[str]) -> None:
    """The gateway and OTA users in the password file; board users stay as they are."""
    with mosquitto_conf.passwd_locked(passwd):
        users = mosquitto_conf.read_passwd(passwd)
        changed = []
        for user, pw in (
            (mosquitto_conf.GATEWAY_USER, password),
            (mosquitto_conf.OTA_USER, ota_password),
        ):
            if user not in users or not mosquitto_conf.check_password(pw, users[user]):
                users[user] = mosquitto_conf.hash_password(pw)
                changed.append(user)
        boards = len(users) - 2
        if not passwd.exists():
            mosquitto_conf.write_passwd(passwd, users)
            lines.append(
                f"wrote {passwd} (gateway user {mosquitto_conf.GATEWAY_USER}, OTA user "
                f"{mosquitto_conf.OTA_USER})"
            )
        elif changed:
            mosquitto_conf.write_passwd(passwd, users)
            lines.append(
                f"wrote {passwd}: user(s) {', '.join(changed)}; {boards} board user(s) kept"
            )
        else:
            lines.append(f"kept {passwd} (gateway and OTA users, {boards} board user(s))")
