"""Mosquitto files for a gateway: listener config, password file and ACL.

Password file lines are `user:$7$<iterations>$<salt b64>$<PBKDF2-SHA512 b64>`,
exactly what mosquitto_passwd 2.0 writes (12-byte salt, 101 iterations). The
ACL gives every board, whose user name is its address in hex, write access to
its own reading and status topics and read access to its own ack topic (one
`pattern` line each, so adding a board only touches the password file); the
gateway user reads every reading and status and writes every ack. For
firmware updates over MQTT a board reads its own `ota` offer and `ota/chunk`
topics and writes its own `ota/get`; the OTA user (whose credentials
`terrapin device ota publish` uses, never the gateway's) writes every offer and
chunk and reads every `ota/get` and status.

Identity: the listener sets `use_username_as_clientid`, so Mosquitto replaces
whatever client id a client sends with its user name. One user is one session:
a board's credentials can only ever take over that board's own connection,
never the gateway's or another board's (docs/GATEWAY.md, "Broker identity").

Quarantine: the config loads Mosquitto's dynamic security plugin with a state
file that starts empty and every default access off, so it defers to the
password file and ACL for every client; the gateway user may write its
control topic and disables a flooding board there (gateway/quarantine.py).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import glob
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from terrapin.gateway import secretfile

GATEWAY_USER = "terrapin-gateway"
OTA_USER = "terrapin-ota"  # `device ota publish`: its own user, so its own session
HA_USER = "homeassistant"  # Home Assistant's MQTT integration, read-mostly
ITERATIONS = 101
# Mosquitto's dynamic security plugin (Debian's mosquitto package ships it) and its
# state file in the persistence folder: the broker quarantine (gateway/quarantine.py).
DYNSEC_PLUGIN_GLOB = "/usr/lib/*/mosquitto_dynamic_security.so"
DYNSEC_FILE = "dynamic-security.json"
SALT_BYTES = 12


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, hashed: str) -> bool:
    try:
        _, kind, iterations, salt, digest = hashed.split("$")
        if kind != "7":
            return False
        got = hashlib.pbkdf2_hmac(
            "sha512", password.encode(), base64.b64decode(salt), int(iterations)
        )
        return hmac.compare_digest(got, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


def random_password() -> str:
    return secrets.token_urlsafe(18)


def read_passwd(path: str | Path) -> dict[str, str]:
    p = Path(path)
    users: dict[str, str] = {}
    if not p.exists():
        return users
    for line in p.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and ":" in line:
            user, hashed = line.split(":", 1)
            users[user] = hashed
    return users


def write_passwd(path: str | Path, users: dict[str, str]) -> None:
    """Atomically; mode 0640 and, when run as root, group `mosquitto` (so the
    broker, which drops to that user, can read it). The new file is 0600 from
    the moment it exists; only then is it opened to the broker's group."""
    p = Path(path)
    text = "".join(f"{u}:{h}\n" for u, h in sorted(users.items()))
    secretfile.write_secret(p, text, group=broker_group())


def broker_group() -> int | None:
    """The `mosquitto` group's id when run as root (the files are chowned to it), else None."""
    if os.geteuid() != 0:
        return None
    try:
        import grp

        return grp.getgrnam("mosquitto").gr_gid
    except KeyError:
        return None


