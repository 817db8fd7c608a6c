"""The demo's network: a gateway home, Mosquitto with its passwords and ACL, the gateway.

The gateway home is what `terrapin gateway init` writes on a Raspberry Pi
(config, Mosquitto password file with `$7$` hashes, ACL, SQLite database);
only the ports (free ones on 127.0.0.1) and the folder differ. Mosquitto runs
with authentication on and that ACL: it is the broker operators run beside
the gateway, so the demo exercises the same password file, ACL and QoS 1
session behaviour as a real installation (an embedded Python broker would
not). The gateway runs in this process (devkit's GatewayThread: `Gateway(config)
.run(shutdown)` in a thread, `[pipeline] workers = 0`) so that its
status API and counters sit next to the embedded chain.

The injected test: an extra identity made by the demo (a host key, labelled
as the demo's own test, never a board) gets broker credentials and publishes
two bad envelopes the gateway must reject with a reason code.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

from terrapin.gateway.errors import TerrapinError
from terrapin.tools.devkit.broker import Mosquitto, find_mosquitto, free_port
from terrapin.tools.devkit.gatewayproc import GatewayProcessError, GatewayThread

MOSQUITTO_HINT = (
    "the demo runs the broker gateway operators run: sudo apt-get install mosquitto "
    "(make demo installs it when run as root or with sudo)"
)
INJECTED_LABEL = "demo-injected-test"


def require_mosquitto() -> str:
    exe = find_mosquitto()
    if exe is None:
        raise TerrapinError("mosquitto is not installed", hint=MOSQUITTO_HINT)
    return exe


class Network:
    """Gateway home + Mosquitto + the in-process gateway; `stop()` undoes everything."""

    def __init__(self, root: Path):
        self.root = root
        self.home = root / "gateway"
        self.mqtt_port, self.api_port = free_port(), free_port()
        self.config_path = self.home / "gateway.toml"
        self.broker: Mosquitto | None = None
        self.cfg: Any = None
        self.running: GatewayThread | None = None

    @property
    def db_path(self) -> Path:
        return Path(self.cfg.store.path)

    @property
    def status_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/api/status"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/"

    def init_home(self) -> None:
        from terrapin.gateway.config import load_config
        from terrapin.gateway.home import init_home

        init_home(self.home, mqtt_port=self.mqtt_port, api_port=self.api_port)
        text = self.config_path.read_text()
        if "workers = 2" in text:
            text = text.replace("workers = 2", "workers = 0", 1)
        self.config_path.write_text(text)
        self.cfg = load_config(self.config_path)

    def add_chain_section(self, section: dict[str, Any]) -> None:
        """Record where the demo anchors (for `terrapin proof/rewards --config` later)."""
        from terrapin.gateway.config import load_config

        text = "\n# written by terrapin demo: the chain it anchors to\n[chain]\n"
        for key in ("network", "key_env", "registry", "anchor"):
            if key in section:
                text += f'{key} = "{section[key]}"\n'
        with open(self.config_path, "a") as f:
            f.write(text)
        self.cfg = load_config(self.config_path)

    def start_broker(self) -> None:
        mq = self.home / "mosquitto"
        # The mosquitto.conf `gateway init` wrote: its users, ACL and client-id rule.
        self.broker = Mosquitto(
            mq / "run", port=self.mqtt_port, base_config=mq / "mosquitto.conf"
        ).start()

    @property
    def gateway(self) -> Any:
        return self.running.gateway if self.running is not None else None

    def start_gateway(self, timeout: float = 20.0) -> None:
        try:
            self.running = GatewayThread(self.cfg, workers=None).start(timeout)
        except GatewayProcessError:
            raise TerrapinError(
                "the gateway did not connect to Mosquitto",
                hint=f"see {self.root / 'demo.log'} and {self.root / 'gateway'} (mosquitto.log)",
            ) from None

    def check_alive(self) -> None:
        running = self.running
        if running is not None and (running.error is not None or not running.thread.is_alive()):
            raise TerrapinError(f"the gateway stopped: {running.error!r}")

    def reload(self) -> None:
        """New boards: Mosquitto re-reads its password file, the gateway its allow-list."""
        if self.broker is not None and self.broker.process is not None:
            self.broker.process.send_signal(signal.SIGHUP)
        if self.gateway is not None:
            self.gateway.request_reload()
        time.sleep(0.3)

    def register(self, label: str = ""):
        """tools.provision's register(addr, pub): allow-list + broker user (credentials go
        to the board's config, never to the terminal)."""
        from terrapin.tools.board.provision import register_with_gateway

        return register_with_gateway(str(self.config_path), label)

    def snapshot(self) -> dict[str, Any]:
        return self.gateway.snapshot()

    def wait_counts(self, stored: int, rejected: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            counts = self.snapshot()["counts"]
            if counts["stored"] >= stored and counts["rejected_total"] >= rejected:
                return counts
            if time.monotonic() > deadline:
                raise TerrapinError(
                    f"the gateway stored {counts['stored']} of {stored} readings and rejected "
                    f"{counts['rejected_total']} of {rejected} injected envelopes",
                    hint=f"see {self.root / 'demo.log'}",
                )
            time.sleep(0.1)

    def stop(self) -> None:
        if self.running is not None:
            self.running.shutdown.set()
            self.running.thread.join(20)
        if self.broker is not None:
            self.broker.stop()


def log_to_file(path: Path) -> logging.Handler:
    """The gateway's and the chain stages' log lines go to the demo's log file."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("terrapin")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handler


def unlog(handler: logging.Handler) -> None:
    logger = logging.getLogger("terrapin")
    logger.removeHandler(handler)
    logger.propagate = True
    handler.close()


# -- the demo's own injected test -------------------------------------------------------


def inject_bad_envelopes(net: Network, stolen: bytes) -> list[dict[str, str]]:
    """Publish two envelopes the gateway must reject, from a test identity (not a board):
    a forged one (payload changed after signing: BAD_SIGNATURE) and a real board's stored
    envelope replayed under the test identity's own topic (TOPIC_MISMATCH)."""
    from terrapin.firmware import cose, secp256k1
    from terrapin.gateway.protocol.envelope import assemble, decode_envelope
    from terrapin.gateway.protocol.topics import reading_topic

    priv = secp256k1.generate_private_key()
    pub = secp256k1.public_key(priv)
    kid = cose.address(pub)
    creds = net.register(INJECTED_LABEL)(kid.hex(), pub.hex())["config"]["broker"]
    net.reload()
    now = int(time.time())
    signed = cose.sign1(priv, kid, cose.encode_payload(1, now, [("temperature", "Cel", 21.5)]))
    env = decode_envelope(signed)
    forged = assemble(
        env.kid, cose.encode_payload(1, now, [("temperature", "Cel", 99.5)]), env.signature
    )
    sent = [
        {
            "what": "forged: a reading's value changed after it was signed",
            "expect": "BAD_SIGNATURE",
        },
        {
            "what": "replayed: a real board's stored envelope published under another identity",
            "expect": "TOPIC_MISMATCH",
        },
    ]
    topic = reading_topic(kid)
    client = _connect_injector(net, "tp-" + kid.hex(), creds)
    try:
        for payload in (forged, stolen):
            info = client.publish(topic, payload, qos=1)
            info.wait_for_publish(10)
            if not info.is_published():
                raise TerrapinError("the injected test envelope was not accepted by Mosquitto")
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()
        client.loop_stop()
    for entry in sent:
        entry["identity"] = "0x" + kid.hex()
    return sent


def _connect_injector(net: Network, client_id: str, creds: dict[str, Any]):
    """A paho client logged in with the test identity's broker user; Mosquitto may need
    a moment (and another SIGHUP) before it knows the new password."""
    import paho.mqtt.client as mqtt

    for _attempt in range(5):
        connected = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        client.username_pw_set(creds["user"], creds["password"])
        client.on_connect = lambda c, u, f, rc, p=None, ev=connected: (
            ev.set() if not rc.is_failure else None
        )
        client.connect(creds["host"], creds["port"], keepalive=10)
        client.loop_start()
        if connected.wait(3):
            return client
        with contextlib.suppress(Exception):
            client.disconnect()
        client.loop_stop()
        net.reload()
    raise TerrapinError("Mosquitto refused the injected test's broker user")
