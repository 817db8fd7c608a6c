"""The demo's virtual boards: the real firmware, provisioned over its console, then run.

Each board is a flash folder. Provisioning is the hobbyist's path
(docs/HOBBYIST.md): `terrapin device deploy --target unix` puts the firmware
(.mpy) on the "flash", the console-only board (firmware/console_main.py) runs
behind a pseudo-terminal, and tools/board/provision.py speaks TP1 to it through
pyserial: config, `keygen` (the key is made on the board and never leaves it),
allow-list + broker credentials (written to the board only), the board's own
EIP-712 bind signature, `done`. Then the board boots its application from that
flash (`main.py --config config.json`), signs and publishes its readings, and
exits once the gateway has acknowledged all of them.

Without the micropython binary both scripts run on CPython from the checkout
(the same firmware modules), and the demo says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from terrapin.gateway.errors import TerrapinError
from terrapin.tools.devkit.virtualboard import FIRMWARE_DIR, VirtualBoard
from terrapin.tools.micropython import ESP32_HEAP, find_micropython

APP_HEAP = ESP32_HEAP


def runtime_label() -> str:
    if find_micropython():
        return f"MicroPython unix port (heap {ESP32_HEAP})"
    return "CPython (fallback: the micropython binary was not found)"


class _CPythonVirtualBoard(VirtualBoard):
    """The console board's script on CPython (no micropython binary here)."""

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(self.script), *self.args],
            stdin=self._uart_s,
            stdout=self._uart_s,
            stderr=self._uart_s,
            cwd=self.flash_dir,
            close_fds=True,
            start_new_session=True,
        )
        self.boots += 1


class DemoBoard:
    """One virtual board of the demo: its folder, console logs and app process."""

    def __init__(self, index: int, root: Path, *, period_s: float = 0.2):
        self.index = index
        self.name = f"board{index + 1}"
        self.dir = root / self.name
        self.flash = self.dir / "flash"
        self.period_s = period_s
        self.mp = find_micropython() is not None
        self.address = ""
        self.pubkey = ""
        self.owner = ""
        self.binding: dict[str, Any] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    # -- provisioning over the console ------------------------------------------------
    def provision(self, register, binding, submit) -> dict[str, Any]:
        """TP1 over a pty: config, key made on the board, registration, bind, done."""
        from terrapin.tools.board.provision import provision
        from terrapin.tools.board.serialconsole import BoardConsole, Link, open_port

        cls = VirtualBoard if self.mp else _CPythonVirtualBoard
        vb = cls(
            self.flash,
            tcp_port=None,
            log_path=self.dir / "provision-console.log",
            restart=False,
            deploy=self.mp,
        )
        config = {
            "sample_period_s": self.period_s,
            "sensors": [{"driver": "simulated", "seed": self.index + 1}],
            "ack_timeout_s": 2,
            "backoff_max_s": 2,
            "status_period_s": 5,
            "log": "debug",
        }
        vb.start()
        link = None
        try:
            link = Link(open_port(vb.pty_path))
            result = provision(
                BoardConsole(link),
                config=config,
                register=register,
                binding=binding,
                submit=submit,
                finish=True,
            )
        except TerrapinError as exc:
            raise TerrapinError(
                f"{self.name}: provisioning failed: {exc}",
                hint=f"the board's console is in {vb.log_path}",
            ) from None
        finally:
            if link is not None:
                link.close()
            vb.stop()
        self.address, self.pubkey = result.address, result.pubkey
        self.binding = result.binding
        problems = result.config_problems
        if problems:
            raise TerrapinError(f"{self.name}: the board refused its config: {problems}")
        return result.as_dict()

    # -- the application --------------------------------------------------------------
    def command(self, *args: str) -> list[str]:
        opts = ["--config", "config.json", "--flash", ".", *args]
        if self.mp:
            # Booted from its flash like a board: main.py + lib/terrapin/firmware (.mpy).
            return [
                find_micropython() or "micropython",
                "-X",
                f"heapsize={APP_HEAP}",
                "main.py",
                *opts,
            ]
        return [sys.executable, str(FIRMWARE_DIR / "main.py"), *opts]

    @property
    def log_path(self) -> Path:
        return self.dir / f"app-{self.runs}.log"

    def start(self, readings: int | None, *extra: str) -> None:
        """Boot the app; with `readings`, sign that many and exit once all are acked."""
        args = ["--stats", *extra]
        if readings is not None:
            args = ["--max-readings", str(readings), "--exit-when-drained", *args]
        self.runs += 1
        env = {**os.environ, "MICROPYPATH": ".frozen:lib"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(*args),
                cwd=self.flash,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed as one
            )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float) -> dict[str, Any]:
        """The board's TP-STATS once it exited; raises with its console tail."""
        if self.proc is None:
            raise TerrapinError(f"{self.name} was not started")
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TerrapinError(
                f"{self.name}: readings not all acknowledged after {timeout:.0f} s",
                hint=f"its console: {self.log_path}\n{self.tail()}",
            ) from None
        self.proc = None
        if code != 0:
            raise TerrapinError(
                f"{self.name} exited with code {code}", hint=f"{self.log_path}\n{self.tail()}"
            )
        return self.stats()

    def stats(self) -> dict[str, Any]:
        lines = [
            ln for ln in self.log_path.read_text(errors="replace").splitlines()
            if ln.startswith("TP-STATS ")
        ]  # fmt: skip
        if not lines:
            raise TerrapinError(f"{self.name} printed no TP-STATS line", hint=self.tail())
        return json.loads(lines[-1][len("TP-STATS ") :])

    def tail(self, n: int = 15) -> str:
        if not self.log_path.exists():
            return "(no console log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        """A clean stop (SIGTERM: the board says goodbye), then the power."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            self.proc = None
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(3)
            self.proc = None
        except subprocess.TimeoutExpired:
            self.kill()
