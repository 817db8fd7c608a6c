"""The qemu target's parts that run without Espressif's QEMU: its command line, and
the clear skips when the emulator or the flash image is missing. Booting the
image needs qemu-system-xtensa (`make hil TARGET=qemu`, docs/HIL.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from terrapin.hil.qemu_image import (
    BENCH_CONFIG,
    DEFAULT_FLASH_SIZE,
    FLASH_SIZES,
    bench_config,
    image_uplink_uart,
    main,
)
from terrapin.hil.qemuboard import UPLINK_UART, QemuBoard
from terrapin.tools.bench.board_qemu import QemuStartError, qemu_command, split_args

REPO = Path(__file__).resolve().parent.parent


def test_command_line_puts_uart0_uart1_and_the_monitor_on_loopback(tmp_path) -> None:
    cmd = qemu_command("qemu-system-xtensa", tmp_path / "flash.bin", 4001, 4002, 4003)
    assert cmd[:4] == ["qemu-system-xtensa", "-nographic", "-machine", "esp32"]
    assert (
        cmd[cmd.index("-drive") + 1]
        == f"file={tmp_path / 'flash.bin'},if=mtd,format=raw,cache=unsafe"
    )
    serials = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-serial"]
    # QEMU gives -serial options to UART0, UART1, ... in order.
    assert serials == [
        "tcp:127.0.0.1:4001,server=on,wait=off",
        "tcp:127.0.0.1:4002,server=on,wait=off",
    ]
    assert cmd[cmd.index("-monitor") + 1] == "tcp:127.0.0.1:4003,server=on,wait=off"
    assert cmd[cmd.index("-nic") + 1] == "none"  # no network: the uplink is UART1


def test_machine_and_extra_arguments_are_options() -> None:
    extra = split_args("-icount 3 -d 'guest_errors,unimp'")
    cmd = qemu_command("q", Path("f.bin"), 1, 2, 3, machine="esp32-test", extra=extra)
    assert cmd[cmd.index("-machine") + 1] == "esp32-test"
    assert cmd[-4:] == ["-icount", "3", "-d", "guest_errors,unimp"]  # last: they can override


def test_the_image_is_16mb_by_default_what_the_emulator_reads() -> None:
    assert FLASH_SIZES[DEFAULT_FLASH_SIZE] == 16 << 20


def test_default_image_size_from_the_cli(tmp_path) -> None:
    from terrapin.hil.esp32_standin import standin_bin

    mp = tmp_path / "ESP32_GENERIC.bin"
    mp.write_bytes(standin_bin())
    out = tmp_path / "flash.bin"
    assert main(["--micropython", str(mp), "--out", str(out)]) == 0
    assert out.stat().st_size == 16 << 20


FAILING_QEMU = """#!/bin/sh
echo "qemu-system-xtensa: failed to read the initial flash content" >&2
exit 1
"""


def test_a_failed_start_quotes_the_emulator_log(tmp_path) -> None:
    """An emulator that exits at start (here a script standing in for QEMU's
    refusal of a wrong-size flash): the error carries its own words."""
    fake = tmp_path / "qemu-system-xtensa"
    fake.write_text(FAILING_QEMU)
    fake.chmod(0o755)
    image = tmp_path / "flash.bin"
    image.write_bytes(b"\xff" * 1024)
    with pytest.raises(QemuStartError) as err:
        QemuBoard("b0", tmp_path / "boards", ("127.0.0.1", 1883), qemu_bin=str(fake), image=image)
    text = str(err.value)
    assert "qemu exited with code 1 while starting" in text
    assert "failed to read the initial flash content" in text
    assert str(tmp_path / "boards" / "b0" / "qemu.log") in text


def test_a_missing_emulator_binary_is_a_clear_error(tmp_path) -> None:
    image = tmp_path / "flash.bin"
    image.write_bytes(b"\xff" * 1024)
    with pytest.raises(QemuStartError, match=r"cannot run .*no-such-qemu"):
        QemuBoard(
            "b0",
            tmp_path / "boards",
            ("127.0.0.1", 1883),
            qemu_bin=str(tmp_path / "no-such-qemu"),
            image=image,
        )


def test_image_config_and_board_agree_on_the_uplink_uart() -> None:
    assert BENCH_CONFIG["serial_uplink"]["uart"] == UPLINK_UART
    for uart in (0, 1):
        assert bench_config(uart)["serial_uplink"]["uart"] == uart
    assert bench_config(UPLINK_UART) == BENCH_CONFIG


def test_uplink_on_uart0_from_the_cli_and_in_the_boards_image(tmp_path) -> None:
    """--uplink-uart 0 builds the image so; a QemuBoard told uplink_uart=0 (the
    plugin's --terrapin-qemu-uplink-uart) rewrites its own copy of a UART1 image,
    so its first boot already shares UART0, and leaves the original alone."""
    from terrapin.hil.esp32_standin import standin_bin

    mp = tmp_path / "ESP32_GENERIC.bin"
    mp.write_bytes(standin_bin())
    shared, own = tmp_path / "uart0.bin", tmp_path / "uart1.bin"
    assert main(["--micropython", str(mp), "--out", str(shared), "--uplink-uart", "0"]) == 0
    assert main(["--micropython", str(mp), "--out", str(own)]) == 0
    assert (image_uplink_uart(shared), image_uplink_uart(own)) == (0, 1)
    fake = tmp_path / "qemu-system-xtensa"
    fake.write_text(FAILING_QEMU)
    fake.chmod(0o755)
    with pytest.raises(QemuStartError):
        QemuBoard(
            "b0",
            tmp_path / "boards",
            ("127.0.0.1", 1883),
            qemu_bin=str(fake),
            image=own,
            uplink_uart=0,
        )
    assert image_uplink_uart(tmp_path / "boards" / "b0" / "flash.bin") == 0
    assert image_uplink_uart(own) == 1


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


# An emulator stand-in that crashes like Espressif's QEMU 7.2 sometimes does at a
# software reset (mttcg assertion): it serves the three sockets of the command
# line, answers TP1 like the firmware (console mode once after `console`, from a
# flag next to its flash), and exits with SIGABRT's code when `console` resets it.
CRASHING_QEMU = r"""
import json, os, re, socket, sys
args = " ".join(sys.argv[1:])
ports = [int(p) for p in re.findall(r"tcp:127\.0\.0\.1:(\d+),server", args)]
flash = re.search(r"file=([^,]+),", args).group(1)
flag = flash + ".console_mode"
mode = "app"
if os.path.exists(flag):
    os.remove(flag)
    mode = "console"
servers = []
for port in ports:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port)); s.listen(1); servers.append(s)
print("stand-in up in mode", mode, flush=True)

