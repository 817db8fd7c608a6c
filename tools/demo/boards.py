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

from pathlib import Path
from typing import Any

from terrapin.gateway.errors import TerrapinError
from terrapin.tools.devkit import appboard
from terrapin.tools.devkit.virtualboard import FIRMWARE_DIR, VirtualBoard, VirtualBoardError
from terrapin.tools.micropython import ESP32_HEAP, find_micropython

APP_HEAP = ESP32_HEAP


def runtime_label() -> str:
    if find_micropython():
        return f"MicroPython unix port (heap {ESP32_HEAP})"
    return "CPython (fallback: the micropython binary was not found)"


class DemoBoard:
    """One board of the demo: its folder, provisioned over its console, then its app
    run from its flash (both tools/devkit's VirtualBoard)."""

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
        # Booted from its flash like a board: main.py + lib/terrapin/firmware (.mpy);
        # on CPython, the checkout's firmware/main.py on the same flash folder.
        self.app = VirtualBoard(
            self.flash,
            script="main.py" if self.mp else FIRMWARE_DIR / "main.py",
            args=("--config", "config.json", "--flash", "."),
            heapsize=APP_HEAP,
            deploy=False,
            serial=False,
            log_dir=self.dir,
            log_prefix="app",
            cpython=not self.mp,
        )

    # -- provisioning over the console ------------------------------------------------
    def provision(self, register, binding, submit) -> dict[str, Any]:
        """TP1 over a pty: config, key made on the board, registration, bind, done."""
        from terrapin.tools.board.provision import provision
        from terrapin.tools.board.serialconsole import BoardConsole, Link, open_port

        vb = VirtualBoard(
            self.flash,
            tcp_port=None,
            log_path=self.dir / "provision-console.log",
            restart=False,
            deploy=self.mp,
            cpython=not self.mp,
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
    @property
    def log_path(self) -> Path:
        return self.app.boot_log(self.app.boots)

    def start(self, readings: int | None, *extra: str) -> None:
        """Boot the app; with `readings`, sign that many and exit once all are acked."""
        args = ["--stats", *extra]
        if readings is not None:
            args = ["--max-readings", str(readings), "--exit-when-drained", *args]
        self.app.start(*args)

    def running(self) -> bool:
        return self.app.running()

    def wait(self, timeout: float) -> dict[str, Any]:
        """The board's TP-STATS once it exited; raises with its console tail."""
        if self.app.proc is None:
            raise TerrapinError(f"{self.name} was not started")
        try:
            code = self.app.wait_exit(timeout)
        except VirtualBoardError:
            self.kill()
            raise TerrapinError(
                f"{self.name}: readings not all acknowledged after {timeout:.0f} s",
                hint=f"its console: {self.log_path}\n{self.tail()}",
            ) from None
        if code != 0:
            raise TerrapinError(
                f"{self.name} exited with code {code}", hint=f"{self.log_path}\n{self.tail()}"
            )
        return self.stats()

    def stats(self) -> dict[str, Any]:
        try:
            return appboard.last_stats(self.app.console(all_boots=False), self.name)
        except appboard.AppConsoleError:
            raise TerrapinError(f"{self.name} printed no TP-STATS line", hint=self.tail()) from None

    def tail(self, n: int = 15) -> str:
        if not self.log_path.exists():
            return "(no console log)"
        return "\n".join(self.app.console(all_boots=False).splitlines()[-n:])

    def kill(self) -> None:
        self.app.power_cut()

    def stop(self) -> None:
        """A clean stop (SIGTERM: the board says goodbye), then the power."""
        self.app.terminate()
