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
from terrapin.tools.micropython import ESP32_HEAP, ESP32_HEAP_BYTES, UNIX_PER_ESP32

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
    skipped = board_qemu.parse_probe("SKIP session\n" + out)
    assert skipped["esp32_modules_skipped"] == ["session"]
    detail = board_qemu.parse_probe(
        "MOD compat 976\r\nMOD jsonsafe 1712\r\n" + out
        + "qstr pool: n_pool=6, n_qstr=731, n_str_data_bytes=7535, n_total_bytes=16543\r\n"
    )  # fmt: skip
    assert detail["esp32_app_by_module"] == {"compat": 976, "jsonsafe": 736}
    assert detail["esp32_app_qstrs"] == 731


def test_app_modules_are_every_module_the_app_imports():
    """APP_MODULES names every firmware module that boot, a reading, a status,
    the console and the first ACK import (the set the budget is about)."""
    from terrapin.tools.board.deploy import FIRMWARE_DIR

    names = set(board_qemu.app_modules("wifi")) | set(board_qemu.app_modules("serial"))
    for need in ("config", "keystore", "keccak", "secp256k1", "consoleport", "board.esp32",
                 "seriallink", "wifijoin", "board.tcpopen", "uplink", "mqtt", "outbox",
                 "seqstore", "ack", "schedule", "cose", "cborenc", "status", "app"):  # fmt: skip
        assert need in names, need
    for name in names:
        path = FIRMWARE_DIR / (name.replace(".", "/") + ".py")
        if name == "sensors":
            path = FIRMWARE_DIR / "sensors" / "__init__.py"
        assert path.is_file() or name == "session", path  # session: may fold into uplink


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


def test_the_guard_is_the_esp32_budget_in_unix_port_terms():
    assert round(64 * 1024 * UNIX_PER_ESP32) == board_qemu.UNIX_APP_GUARD
    # The unix-port runs get the heap in which the guard is 40%, as the ESP32's
    # free heap at boot is for its 64 KB.
    assert abs(ESP32_HEAP_BYTES * 0.40 - board_qemu.UNIX_APP_GUARD) < 1024
    assert f"{ESP32_HEAP_BYTES // 1024}k" == ESP32_HEAP


def test_the_unix_port_probe_measures_the_app_and_a_reading(tmp_path, micropython_exe):
    from terrapin.tools.board.deploy import DirTarget, deploy

    deploy(DirTarget(tmp_path))
    figures = board_qemu.unix_probe(micropython_exe, tmp_path)
    assert "esp32_modules_skipped" not in figures or figures["esp32_modules_skipped"] == [
        "session"
    ], figures
    assert 1000 < figures["esp32_sign_peak_bytes"] < 16 * 1024, figures
    assert figures["esp32_app_alloc_bytes"] > 60_000, figures  # the whole set, not a part
    shares = figures["esp32_app_by_module"]
    app_set = board_qemu.app_modules(figures["esp32_app_set"])
    unix_set = ["board.unix" if m == "board.esp32" else m for m in app_set]
    assert list(shares) == unix_set, shares  # one share per module, in import order
    assert set(figures["esp32_app_alloc_bytes_by_uplink"]) == set(board_qemu.UPLINKS)
    assert abs(sum(shares.values()) - figures["esp32_app_alloc_bytes"]) < 1024, figures
    assert 300 < figures["esp32_app_qstrs"] < 2000, figures


def test_the_unix_port_guard_of_the_esp32_budget(tmp_path, micropython_exe):
    """The same probe on the 64-bit unix port: the app within UNIX_APP_GUARD (64 KB
    on the 32-bit image, scaled by the measured ratio)."""
    from terrapin.tools.board.deploy import DirTarget, deploy

    deploy(DirTarget(tmp_path))
    figures = board_qemu.unix_probe(micropython_exe, tmp_path)
    assert figures["esp32_app_alloc_bytes"] <= board_qemu.UNIX_APP_GUARD, figures
    # The names the app interns: past 620 on the image MicroPython allocates a
    # 6th string-table pool (4.5 KB there), and the image interns ~13 more
    # than this port for the same set.
    assert figures["esp32_app_qstrs"] <= board_qemu.UNIX_QSTR_GUARD, figures


def test_the_unix_bench_prints_the_guard_beside_the_app(tmp_path, micropython_exe):
    from terrapin.tools.bench import firmware as bench_firmware

    ctx = bench_firmware.BenchContext(micropython_exe, 1, REPO, tmp_path)
    figures = bench_firmware._app_figures(ctx)
    assert figures["mp_app_guard_bytes"] == board_qemu.UNIX_APP_GUARD
    assert figures["mp_app_alloc_bytes"] > 60_000, figures


@pytest.fixture(scope="module")
def emulated_figures() -> dict:
    return board_qemu.esp32_figures(QEMU, IMAGE)  # minutes: once for the tests below


@pytest.mark.hardware
@pytest.mark.skipif(
    shutil.which(QEMU) is None or not IMAGE.is_file(),
    reason="needs Espressif's QEMU ($TERRAPIN_QEMU_BIN) and `make qemu-image` (docs/HIL.md)",
)
def test_the_figures_from_the_emulated_esp32(emulated_figures):
    figures = emulated_figures
    assert 120_000 < figures["esp32_heap_free_boot"] < 200_000, figures
    assert 0 < figures["esp32_sign_peak_bytes"] < figures["esp32_app_alloc_bytes"], figures
    assert "esp32_modules_skipped" not in figures or figures["esp32_modules_skipped"] == [
        "session"
    ], figures


@pytest.mark.hardware
@pytest.mark.skipif(
    shutil.which(QEMU) is None or not IMAGE.is_file(),
    reason="needs Espressif's QEMU ($TERRAPIN_QEMU_BIN) and `make qemu-image` (docs/HIL.md)",
)
def test_the_emulated_esp32_app_within_the_budget(emulated_figures):
    assert all(esp32_targets(emulated_figures).values()), emulated_figures
