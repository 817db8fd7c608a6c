"""The qemu target: an ESP32 emulated by Espressif's qemu-system-xtensa (`-M esp32`).

The board boots a flash image that `make qemu-image` builds (qemu_image.py:
MicroPython's ESP32 .bin plus the firmware and a config with
`serial_uplink` on UART1). It has no WiFi, so QEMU exposes two UARTs as TCP
serial sockets on 127.0.0.1:

    UART0  console + TP1   driven exactly like a real board (SerialBoard)
    UART1  serial uplink   carried to the broker by the host bridge (serialbridge.py)

    power cut   kill -9 QEMU, start it again on the same flash file (what the
                board had written is on it, nothing else)
    reset       `system_reset` on the QEMU monitor (RTC memory kept, as on EN)
    read_file   the file from the flash image's littlefs (flashfs.py)

Each board gets its own copy of the image. QEMU is not in Debian or PyPI:
docs/HIL.md says how a bench owner installs it.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from terrapin.hil.flashfs import read_flash_file
from terrapin.hil.serialboard import SerialBoard
from terrapin.tools.devkit.broker import free_port

UPLINK_UART = 1  # the config's serial_uplink.uart (qemu_image.BENCH_CONFIG)


def qemu_command(
    qemu_bin: str, flash: Path, console_port: int, uplink_port: int, monitor_port: int
) -> list[str]:
    """The QEMU command line: the flash as the SPI flash, UART0 and UART1 as TCP
    serial servers (`wait=off`: the bench connects after start), the monitor on TCP."""

    def tcp(port: int) -> str:
        return f"tcp:127.0.0.1:{port},server=on,wait=off"

    return [
        qemu_bin, "-nographic", "-machine", "esp32",
        "-drive", f"file={flash},if=mtd,format=raw",
        # The timer-group watchdog fires under slow emulation; the firmware's
        # own watchdog (config watchdog_s) is what a real board relies on.
        "-global", "driver=timer.esp32.timg,property=wdt_disable,value=true",
        "-nic", "none",
        "-serial", tcp(console_port),  # UART0
        "-serial", tcp(uplink_port),  # UART1
        "-monitor", tcp(monitor_port),
    ]  # fmt: skip


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"qemu exited with code {proc.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise AssertionError(f"qemu did not open 127.0.0.1:{port} in {timeout:.0f} s")


class QemuBoard(SerialBoard):
    target = "qemu"
    period_s = 1.0  # the emulated ESP32 signs far slower than the unix port

    def __init__(self, *a, qemu_bin: str, image: Path, **kw):
        super().__init__(*a, port="", **kw)
        self.qemu_bin = qemu_bin
        self.flash_image = self.dir / "flash.bin"
        shutil.copyfile(image, self.flash_image)
        self.overrides.setdefault("serial_uplink", {"uart": UPLINK_UART})
        self.proc: subprocess.Popen[bytes] | None = None
        self.bridge = None
        self.monitor_port = 0
        self._power_on()

    # -- the emulator ------------------------------------------------------------------
    def _power_on(self) -> None:
        from terrapin.hil.serialbridge import SerialBridge

        console, uplink, self.monitor_port = free_port(), free_port(), free_port()
        cmd = qemu_command(self.qemu_bin, self.flash_image, console, uplink, self.monitor_port)
        log = open(self.dir / "qemu.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        log.close()
        try:
            for port in (console, uplink, self.monitor_port):
                _wait_listening(port, self.proc, 30)
            self.port = f"socket://127.0.0.1:{console}"
            self._open()
            self.bridge = SerialBridge(f"socket://127.0.0.1:{uplink}", self.dir / "uplink.log")
            self.bridge.start()
        except BaseException:
            self._power_off()  # no QEMU left running behind a failed start
            raise

    def _power_off(self) -> None:
        if self.bridge is not None:
            self.bridge.stop()
            self.bridge = None
        super().stop()  # the console's serial socket and its reader thread
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def _monitor(self, command: str) -> None:
        with socket.create_connection(("127.0.0.1", self.monitor_port), 5) as mon:
            mon.sendall(command.encode() + b"\n")
            time.sleep(0.2)  # the monitor acts on the line; its banner is not needed

    # -- the board interface -------------------------------------------------------------
    def power_cut(self) -> None:
        self._power_off()
        self._power_on()
        self.boots += 1
        self.exit_codes.append(-9)

    def reset(self, *args: str) -> None:
        self._monitor("system_reset")
        self.boots += 1
        self.wait_console(timeout=60)  # the emulated boot is slow
        self.start(*args)

    def read_file(self, path: str) -> bytes:
        return read_flash_file(self.flash_image, path)

    def stop(self) -> None:
        self._power_off()
