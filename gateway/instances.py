"""`terrapin gateway instance add NAME`: one more gateway instance beside this one.

Each instance is its own `terrapin gateway run` with its own broker user (the
broker binds a client id to its user name, so one user is one session: an
instance can never take over another's), its own secret and status API port,
and the same PostgreSQL store and MQTT share group as the others. The new user
gets the gateway user's ACL rights (read every reading and status, write every
ack). Writes gateway-NAME.toml and gateway-NAME.secret beside gateway.toml.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from terrapin.gateway import mosquitto_conf, secretfile
from terrapin.gateway.config import SCHEMA, _toml_value, load_config, render_config
from terrapin.gateway.errors import TerrapinError

DEFAULT_GROUP = "terrapin"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")


def instance_user(name: str) -> str:
    return f"{mosquitto_conf.GATEWAY_USER}-{name}"


def render_instance_acl(user: str) -> str:
    """The gateway user's rights for one more instance user (appended to the ACL)."""
    return (
        f"\n# Gateway instance {user} (terrapin gateway instance add): the gateway's rights.\n"
        f"user {user}\n"
        "topic read terrapin/v1/+/reading\n"
        "topic read terrapin/v1/+/status\n"
        "topic write terrapin/v1/+/ack\n"
    )


def add_instance(
    config_path: str | Path, name: str, *, api_port: int, share_group: str = ""
) -> tuple[Path, list[str]]:
    """Create instance `name` of the gateway configured at `config_path`; returns its
    config path and the lines the command prints."""
    if not _NAME.match(name):
        raise TerrapinError(
            f"instance name {name!r}: use 1-31 lowercase letters, digits and -, e.g. pi-2"
        )
    base_path = Path(config_path).resolve()
    cfg = load_config(base_path)
    if not cfg.store.url:
        raise TerrapinError(
            "several instances need a shared PostgreSQL store; this gateway uses SQLite",
            hint="terrapin gateway migrate --to postgresql://... (docs/SCALE.md)",
        )
    group = share_group or cfg.mqtt.share_group or DEFAULT_GROUP
    here = base_path.parent
    out = here / f"gateway-{name}.toml"
    if out.exists():
        raise TerrapinError(f"{out} exists: instance {name!r} was added before")
    if not cfg.broker.password_file or not cfg.broker.acl_file:
        raise TerrapinError("[broker] password_file and acl_file are needed to add a broker user")
    user = instance_user(name)
    password = mosquitto_conf.random_password()
    secret = here / f"gateway-{name}.secret"
    secretfile.write_secret(secret, password + "\n")
    mosquitto_conf.set_user(cfg.broker.password_file, user, password)
    acl = Path(cfg.broker.acl_file)
    if f"\nuser {user}\n" not in acl.read_text():
        with acl.open("a") as f:
            f.write(render_instance_acl(user))
    raw: dict[str, Any] = tomllib.loads(base_path.read_text())
    ours = {k: dict(v) for k, v in raw.items() if k in SCHEMA}
    ours.setdefault("mqtt", {}).update(
        username=user, client_id=user, password_file=secret.name, share_group=group
    )
    ours.setdefault("api", {})["port"] = api_port
    text = render_config(ours)
    for section, values in raw.items():  # the chain's and rewards' sections, as they are
        if section not in SCHEMA and isinstance(values, dict):
            text += f"\n[{section}]\n"
            text += "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items())
    out.write_text(text)
    load_config(out)  # what we wrote must load
    lines = [
        f"wrote {out} (broker user {user}, share group {group!r}, status API port {api_port})",
        f"wrote {secret} (its broker password, mode 0600); added {user} to the password file"
        " and the ACL",
        "next: reload Mosquitto (systemctl reload mosquitto) so that it knows the new user",
    ]
    if cfg.mqtt.share_group != group:
        lines.append(
            f'      and set [mqtt] share_group = "{group}" in {base_path} too, else that'
            " instance gets every reading besides the group"
        )
    lines.append(f"      terrapin gateway run --config {out}")
    return out, lines
