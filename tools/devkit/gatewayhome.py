"""The one test gateway's home: a gateway folder, its Mosquitto, the gateway process.

Used by the gateway tests, the HIL bench and `terrapin sim` alike.

Everything runs as it would on a Raspberry Pi: the code of `terrapin gateway
init` (gateway.home.init_home) writes the config, the Mosquitto files
(passwords + ACL) and the database; Mosquitto runs with those files; the
gateway is the real `terrapin gateway run` process (its own DB, the chain
stages inside it when asked), or the same Gateway in a thread of the test
(gatewayproc.GatewayThread); boards get broker credentials from the code of
`terrapin gateway device add` (gateway.allowlist.add_board). Only ports and
folders differ (free ports on 127.0.0.1, one folder per test).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from terrapin.gateway.allowlist import add_board, parse_address, parse_pubkey
from terrapin.gateway.config import GatewayConfig, load_config
from terrapin.gateway.home import init_home
from terrapin.tools.devkit.broker import Mosquitto, free_port
from terrapin.tools.devkit.gatewayproc import RUN_COMMAND
from terrapin.tools.devkit.gatewayproc import (
    GatewayProcess as GatewayProcess,
)  # re-export: conftest, sim

REPO = Path(__file__).resolve().parents[2]
GATEWAY_RUN = RUN_COMMAND
CHAIN_STAGES = '["batch", "anchor"]'


class GatewayHome:
    """A folder made by `terrapin gateway init`; with `chain`, the chain stages switched
    on and that [chain] section (chain_section())."""

    def __init__(self, root: Path, chain: dict[str, object] | None = None):
        self.dir = root
        self.mqtt_port, self.api_port = free_port(), free_port()
        init_home(root, mqtt_port=self.mqtt_port, api_port=self.api_port)
        self.config_path = root / "gateway.toml"
        self.db_path = root / "gateway.db"
        if chain is None:
            return
        text = self.config_path.read_text()
        if "stages = []" not in text:
            raise RuntimeError("gateway.toml from `gateway init` has no `stages = []` to replace")
        text = text.replace("stages = []", f"stages = {CHAIN_STAGES}", 1)
        text += "\n[chain]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in chain.items())
        self.config_path.write_text(text)

    @property
    def config(self) -> GatewayConfig:
        return load_config(self.config_path)

    def gateway_password(self) -> str:
        return (self.dir / "gateway.secret").read_text().strip()

    def add_board(
        self, address: str, pubkey: str | None = None, password: str | None = None
    ) -> str:
        """`terrapin gateway device add`: allow-list a board; returns its broker password.
        A board already allowed gets `password` (the kit writes it into the board's config
        itself, so replacing it is what a second add here means)."""
        addr = parse_address(address)
        pub = parse_pubkey(pubkey, addr) if pubkey else None
        return add_board(self.config_path, addr, pub, password=password, rotate=True).password

    def add_sim_board(self, key: bytes | None = None) -> tuple[bytes, str]:
        """Allow a simulated board (a new key, or `key`); returns (key, broker password)."""
        from terrapin.tools.devkit.simboard import board_address, new_key

        key = key or new_key()
        return key, self.add_board(board_address(key).hex())


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def start_broker(home: GatewayHome, extra_config: str = "") -> Mosquitto:
    """Mosquitto run from the mosquitto.conf `gateway init` wrote (its listener, password
    file, ACL, client-id rule and persistence folder), plus the test run's log file."""
    mq = home.dir / "mosquitto"
    return Mosquitto(
        mq / "run",
        port=home.mqtt_port,
        base_config=mq / "mosquitto.conf",
        extra_config=extra_config,
    ).start()


def reload_broker(broker: Mosquitto) -> None:
    """SIGHUP: Mosquitto re-reads the password file (a board was added)."""
    if broker.process is not None:
        broker.process.send_signal(signal.SIGHUP)
        time.sleep(0.3)


def chain_section(network: str = "embedded", **extra: object) -> dict[str, object]:
    """The [chain] section for a bench gateway: small, fast batches."""
    section: dict[str, object] = {
        "network": network,
        "batch_size": 200,
        "batch_seconds": 0.5,
        "poll_seconds": 0.2,
        "confirmations": 1,
    }
    section.update(extra)
    return section
