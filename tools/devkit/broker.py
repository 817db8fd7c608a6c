"""Start and stop a real Mosquitto broker on 127.0.0.1 (tests, demo, bench)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from terrapin.gateway.errors import TerrapinError


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TerrapinError(f"nothing is listening on {host}:{port} after {timeout:.0f} s")


class Mosquitto:
    """One Mosquitto process with its own config, log and persistence folder.

    The port stays the same across stop()/start(), so clients can reconnect
    to a restarted broker; persistence keeps QoS 1 sessions across restarts.
    """

    def __init__(
        self,
        workdir: str | Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        password_file: str | Path | None = None,
        acl_file: str | Path | None = None,
        persistence: bool = True,
        extra_config: str = "",
        base_config: str | Path | None = None,
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port(host)
        self.password_file = password_file
        self.acl_file = acl_file
        self.persistence = persistence
        self.extra_config = extra_config
        # A generated mosquitto.conf (listener, users, ACL, identity, persistence) to
        # run as it is, with only the test run's lines added (log, autosave, user).
        self.base_config = Path(base_config) if base_config is not None else None
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        if self.base_config is not None:
            self.config_path.write_text(self._run_config(self.base_config.read_text()))
            return
        lines = [
            f"listener {self.port} {self.host}",
            "max_inflight_messages 100",
            # Small QoS 1 packets (readings, ACKs) otherwise wait ~40 ms for Nagle.
            "set_tcp_nodelay true",
            "max_queued_messages 100000",
            # A QoS 1 reading may wait for hours while a gateway is down.
            "persistent_client_expiration 14d",
        ]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/"]
        if self.password_file:
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
        else:
            lines += ["allow_anonymous true"]
        if self.acl_file:
            lines.append(f"acl_file {self.acl_file}")
        self.config_path.write_text(self._run_config("\n".join(lines) + "\n"))

    def _run_config(self, base: str) -> str:
        """`base` plus what a test run adds: its log file, a fast autosave, the user."""
        lines = [
            base.rstrip("\n"),
            "# -- added for this run by tools/devkit/broker.py --",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:
            # As root Mosquitto drops to user `mosquitto`, which cannot reach the
            # caller's private temporary folders (pytest's are 0700).
            lines.append("user root")
        if self.persistence:
            lines.append("autosave_interval 1")
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> Mosquitto:
        exe = find_mosquitto()
        if exe is None:
            raise TerrapinError(
                "mosquitto is not installed", hint="apt-get install mosquitto (make test does this)"
            )
        self.write_config()
        self.process = subprocess.Popen(
            [exe, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(self.host, self.port, timeout)
        except TerrapinError:
            self.stop(kill=True)
            raise TerrapinError(f"mosquitto did not start: {self.log_tail()}") from None
        return self

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        if self.process and self.process.stderr and self.process.poll() is not None:
            text += self.process.stderr.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
