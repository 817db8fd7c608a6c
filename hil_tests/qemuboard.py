"""The qemu target: an ESP32 emulated by Espressif's qemu-system-xtensa (`-M esp32`).

The board boots a flash image that `make qemu-image` builds (qemu_image.py:
MicroPython's ESP32 .bin plus the firmware and a config with
`serial_uplink` on UART1). It has no WiFi, so QEMU exposes two UARTs as TCP
serial sockets on 127.0.0.1:

    UART0  console + TP1   driven exactly like a real board (SerialBoard)
    UART1  serial uplink   carried to the broker by the host bridge (serialbridge.py)

With `uplink_uart=0` (--terrapin-qemu-uplink-uart 0: an emulator whose UART1
output never reaches the host) the uplink's frames share UART0 with the
console: the bridge takes UART0 apart and serves the console on a socket of
its own, and the board's copy of the image gets the same serial_uplink.

    power cut   kill -9 QEMU, start it again on the same flash file (what the
                board had written is on it, nothing else)
    reset       `system_reset` on the QEMU monitor (RTC memory kept, as on EN)
    read_file   the file from the flash image's littlefs (flashfs.py)

Each board gets its own copy of the image. QEMU is not in Debian or PyPI:
docs/HIL.md says how a bench owner installs it.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from terrapin.hil.flashfs import read_flash_file
from terrapin.hil.serialboard import SerialBoard
from terrapin.tools.bench.board_qemu import (  # one QEMU command line for bench and HIL
    MACHINE,
    QemuStartError,
    log_tail,
    qemu_command,
    wait_listening,
)
from terrapin.tools.devkit.broker import free_port

UPLINK_UART = 1  # the config's serial_uplink.uart (qemu_image.BENCH_CONFIG)
# On a shared UART0 a console line must fit beside the board's window
# (sharedline.WINDOW, 128) in its 260-byte input ring: config-chunk lines of
# 48 bytes (64 in base64) are ~100 bytes.
SHARED_CONFIG_CHUNK = 48
# An emulated ESP32 boots slower than the chip (every flash read costs 10-50 ms):
# the console answers ~20-40 s after power-on with main.py's flash cache (it was
# 174-405 s before it); the limit leaves room for emulators sharing the CPU.
BOOT_TIMEOUT_S = 600.0
# This emulator sometimes spins after a software reset (the console stops at
# `rst:0xc (SW_CPU_RESET) ... entry 0x400805b0`, QEMU at 100% CPU; the same
# flash boots from power-on): a reboot not back within this is power-cycled
# once, as a bench hand would press EN, and counted (docs/HIL.md, "QEMU").
SOFT_RESET_HANG_S = 180.0
# Espressif's QEMU 7.2 sometimes aborts at a software reset under multi-threaded
# TCG ("mttcg_cpu_thread_fn: assertion failed: (cpu->halted)"); single-threaded
# TCG avoids it but boots 4x slower. A dead emulator is the board losing power:
# it is restarted on its flash (a power cut the scenario's end state must survive
# too) and counted (QemuBoard.emulator_crashes, a line in qemu.log).


class QemuBoard(SerialBoard):
    target = "qemu"
    period_s = 1.0  # the emulated ESP32 signs far slower than the unix port
    # A boot takes ~20-40 s and a reading 1-4 s in emulation (each flash read
    # 10-50 ms): the scenarios' waits on the board are scaled by this.
    wait_scale = 10.0

    def __init__(
        self,
        *a,
        qemu_bin: str,
        image: Path,
        machine: str = MACHINE,
        extra_args: tuple[str, ...] = (),
        boot_timeout_s: float = BOOT_TIMEOUT_S,
        uplink_uart: int = UPLINK_UART,
        **kw,
    ):
        super().__init__(*a, port="", **kw)
        self.machine = machine
        self.extra_args = tuple(extra_args)
        # Emulation runs MicroPython several times slower: scale what waits on it.
        self.boot_timeout_s = boot_timeout_s
        self.request_timeout_s = 240.0  # a console import after a quiet spell: minutes
        # Polls spaced out (2 s doubling to 15 s): every poll the booting board has
        # not read waits in MicroPython's 260-byte stdin ring, whose overflow is
        # dropped, a later request with it (docs/HIL.md, QEMU); a 40 s boot gets 5.
        self.console_poll_s = 2.0
        self.console_poll_max_s = 15.0
        self.drain_s = 15.0  # a poll sent while QEMU was resetting never answers: wait this long
        self.config_chunk = 96  # each config-chunk line well under that ring
        self.qemu_bin = qemu_bin
        self.flash_image = self.dir / "flash.bin"
        shutil.copyfile(image, self.flash_image)
        self.uplink_uart = uplink_uart
        if uplink_uart != UPLINK_UART:
            from terrapin.hil.qemu_image import set_image_uplink_uart

            set_image_uplink_uart(self.flash_image, uplink_uart)  # the first boot's too
            self.config_chunk = min(self.config_chunk, SHARED_CONFIG_CHUNK)
        self.overrides.setdefault("serial_uplink", {"uart": uplink_uart})
        # A status every 6 s, not 2: a status message costs the emulated board
        # 1-3 s (slow flash), and the bench waits on readings, not on status.
        self.overrides.setdefault("status_period_s", 6)
        self.proc: subprocess.Popen[bytes] | None = None
        self.bridge = None
        self.monitor_port = 0
        self.hung_resets = 0
        self.emulator_crashes = 0
        self._power_on()

    # -- the emulator ------------------------------------------------------------------
    def _power_on(self) -> None:
        from terrapin.hil.serialbridge import SerialBridge

        console, uplink, self.monitor_port = free_port(), free_port(), free_port()
        cmd = qemu_command(
            self.qemu_bin,
            self.flash_image,
            console,
            uplink,
            self.monitor_port,
            machine=self.machine,
            extra=self.extra_args,
        )
        log = open(self.qemu_log, "ab")  # noqa: SIM115 - the child keeps it
        log.write(("$ " + shlex.join(cmd) + "\n").encode())
        log.flush()
        try:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        except OSError as exc:
            raise QemuStartError(f"cannot run {self.qemu_bin}: {exc}") from None
        finally:
            log.close()
        try:
            for port in (console, uplink, self.monitor_port):
                wait_listening(port, self.proc, 30, self.qemu_log)
            if self.uplink_uart == 0:
                # One line for both: the bridge serves the console on its own socket.
                url = f"socket://127.0.0.1:{console}"
                self.bridge = SerialBridge(url, self.dir / "uplink.log", console=True).start()
                self.port = self.bridge.console_url
                self._open()
                return
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

    @property
    def qemu_log(self) -> Path:
        return self.dir / "qemu.log"

    def console_tail(self, n: int = 30) -> str:
        """The console, then the emulator's log: a board that never came up says why."""
        return super().console_tail(n) + "\n" + log_tail(self.qemu_log)

    # -- the board interface -------------------------------------------------------------
    def power_cut(self) -> None:
        self._power_off()
        self._power_on()
        self.boots += 1
        self.exit_codes.append(-9)
        # A request sent while it boots is lost (no UART yet, or dropped from the
        # stdin ring): the next start() would wait 240 s for its answer.
        self.wait_console(timeout=self.boot_timeout_s)

    def _wait_reset(self) -> dict:
        # After a software reset (`reboot`, `console`): one that hangs in the
        # emulator, or kills it, is power-cycled (a flag file `console` wrote
        # survives it).
        try:
            return self.wait_console(timeout=min(self.boot_timeout_s, SOFT_RESET_HANG_S))
        except (AssertionError, OSError):  # OSError: the socket of an emulator that died
            if not self._revive():
                self.hung_resets += 1
                self._power_cycle("no console after a soft reset (hung_resets)")
            return self.wait_console(timeout=self.boot_timeout_s)

    def request(self, command: str, *args: str, timeout: float | None = None) -> dict:
        try:
            return super().request(command, *args, timeout=timeout)
        except (AssertionError, OSError):
            if not self._revive():
                raise
        self.wait_console(timeout=self.boot_timeout_s)
        return super().request(command, *args, timeout=timeout)

    def _revive(self) -> bool:
        """Restart an emulator that died (the note at SOFT_RESET_HANG_S); False if it runs."""
        if self.proc is None or self.proc.poll() is None:
            return False
        self.emulator_crashes += 1
        self.boots += 1
        self.exit_codes.append(-9)
        self._power_cycle(f"qemu exited with {self.proc.returncode}; restarted (emulator_crashes)")
        return True

    def _power_cycle(self, why: str) -> None:
        with open(self.qemu_log, "ab") as log:
            log.write(f"bench: {why}\n".encode())
        self._power_off()
        self._power_on()

    def reset(self, *args: str) -> None:
        self._monitor("system_reset")
        self.boots += 1
        self.wait_console(timeout=self.boot_timeout_s)
        self.start(*args)

    def read_file(self, path: str) -> bytes:
        return read_flash_file(self.flash_image, path)

    def stop(self) -> None:
        self._power_off()
