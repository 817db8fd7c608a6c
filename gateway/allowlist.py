"""The gateway's allow-list of boards and their broker users.

A board's broker user name is its address in hex (and, by the generated
Mosquitto config, its client id); its password is made here (or given), set in
the Mosquitto password file named by [broker] password_file, and only its hash
is kept. Adding a board that is already allowed never replaces its password
unless asked (`rotate`). Used by `terrapin gateway device ...` (tools/cli/
gateway_device.py) and by provisioning (tools/board/provision.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from terrapin.gateway import mosquitto_conf, storebase
from terrapin.gateway.config import GatewayConfig, load_config
from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.protocol.signature import address as pub_address
from terrapin.gateway.store import Store


def parse_address(text: str) -> bytes:
    """A board address from 40 hex characters, with or without 0x."""
    t = text.strip().lower()
    t = t[2:] if t.startswith("0x") else t
    try:
        raw = bytes.fromhex(t)
    except ValueError:
        raw = b""
    if len(raw) != 20:
        raise TerrapinError(
            f"{text!r} is not a board address", hint="give 40 hex characters, with or without 0x"
        )
    return raw


def parse_pubkey(text: str, addr: bytes) -> bytes:
    """The board's public key (130 hex characters, 04...), checked against its address."""
    try:
        pub = bytes.fromhex(text.lower().removeprefix("0x"))
        ok = pub_address(pub) == addr
    except ValueError:
        ok = False
    if not ok:
        raise TerrapinError("--pubkey does not belong to ADDRESS", hint="check both values")
    return pub


def open_store(config_path) -> tuple[GatewayConfig, Store]:
    """The gateway config and its store (the caller closes the store)."""
    cfg = load_config(config_path)
    # The SQLite file, or PostgreSQL when [store] url is set (docs/SCALE.md).
    location = storebase.store_location(cfg)
    return cfg, storebase.open_store(location, replay_window=cfg.policy.replay_window)  # type: ignore[return-value]


def reload_hint(cfg: GatewayConfig) -> str:
    return (
        "reload Mosquitto so it reads the password file: `systemctl reload mosquitto` "
        "(or send it SIGHUP); the gateway picks up the allow-list within 5 s"
        if cfg.broker.password_file
        else "no [broker] password_file in the config: add the board's user to Mosquitto yourself"
    )


@dataclass
class Added:
    cfg: GatewayConfig
    new: bool  # False: the board was already allowed (and rotate was asked for)
    password: str  # the broker password, shown once
    broker_user: bool  # True: its user is in [broker] password_file


def add_board(
    config_path,
    addr: bytes,
    pub: bytes | None,
    label: str = "",
    password: str | None = None,
    *,
    rotate: bool = False,
) -> Added:
    """Allow `addr` and create its broker user. A board already allowed keeps its
    password (a live board would be locked out) unless `rotate` is asked for."""
    cfg, store = open_store(config_path)
    try:
        if addr in store.device_addresses() and not rotate:
            raise TerrapinError(
                f"{addr.hex()} is already allowed; its broker password is unchanged",
                hint="--rotate-password gives it a new one (the board needs it too)",
            )
        new = store.add_device(addr, pub, label)
    finally:
        store.close()
    password = password or mosquitto_conf.random_password()
    if cfg.broker.password_file:
        mosquitto_conf.set_user(cfg.broker.password_file, addr.hex(), password)
    return Added(cfg, new, password, bool(cfg.broker.password_file))


def remove_board(config_path, addr: bytes) -> GatewayConfig:
    """Stop accepting `addr` and delete its broker user (its readings stay)."""
    cfg, store = open_store(config_path)
    try:
        removed = store.remove_device(addr)
    finally:
        store.close()
    if cfg.broker.password_file:
        mosquitto_conf.remove_user(cfg.broker.password_file, addr.hex())
    if not removed:
        raise TerrapinError(f"{addr.hex()} is not on the allow-list", hint="see `device list`")
    return cfg