def broker_user() -> tuple[int, int] | None:
    """(uid, gid) Mosquitto drops to when started as root without a `user` line:
    `mosquitto`, else `nobody` (mosquitto.conf(5)); None when not run as root."""
    if os.geteuid() != 0:
        return None
    import pwd

    for name in ("mosquitto", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    return None


def make_data_dir(path: str | Path) -> None:
    """The persistence folder, writable by the user the broker drops to (else every
    autosave fails with Permission denied and a restart loses queued readings)."""
    p = Path(path)
    p.mkdir(mode=0o700, exist_ok=True)
    dynsec = p / DYNSEC_FILE
    if not dynsec.exists():  # the broker rewrites it (quarantines) and must keep them
        secretfile.write_secret(dynsec, render_dynsec())
    owner = broker_user()
    if owner is not None:
        os.chown(p, *owner)
        for f in p.iterdir():  # a mosquitto.db saved earlier by another user
            os.chown(f, *owner)
    os.chmod(p, 0o700)


@contextlib.contextmanager
def passwd_locked(path: str | Path) -> Iterator[None]:
    """Hold the password file's lock (`.<name>.lock` beside it) around a
    read-modify-write, so that two `device add`/`remove` at once lose no user."""
    p = Path(path)
    lock = p.with_name(f".{p.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits for the other writer; released by close
        yield
    finally:
        os.close(fd)


def find_dynsec_plugin() -> str | None:
    """The dynamic security plugin's path (per architecture on Debian), or None."""
    found = sorted(glob.glob(DYNSEC_PLUGIN_GLOB))
    return found[0] if found else None


def render_dynsec() -> str:
    """The plugin's starting state: no clients, no roles, and every default access
    off, so that for any client it has no entry for (or no role for) it defers to
    the password file and the ACL. It only ever holds quarantined boards."""
    return json.dumps(
        {
            "defaultACLAccess": {
                "publishClientSend": False,
                "publishClientReceive": False,
                "subscribe": False,
                "unsubscribe": False,
            },
            "clients": [],
            "groups": [],
            "roles": [],
        },
        indent=1,
    )


def set_user(path: str | Path, user: str, password: str) -> None:
    """Add or replace one user (like `mosquitto_passwd -b`)."""
    if not user or ":" in user or any(c in user for c in "\n\r"):
        raise ValueError(f"bad broker user name {user!r}")
    hashed = hash_password(password)
    with passwd_locked(path):
        users = read_passwd(path)
        users[user] = hashed
        write_passwd(path, users)


def remove_user(path: str | Path, user: str) -> bool:
    with passwd_locked(path):
        users = read_passwd(path)
        if users.pop(user, None) is None:
            return False
        write_passwd(path, users)
        return True


def render_acl(gateway_user: str = GATEWAY_USER, ota_user: str = OTA_USER) -> str:
    return (
        "# Terrapin broker ACL (generated by `terrapin gateway init`).\n"
        "# Boards: the user name is the board address (40 hex chars); each may write\n"
        "# only its own reading/status topics and read only its own ack topic.\n"
        "pattern write terrapin/v1/%u/reading\n"
        "pattern write terrapin/v1/%u/status\n"
        "pattern read terrapin/v1/%u/ack\n"
        "# Firmware updates over MQTT (docs/PROTOCOL.md): a board reads its own offer and\n"
        "# chunks and asks for chunks; only the OTA user offers and serves them.\n"
        "pattern read terrapin/v1/%u/ota\n"
        "pattern read terrapin/v1/%u/ota/chunk\n"
        "pattern write terrapin/v1/%u/ota/get\n"
        "# One gateway per broker user (gateway/presence.py): its retained presence message.\n"
        "pattern readwrite terrapin/gateway/%u/presence\n"
        "\n"
        "# The gateway reads every board's readings and status and writes every ack.\n"
        f"user {gateway_user}\n"
        "topic read terrapin/v1/+/reading\n"
        "topic read terrapin/v1/+/status\n"
        "topic write terrapin/v1/+/ack\n"
        "# Home Assistant ([homeassistant] in gateway.toml): discovery configs and values.\n"
        "topic write homeassistant/#\n"
        "topic write terrapin/values/#\n"
        "# Broker quarantine of a flooding board (docs/GATEWAY.md): the dynamic security\n"
        "# plugin's commands and answers. This makes the gateway user a broker admin.\n"
        "topic write $CONTROL/dynamic-security/v1\n"
        "topic read $CONTROL/dynamic-security/v1/response\n"
        "\n"
        "# `terrapin device ota publish`: offers and chunks out, requests and status in.\n"
        f"user {ota_user}\n"
        "topic write terrapin/v1/+/ota\n"
        "topic write terrapin/v1/+/ota/chunk\n"
        "topic read terrapin/v1/+/ota/get\n"
        "topic read terrapin/v1/+/status\n"
        "\n"
        "# Home Assistant's own broker user (add it with mosquitto_passwd): discovery,\n"
        "# its birth message, the values and the boards' status (availability).\n"
        f"user {HA_USER}\n"
        "topic readwrite homeassistant/#\n"
        "topic read terrapin/values/#\n"
        "topic read terrapin/v1/+/status\n"
    )


def render_conf(
    *,
    port: int = 1883,
    host: str = "127.0.0.1",
    password_file: str | Path,
    acl_file: str | Path,
    persistence_dir: str | Path | None = "/var/lib/mosquitto/",
    dynsec_plugin: str | None = "auto",
) -> str:
    """A Mosquitto 2.0 config (a complete file, or a conf.d snippet)."""
    lines = [
        "# Terrapin Mosquitto listener (generated by `terrapin gateway init`).",
        "# On Debian: copy to /etc/mosquitto/conf.d/terrapin.conf and restart mosquitto.",
        "per_listener_settings false",
        f"listener {port} {host}",
        "# A client's id is its user name, whatever it sends: a board's credentials can",
        "# never take over the gateway's session or another board's (docs/GATEWAY.md).",
        "use_username_as_clientid true",
        "allow_anonymous false",
        f"password_file {password_file}",
        f"acl_file {acl_file}",
        "# Readings are <= 1 KiB; refuse anything much larger at the broker.",
        "max_packet_size 4096",
        "# Keep QoS 1 readings for a gateway that is down for a while.",
        "max_queued_messages 200000",
        "# QoS 1 messages in flight to one client (the gateway acks after each commit).",
        "max_inflight_messages 1000",
        "# Small packets (ACKs, PUBACKs) go out at once instead of waiting ~40 ms (Nagle).",
        "set_tcp_nodelay true",
        "persistent_client_expiration 14d",
    ]
    if persistence_dir is not None:
        lines += [
            "persistence true",
            f"persistence_location {str(persistence_dir).rstrip('/')}/",
            "autosave_interval 60",
        ]
        plugin = find_dynsec_plugin() if dynsec_plugin == "auto" else dynsec_plugin
        if plugin:
            lines += [
                "# Broker quarantine of a flooding board (docs/GATEWAY.md): the gateway",
                "# disables its client here; the password file and ACL decide all else.",
                f"plugin {plugin}",
                f"plugin_opt_config_file {str(persistence_dir).rstrip('/')}/{DYNSEC_FILE}",
            ]
    return "\n".join(lines) + "\n"
