"""A gateway's home folder: gateway.toml, its secret, the database and the Mosquitto files.

`init_home` is what `terrapin gateway init` does; the demo and the test kit call it
directly. It returns the lines the command prints, so every caller says the same.
"""

from __future__ import annotations

from pathlib import Path

from terrapin.gateway import mosquitto_conf, secretfile
from terrapin.gateway.config import DEFAULT_PATH, load_config, render_config
from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.pgsql import redact_url
from terrapin.gateway.storebase import open_store, store_location

OTA_SECRET = "ota.secret"  # the OTA publisher's broker password, beside gateway.toml


def init_home(
    directory: str | Path,
    *,
    mqtt_port: int = 1883,
    api_port: int = 8377,
    force: bool = False,
    store_url: str = "",
) -> list[str]:
    """Write a commented config, create the database and the Mosquitto files.
    `store_url`: a postgresql:// URL to keep the readings in (docs/SCALE.md)."""
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
    (mq / "mosquitto.conf").write_text(
        mosquitto_conf.render_conf(
            port=mqtt_port, password_file=passwd, acl_file=acl, persistence_dir=mq / "data"
        )
    )
    mosquitto_conf.make_data_dir(mq / "data")
    cfg_path.write_text(
        render_config(
            {
                "mqtt": {"port": mqtt_port, "password_file": "gateway.secret"},
                "broker": {"password_file": "mosquitto/passwd", "acl_file": "mosquitto/acl"},
                "store": {"path": db, "url": store_url} if store_url else {"path": db},
                "api": {"port": api_port},
            }
        )
    )
    cfg = load_config(cfg_path)
    open_store(store_location(cfg)).close()
    return [
        f"wrote {cfg_path}",
        f"wrote {d}/gateway.secret, {OTA_SECRET} (broker passwords, mode 0600)",
        f"wrote {mq}/mosquitto.conf, passwd, acl (gateway user {mosquitto_conf.GATEWAY_USER}, "
        f"OTA user {mosquitto_conf.OTA_USER})",
        f"created {redact_url(store_url) if store_url else cfg.store.path}",
        f"next: mosquitto -c {mq}/mosquitto.conf  (or see docs/GATEWAY.md for Debian)",
        f"      terrapin gateway device add ADDRESS --config {cfg_path}",
        f"      terrapin gateway run --config {cfg_path}",
    ]
