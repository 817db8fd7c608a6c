"""One thin board class per target, all with the same interface.

    board.provision(home, broker)   boot once: key made on the board; allow-list it
    board.start(*args)              boot (power on) with firmware/main.py options
    board.power_cut()               kill -9: the power goes at whatever point it was
    board.reset(*args)              power cut, then boot again
    board.wait_exit(timeout)        the exit code of this boot
    board.console()                 everything it printed, every boot
    board.read_file(path)           a file of its flash
    board.signed()                  every seq it signed (its console's "stored seq N")

unix:   the firmware on the MicroPython unix port, one process per boot.
socket: the same firmware, reached only through a TCP serial socket (what QEMU's
        `-serial tcp::PORT,server` gives); its MQTT stream goes over that serial
        line to the host bridge (serialbridge.py), as a board without WiFi.
serial: a real ESP32 on --terrapin-port (serialboard.py: TP1 console, DTR/RTS, relay).
qemu:   Espressif's qemu-system-xtensa -M esp32 with the console on -serial tcp.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from terrapin.tools.devkit import appboard
from terrapin.tools.devkit.gatewayhome import REPO, GatewayHome, reload_broker
from terrapin.tools.devkit.virtualboard import APP_MAIN, VirtualBoard
from terrapin.tools.micropython import ESP32_HEAP, micropython_command

MAIN = APP_MAIN
SERIAL_MAIN = Path(__file__).resolve().parent / "mp_serial_board.py"


class BoardBase:
    target = "?"
    wait_scale = 1.0  # the scenarios' waits on this board (drain, signed, recovered) times this

    def __init__(self, name: str, workdir: Path, broker: tuple[str, int], **config: object):
        self.name = name
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "config.json"
        self.flash = self.dir / "flash"
        self.broker_host, self.broker_port = broker
        self.overrides = dict(config)
        self.address = ""
        self.pubkey = ""
        self.boots = 0
        self.exit_codes: list[int] = []
        self.write_config()

    # -- config and provisioning ------------------------------------------------
    def write_config(self, **over: object) -> None:
        self.overrides.update(over)
        cfg = appboard.app_config(
            self.broker_host, self.broker_port, self.address, **self.overrides
        )
        self.config_path.write_text(json.dumps(cfg))

    def provision(self, home: GatewayHome, broker) -> None:
        """First boot makes the key on the board; the gateway allow-lists it."""
        self.start("--max-readings", "0", "--exit-when-drained")
        self.wait_exit(30)
        self.address, self.pubkey = appboard.identity(self.console(), self.name)
        home.add_board(self.address, self.pubkey, appboard.BOARD_PASSWORD)
        reload_broker(broker)
        self.write_config()

    # -- what every target derives from the console ------------------------------
    def signed(self) -> list[int]:
        """Every seq the board reported as signed and written to its outbox (all boots)."""
        return appboard.signed(self.console())

    def stats(self) -> dict:
        """The TP-STATS line of the last boot that printed one."""
        try:
            return appboard.last_stats(self.console(), self.name)
        except appboard.AppConsoleError as exc:
            raise AssertionError(str(exc)) from None

    def read_file(self, path: str) -> bytes:
        return (self.flash / path).read_bytes()

    def reset(self, *args: str) -> None:
        self.power_cut()
        self.start(*args)

    def console_tail(self, n: int = 30) -> str:
        return "\n".join(self.console().splitlines()[-n:])

    # target-specific
    def start(self, *args: str) -> None:
        raise NotImplementedError

    def power_cut(self) -> None:
        raise NotImplementedError

    def wait_exit(self, timeout: float) -> int:
        raise NotImplementedError

    def running(self) -> bool:
        raise NotImplementedError

    def console(self) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        self.power_cut()


class UnixBoard(BoardBase):
    """The firmware on the MicroPython unix port (tools/devkit's VirtualBoard), one
    process per boot, run from the checkout."""

    target = "unix"
    heapsize = ESP32_HEAP

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.vb = VirtualBoard(
            self.flash,
            script=MAIN,
            args=("--config", str(self.config_path), "--flash", str(self.flash)),
            heapsize=self.heapsize,
            deploy=False,
            serial=False,
            log_dir=self.dir,
            cwd=REPO,
        )

    def start(self, *args: str) -> None:
        self.vb.start(*args)
        self.boots = self.vb.boots

    def running(self) -> bool:
        return self.vb.running()

    def power_cut(self) -> None:
        if self.vb.power_cut():
            self.exit_codes.append(-9)

    def wait_exit(self, timeout: float) -> int:
        try:
            code = self.vb.wait_exit(timeout)
        except Exception as exc:
            raise AssertionError(f"{self.name}: {exc}") from None
        self.exit_codes.append(code)
        return code

    def console(self) -> str:
        return self.vb.console()


_MPY_READY = False


def compile_firmware() -> None:
    """firmware/main.py compiles the checkout to .mpy on its first run (then exits 2:
    no --config). The socket target's board script imports those .mpy files."""
    global _MPY_READY
    if not _MPY_READY:
        subprocess.run(micropython_command(str(MAIN)), cwd=REPO, capture_output=True, timeout=120)
        _MPY_READY = True


class SocketBoard(BoardBase):
    """The firmware on the unix port behind a TCP serial socket, uplink over serial."""

    target = "socket"
    heapsize = ESP32_HEAP

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.vb = None
        self.bridge = None
        self.console_path = self.dir / "console.log"

    def start(self, *args: str) -> None:
        from terrapin.hil.serialbridge import SerialBridge

        compile_firmware()
        self.boots += 1
        self.vb = VirtualBoard(
            self.dir / "uart",
            script=SERIAL_MAIN,
            args=(str(REPO), "--config", str(self.config_path), "--flash", str(self.flash), *args),
            tcp_port=0,
            heapsize=self.heapsize,
            log_path=self.dir / f"uart-{self.boots}.log",
            restart=False,
            deploy=False,
        ).start()
        # The host side: pyserial on the board's TCP serial socket.
        self.bridge = SerialBridge(self.vb.url, self.console_path).start()

    def running(self) -> bool:
        return self.vb is not None and self.vb.running()

    def _shutdown(self) -> None:
        if self.bridge is not None:
            self.bridge.stop()
            self.bridge = None
        if self.vb is not None:
            self.vb.stop()
            self.vb = None

    def power_cut(self) -> None:
        if self.vb is None:
            return
        if self.vb.power_cut():
            self.exit_codes.append(-9)
        self._shutdown()

    def wait_exit(self, timeout: float) -> int:
        assert self.vb is not None, "board not started"
        deadline = time.monotonic() + timeout
        while not self.vb.exit_codes:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: still running after {timeout:.0f} s:\n{self.console_tail()}"
                )
            time.sleep(0.05)
        code = self.vb.exit_codes[-1]
        time.sleep(0.1)  # the bridge reads the last console lines
        self._shutdown()
        self.exit_codes.append(code)
        return code

    def console(self) -> str:
        if self.bridge is not None:
            self.bridge.flush()
        if not self.console_path.exists():
            return ""
        return self.console_path.read_text(errors="replace")

    def stop(self) -> None:
        self.power_cut()