def lines():
    while True:  # like QEMU's server=on: the next client after one leaves (a port probe)
        con, _ = servers[0].accept()
        buf = b""
        while True:
            data = con.recv(1024)
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                yield con, line


for con, line in lines():
    words = line.decode().split()
    if len(words) < 3 or words[0] != "TP1":
        continue
    rid, cmd = words[1], words[2]
    if cmd == "info":
        answer = "OK %s %s" % (rid, json.dumps({"proto": 1, "mode": mode}))
    elif cmd == "console" and mode == "app":
        open(flag, "w").close()
        con.sendall(b"TP1 OK %s {}\n" % rid.encode())
        print("ERROR: mttcg_cpu_thread_fn: assertion failed: (cpu->halted)", flush=True)
        os._exit(134)
    elif mode == "app" and cmd != "reboot":
        answer = "ERR %s CONSOLE_MODE %s is answered in console mode" % (rid, cmd)
    else:
        answer = "OK %s {}" % rid
        mode = "app" if cmd == "reboot" else mode
    con.sendall(b"TP1 " + answer.encode() + b"\n")
"""


def test_an_emulator_that_dies_at_a_reset_is_restarted_like_a_power_cut(tmp_path) -> None:
    fake = tmp_path / "qemu-system-xtensa"
    fake.write_text(f"#!{sys.executable}\n" + CRASHING_QEMU)
    fake.chmod(0o755)
    image = tmp_path / "image.bin"
    image.write_bytes(b"\xff" * 4096)
    board = QemuBoard(
        "b0", tmp_path / "boards", ("127.0.0.1", 1), qemu_bin=str(fake), image=image,
        boot_timeout_s=6,
    )  # fmt: skip
    board.console_poll_s, board.console_poll_max_s, board.drain_s = 0.2, 0.5, 0.5
    board.request_timeout_s = 3.0  # `console`'s answer dies with the emulator
    try:
        # keygen is console mode's: `console` kills the emulator; the bench restarts it
        # on its flash (the flag survives, as on a board) and asks again there.
        assert board.request("keygen", timeout=5) == {}
        assert board.emulator_crashes == 1 and board.hung_resets == 0
        assert "restarted (emulator_crashes)" in board.qemu_log.read_text()
        assert board.request("info", timeout=5)["mode"] == "console"
    finally:
        board.stop()
