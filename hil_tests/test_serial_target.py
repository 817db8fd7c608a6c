"""The serial target's code path, run here against a virtual board: the firmware app
(with its TP1 console) on the unix port behind a pseudo-terminal, opened with pyserial
exactly like /dev/ttyUSB0. Provisioned over TP1, sampling switched on and off over
TP1, drained state read from the TP1 status lines; the end state checked as on any
target."""

from __future__ import annotations

import json
import time

import pytest

from terrapin.hil.endstate import Result, check, wait_anchored
from terrapin.hil.netproxy import NetProxy
from terrapin.hil.plugin import record_hil_result
from terrapin.hil.serialboard import SerialBoard
from terrapin.tools.devkit.gatewayhome import (
    GatewayHome,
    GatewayProcess,
    chain_section,
    start_broker,
)
from terrapin.tools.micropython import ESP32_HEAP

# The app and its TP1 console together, on the 64-bit unix port: the ESP32's
# free heap at boot in 64-bit terms (tools/micropython.py, docs/FIRMWARE.md).
CONSOLE_HEAP = ESP32_HEAP

pytestmark = [pytest.mark.mosquitto, pytest.mark.micropython]


def test_serial_target_on_a_virtual_app_board(request, tmp_path, micropython_exe, mosquitto_exe):
    from terrapin.tools.devkit.virtualboard import VirtualBoard

    t0 = time.monotonic()
    home = GatewayHome(tmp_path / "gateway", chain_section())
    broker = start_broker(home)
    proxy = NetProxy(("127.0.0.1", home.mqtt_port)).start()
    gateway = GatewayProcess(home).start()
    flash = tmp_path / "flash"
    flash.mkdir()
    # What `terrapin device provision` leaves on a board: a config with working
    # network settings (the bench then points it at its own broker over TP1).
    (flash / "config.json").write_text(
        json.dumps({"broker": {"host": "127.0.0.1", "port": proxy.port}, "sample_period_s": 3600})
    )
    vb = VirtualBoard(
        flash,
        script=flash / "main.py",
        args=("--config", "config.json", "--flash", ".", "--console"),
        tcp_port=None,
        heapsize=CONSOLE_HEAP,  # the app and its TP1 console must fit together
    ).start()
    board = SerialBoard("b0", tmp_path / "boards", (proxy.host, proxy.port), port=vb.pty_path)
    board.period_s = 0.1  # the unix port signs in ~2 ms
    board.config_chunk = 64  # the chunked config path (the qemu target's) runs here too
    try:
        board.provision(home, broker)
        board.start("--max-readings", "10", "--exit-when-drained", "--stats")
        board.wait_exit(120)
        wait_anchored(home.db_path, [board], 60)
        result = check(Result("serial_over_pty", "serial"), [board], home.db_path, gateway.status())
        result.seconds = time.monotonic() - t0
        record_hil_result(request.config, result.row())
        assert result.ok, "\n".join(result.problems) + "\n" + board.console_tail()
        assert result.stored >= 10
        assert board.boots >= 3  # provisioning reboot, sampling on, sampling off
        assert "out of memory" not in board.console(), board.console_tail()
    finally:
        board.stop()
        vb.stop()
        gateway.stop()
        proxy.stop()
        broker.stop()


def test_serial_board_reads_flash_files_over_the_raw_repl(tmp_path, micropython_exe):
    """read_file on a board behind a serial line: Ctrl-C, raw REPL, base64, soft reset."""
    from terrapin.tools.devkit.virtualboard import VirtualBoard

    flash = tmp_path / "flash"
    flash.mkdir()
    payload = bytes(range(256)) * 3  # every byte value: nothing may be lost in transit
    (flash / "data.bin").write_bytes(payload)
    vb = VirtualBoard(flash, tcp_port=None).start()  # console board: TP1 + raw REPL
    board = SerialBoard("b0", tmp_path / "boards", ("127.0.0.1", 1), port=vb.pty_path)
    try:
        board.wait_console(timeout=60)
        assert board.read_file("data.bin") == payload
        assert board.read_file("/data.bin") == payload  # "/" is the flash root
        assert board.boots == 2 and vb.boots >= 3  # each read soft-resets the board
        with pytest.raises(AssertionError, match=r"cannot read nope\.bin on the board"):
            board.read_file("nope.bin")
        assert board.request("info")  # the board answers TP1 again after the failed read
    finally:
        board.stop()
        vb.stop()
