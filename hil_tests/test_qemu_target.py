"""The qemu target's parts that run without Espressif's QEMU: its command line, and
the clear skips when the emulator or the flash image is missing. Booting the
image needs qemu-system-xtensa (`make hil TARGET=qemu`, docs/HIL.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from terrapin.hil.qemu_image import BENCH_CONFIG
from terrapin.hil.qemuboard import UPLINK_UART, qemu_command

REPO = Path(__file__).resolve().parent.parent


def test_command_line_puts_uart0_uart1_and_the_monitor_on_loopback(tmp_path) -> None:
    cmd = qemu_command("qemu-system-xtensa", tmp_path / "flash.bin", 4001, 4002, 4003)
    assert cmd[:4] == ["qemu-system-xtensa", "-nographic", "-machine", "esp32"]
    assert cmd[cmd.index("-drive") + 1] == f"file={tmp_path / 'flash.bin'},if=mtd,format=raw"
    serials = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-serial"]
    # QEMU gives -serial options to UART0, UART1, ... in order.
    assert serials == [
        "tcp:127.0.0.1:4001,server=on,wait=off",
        "tcp:127.0.0.1:4002,server=on,wait=off",
    ]
    assert cmd[cmd.index("-monitor") + 1] == "tcp:127.0.0.1:4003,server=on,wait=off"
    assert cmd[cmd.index("-nic") + 1] == "none"  # no network: the uplink is UART1


def test_image_config_and_board_agree_on_the_uplink_uart() -> None:
    assert BENCH_CONFIG["serial_uplink"]["uart"] == UPLINK_UART


def run_qemu_target(tmp_path: Path, *opts: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "hil_tests/test_scenarios.py", "-k", "baseline",
         "--terrapin-target", "qemu", "-rs", "-p", "no:cacheprovider",
         "--terrapin-hil-report", str(tmp_path / "report"), *opts],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_missing_emulator_or_image_is_a_clear_skip(tmp_path) -> None:
    text = run_qemu_target(tmp_path, "--terrapin-qemu-bin", str(tmp_path / "no-such-qemu"))
    assert "1 skipped" in text
    assert f"target qemu: {tmp_path / 'no-such-qemu'} is not on PATH" in text
    text = run_qemu_target(
        tmp_path,
        "--terrapin-qemu-bin",
        sys.executable,
        "--terrapin-qemu-image",
        str(tmp_path / "none.bin"),
    )
    assert "1 skipped" in text
    assert f"no flash image at {tmp_path / 'none.bin'}" in text
    assert "make qemu-image" in text
