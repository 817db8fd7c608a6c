"""The bench's real parts: a gateway home, its Mosquitto, the gateway process, the chain.

Everything runs as it would on a Raspberry Pi: `terrapin gateway init` writes
the config, the Mosquitto files (passwords + ACL) and the database; Mosquitto
runs with those files; the gateway is the real `terrapin gateway run` process
(its own DB, the chain stages inside it); boards get broker credentials from
`terrapin gateway device add`. Only ports and folders differ (free ports on
127.0.0.1, one folder per test).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from click.testing import CliRunner

from terrapin.tools.broker import Mosquitto, free_port

REPO = Path(__file__).resolve().parent.parent
GATEWAY_RUN = (sys.executable, "-m", "terrapin.tools.cli", "gateway", "run")
CHAIN_STAGES = '["terrapin.gateway.chain.stage:batcher", "terrapin.gateway.chain.stage:anchorer"]'


def gateway_cli(*args: str) -> str:
    """Run `terrapin gateway ARGS` in process; returns its output."""
    from terrapin.gateway.cli import gateway

    result = CliRunner().invoke(gateway, list(args), catch_exceptions=False)
    if result.exit_code != 0:
        raise RuntimeError(f"terrapin gateway {' '.join(args)} failed:\n{result.output}")
    return result.output


class GatewayHome:
    """A folder made by `terrapin gateway init`, with the chain stages switched on."""

    def __init__(self, root: Path, chain: dict[str, object]):
        self.dir = root
        self.mqtt_port, self.api_port = free_port(), free_port()
        gateway_cli(
            "init",
            "--dir",
            str(root),
            "--mqtt-port",
            str(self.mqtt_port),
            "--api-port",
            str(self.api_port),
        )
        self.config_path = root / "gateway.toml"
        text = self.config_path.read_text()
        if "stages = []" not in text:
            raise RuntimeError("gateway.toml from `gateway init` has no `stages = []` to replace")
        text = text.replace("stages = []", f"stages = {CHAIN_STAGES}", 1)
        text += "\n[chain]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in chain.items())
        self.config_path.write_text(text)
        self.db_path = root / "gateway.db"

    def add_board(self, address: str, pubkey: str, password: str) -> None:
        gateway_cli(
            "device",
            "add",
            address,
            "--pubkey",
            pubkey,
            "--password",
            password,
            "--json",
            "--config",
            str(self.config_path),
        )


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def start_broker(home: GatewayHome) -> Mosquitto:
    """Mosquitto with the password file and ACL `gateway init` wrote; persistence on."""
    mq = home.dir / "mosquitto"
    return Mosquitto(
        mq / "run",
        port=home.mqtt_port,
        password_file=mq / "passwd",
        acl_file=mq / "acl",
        persistence=True,
    ).start()


def reload_broker(broker: Mosquitto) -> None:
    """SIGHUP: Mosquitto re-reads the password file (a board was added)."""
    if broker.process is not None:
        broker.process.send_signal(signal.SIGHUP)
        time.sleep(0.2)


class GatewayProcess:
    """`terrapin gateway run --config ...` as a child process (kill -9 is real)."""

    def __init__(self, home: GatewayHome, env: dict[str, str] | None = None):
        self.home = home
        self.env = {**os.environ, **(env or {})}
        self.log_path = home.dir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.home.api_port}/api/status"

    def start(self, wait: bool = True) -> GatewayProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*GATEWAY_RUN, "--config", str(self.home.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.home.dir,
            )
        self.starts += 1
        if wait:
            self.wait_ready()
        return self

    def status(self) -> dict:
        with urllib.request.urlopen(self.url, timeout=3) as resp:
            return json.loads(resp.read())

    def wait_ready(self, timeout: float = 60.0) -> dict:
        """Until the gateway's API says it is connected to the broker."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise AssertionError(f"the gateway exited:\n{self.log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                st = self.status()
                if st.get("connected"):
                    time.sleep(0.2)  # its SUBACK
                    return st
            time.sleep(0.1)
        raise AssertionError(f"the gateway did not connect in {timeout:.0f} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """kill -9: no goodbye, no last transaction, no clean disconnect."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no gateway log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


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
