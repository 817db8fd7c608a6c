"""Smoke test of the board figures at tiny scale, through `terrapin bench firmware
--json`: the crypto core's keys and the board's keys side by side, sane numbers."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

pytestmark = [pytest.mark.micropython, pytest.mark.mosquitto]

BOARD_KEYS = (
    "mp_reading_ms",
    "mp_reading_sign_only_ms",
    "mp_peak_heap_bytes",
    "flash_bytes_per_reading",
    "flash_overhead_bytes_per_reading",
    "envelope_bytes_mean",
)
CRYPTO_KEYS = ("mp_sign_ms", "mp_sign1_ms", "mp_sign_peak_heap_bytes", "cpython_sign_ms")


def test_bench_firmware_merges_the_board_figures(micropython_exe, mosquitto_exe) -> None:
    from terrapin.tools.bench.firmware import firmware

    args = ["--json", "--runs", "3", "--naive-runs", "1", "--readings", "20"]
    result = CliRunner().invoke(firmware, args)
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    for key in BOARD_KEYS + CRYPTO_KEYS:
        assert key in figures and figures[key] > 0, key
    assert figures["readings"] == 20 and figures["mp_mem_errors"] == 0
    assert 0 < figures["mp_reading_sign_only_ms"] <= figures["mp_reading_ms"] < 1000
    assert 20_000 < figures["mp_peak_heap_bytes"] < figures["mp_heap_bytes"]
    assert figures["flash_overhead_bytes_per_reading"] <= 16
    env = figures["envelope_bytes_mean"]
    assert env + 14 <= figures["flash_bytes_per_reading"] <= env + 16
    assert set(figures["targets"]) >= {"reading_peak_heap_le_64k", "outbox_overhead_le_16"}


def test_bench_firmware_table_shows_the_reading_beside_its_baseline() -> None:
    from terrapin.tools.bench.firmware_report import figures_table as _table

    figures = {
        "cpython_" + k: 1.0
        for k in (
            "sign_ms naive_sign_ms naive_euclid_sign_ms verify_ms sha256_ms encode_ms "
            "sign1_ms address_ms table_build_ms"
        ).split()
    }
    figures.update(
        mp_reading_ms=2.5,
        mp_reading_sign_only_ms=1.25,
        mp_peak_heap_bytes=60000,
        flash_bytes_per_reading=223.2,
        flash_overhead_bytes_per_reading=14.45,
        readings=1000,
        readings_per_s=150.0,
    )
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(_table(figures))
    text = console.export_text()
    assert "2.500 ms" in text and "1.250 ms" in text and "60000 B" in text
