"""Smoke test of tools/bench_board.py at tiny scale: the keys exist, the numbers are sane."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.micropython, pytest.mark.mosquitto]


def test_board_figures_small_run(micropython_exe, mosquitto_exe) -> None:
    from terrapin.tools.bench_board import board_figures

    figures = board_figures(20)
    assert figures["readings"] == 20 and figures["mp_mem_errors"] == 0
    assert 0 < figures["mp_sign_ms"] <= figures["mp_reading_ms"] < 1000
    assert 20_000 < figures["mp_peak_heap_bytes"] < figures["mp_heap_bytes"]
    assert figures["flash_overhead_bytes_per_reading"] <= 16
    env = figures["envelope_bytes_mean"]
    assert env + 14 <= figures["flash_bytes_per_reading"] <= env + 16
