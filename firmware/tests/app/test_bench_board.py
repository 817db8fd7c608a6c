"""The board figures of `terrapin bench firmware`: at tiny scale through the
command (keys, sane numbers), and the two ways a figure could lie checked
directly: a peak that misses transients, a median of only the last readings."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from terrapin.tools.bench.board_run import BoardRun
from terrapin.tools.micropython import ESP32_HEAP_BYTES

BOARD_KEYS = (
    "mp_reading_ms",
    "mp_reading_sign_only_ms",
    "mp_peak_heap_bytes",
    "mp_peak_heap_bound_bytes",
    "mp_min_heapsize_bytes",
    "mp_live_heap_bytes",
    "flash_bytes_per_reading",
    "flash_overhead_bytes_per_reading",
    "envelope_bytes_mean",
    "sampling_readings_per_s",
)
CRYPTO_KEYS = ("mp_sign_ms", "mp_sign1_ms", "mp_sign_peak_heap_bytes", "cpython_sign_ms")


@pytest.mark.micropython
@pytest.mark.mosquitto
def test_bench_firmware_merges_the_board_figures(micropython_exe, mosquitto_exe) -> None:
    from terrapin.tools.bench.firmware import firmware

    args = ["--json", "--runs", "3", "--naive-runs", "1", "--readings", "20"]
    result = CliRunner().invoke(firmware, args)
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    for key in BOARD_KEYS + CRYPTO_KEYS:
        assert key in figures and figures[key] > 0, key
    assert "readings_per_s" not in figures  # renamed: it is the sampling rate
    assert figures["readings"] == 20 and figures["mp_mem_errors"] == 0
    # A reading includes a sign1; the two are timed in different processes on
    # a shared machine, so only "not far below" holds run after run.
    assert 0 < figures["mp_reading_sign_only_ms"] / 2 <= figures["mp_reading_ms"] < 1000
    # Readings stay on the period's grid; a first reading up to a period late
    # shortens the span by that much (20 readings: at most 19 / 18 of the rate).
    assert 0 < figures["sampling_readings_per_s"] <= 1.25 * 1000 / figures["sampling_period_ms"]
    # Signing churns big integers the live figure never sees: the peak is higher.
    assert 20_000 < figures["mp_live_heap_bytes"] < figures["mp_peak_heap_bytes"]
    assert figures["mp_peak_heap_bytes"] < figures["mp_min_heapsize_bytes"]
    assert figures["mp_min_heapsize_bytes"] <= figures["mp_heap_bytes"]
    assert figures["mp_peak_heap_bound_bytes"] <= 1024
    assert figures["flash_overhead_bytes_per_reading"] <= 16
    env = figures["envelope_bytes_mean"]
    assert env + 14 <= figures["flash_bytes_per_reading"] <= env + 16
    assert set(figures["targets"]) >= {"reading_peak_heap_le_64k", "outbox_overhead_le_16"}


@pytest.mark.micropython
@pytest.mark.mosquitto
def test_peak_heap_includes_a_known_transient(micropython_exe, mosquitto_exe, tmp_path) -> None:
    # The same board, once as is and once holding a 4 KB bytearray while each
    # reading is taken: the peak must grow by at least that; the live heap
    # after gc.collect() (the old mp_peak_heap_bytes) does not see it.
    from terrapin.tools.bench.board import run_peak_heap
    from terrapin.tools.bench.board_run import TRANSIENT_PATCH, BoardRunner, harness

    transient = 4096
    runner = BoardRunner(tmp_path, 20)
    try:
        plain = run_peak_heap(runner, 50_000, "")
        held = run_peak_heap(runner, 50_000, TRANSIENT_PATCH % transient)
        live_plain = runner.run(ESP32_HEAP_BYTES, harness(""))
        live_held = runner.run(ESP32_HEAP_BYTES, harness(TRANSIENT_PATCH % transient))
    finally:
        runner.close()
    assert held.peak_above >= plain.peak + transient - 1024, (plain, held)
    assert live_plain is not None and live_held is not None
    live = (live_plain.stats["live_peak"], live_held.stats["live_peak"])
    assert abs(live[1] - live[0]) < transient, live


def test_reading_median_is_over_the_whole_run() -> None:
    # 100 readings: the first 60 took 5 ms, the last 40 took 1 ms. The median
    # of all is 5 ms; of the firmware's last 64 it would be 1 ms.
    from terrapin.tools.bench.board import reading_times

    times = [5000] * 60 + [1000] * 40
    lines = [f"TP-T {us} {i * 10_000}" for i, us in enumerate(times)]
    median_ms, per_s = reading_times(BoardRun({}, lines, 1.0), 100)
    assert median_ms == 5.0
    assert per_s == pytest.approx(99 / 0.99)


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
        mp_peak_heap_bytes=75000,
        mp_peak_heap_bound_bytes=640,
        mp_min_heapsize_bytes=76000,
        mp_live_heap_bytes=60000,
        flash_bytes_per_reading=223.2,
        flash_overhead_bytes_per_reading=14.45,
        readings=1000,
        sampling_readings_per_s=150.0,
        sampling_period_ms=5,
    )
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(_table(figures))
    text = console.export_text()
    assert "2.500 ms" in text and "1.250 ms" in text and "75000 B (within 640 B)" in text
    assert "60000 B" in text and "76000 B" in text and "median of all 1000" in text
    assert "sampling rate, period 5 ms" in text and "150.0" in text
