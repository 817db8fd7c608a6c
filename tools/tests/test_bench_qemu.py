"""`terrapin bench firmware --target qemu`: the ESP32 image's figures. The probe's
output is parsed and checked against the budget here; running it needs
Espressif's QEMU and the image (marked hardware: CI has neither)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from terrapin.gateway.errors import TerrapinError
from terrapin.tools.bench import board_qemu
from terrapin.tools.bench.firmware import esp32_targets
from terrapin.tools.cli.main import main

REPO = Path(__file__).resolve().parents[2]
IMAGE = REPO / ".cache" / "qemu" / "esp32-flash.bin"
QEMU = os.environ.get("TERRAPIN_QEMU_BIN", "qemu-system-xtensa")


def test_probe_output_becomes_the_esp32_figures():
    out = "junk\r\nFREE 163808\r\nAPP 48816\r\nPEAK 2100\r\nSIGNUS 72512\r\n"
    assert board_qemu.parse_probe(out) == {
        "esp32_heap_free_boot": 163808,
        "esp32_app_alloc_bytes": 48816,
        "esp32_sign_peak_bytes": 2100,
        "esp32_sign_ms_emulated": 72.5,
    }
    with pytest.raises(TerrapinError, match="printed no APP, PEAK"):
        board_qemu.parse_probe("FREE 1\nSIGNUS 2\nMemoryError")


def test_the_budget_is_64k_and_40_percent_of_the_free_heap():
    ok = esp32_targets({"esp32_app_alloc_bytes": 60000, "esp32_heap_free_boot": 163808})
    assert ok == {"esp32_app_le_64k": True, "esp32_app_le_40pct_of_boot_free": True}
    small = esp32_targets({"esp32_app_alloc_bytes": 60000, "esp32_heap_free_boot": 140000})
    assert small["esp32_app_le_40pct_of_boot_free"] is False
    big = esp32_targets({"esp32_app_alloc_bytes": 70000, "esp32_heap_free_boot": 300000})
    assert big["esp32_app_le_64k"] is False


def test_a_missing_emulator_is_said_before_any_benchmarking(tmp_path, capsys):
    code = main(["bench", "firmware", "--target", "qemu", "--qemu-bin", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code != 0 and "is not on PATH" in err and "docs/HIL.md" in err
    code = main(
        ["bench", "firmware", "--target", "qemu", "--qemu-bin", "sh", "--qemu-image",
         str(tmp_path / "none.bin")]
    )  # fmt: skip
    assert code != 0 and "no flash image" in capsys.readouterr().err


def test_the_unix_port_guard_of_the_esp32_budget(tmp_path, micropython_exe):
    """The same probe on the 64-bit unix port: the app within UNIX_APP_GUARD (64 KB
    on the 32-bit image, scaled by the measured ratio), one reading's peak small."""
    from terrapin.tools.board.deploy import DirTarget, deploy

    deploy(DirTarget(tmp_path))
    figures = board_qemu.unix_probe(micropython_exe, tmp_path)
    assert figures["esp32_app_alloc_bytes"] <= board_qemu.UNIX_APP_GUARD, figures
    assert 1000 < figures["esp32_sign_peak_bytes"] < 16 * 1024, figures


@pytest.mark.hardware
@pytest.mark.skipif(
    shutil.which(QEMU) is None or not IMAGE.is_file(),
    reason="needs Espressif's QEMU ($TERRAPIN_QEMU_BIN) and `make qemu-image` (docs/HIL.md)",
)
def test_the_figures_from_the_emulated_esp32():
    figures = board_qemu.esp32_figures(QEMU, IMAGE)
    assert 120_000 < figures["esp32_heap_free_boot"] < 200_000, figures
    assert 0 < figures["esp32_sign_peak_bytes"] < figures["esp32_app_alloc_bytes"], figures
    assert all(esp32_targets(figures).values()), figures
