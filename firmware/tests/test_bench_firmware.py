"""Smoke test: `terrapin bench firmware --json` at tiny scale has its keys and
sane numbers (the figures themselves are the bench's output, not a test)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from terrapin.tools.bench import firmware as bench_firmware
from terrapin.tools.bench.firmware import BenchContext, firmware, register

KEYS = (
    "mp_sign_ms",
    "mp_naive_sign_ms",
    "mp_verify_ms",
    "mp_sha256_ms",
    "mp_sign1_ms",
    "mp_encode_ms",
    "mp_address_ms",
    "mp_sign_peak_heap_bytes",
    "mp_sign_resident_heap_bytes",
    "mp_ecdsa_sign_peak_heap_bytes",
    "mp_core_sign_peak_heap_bytes",
    "cpython_sign_ms",
    "cpython_naive_sign_ms",
    "sign_speedup",
)


@pytest.mark.micropython
def test_bench_firmware_json_smoke(micropython_exe, monkeypatch):
    seen: list[BenchContext] = []

    def provider(ctx: BenchContext) -> dict[str, float]:
        seen.append(ctx)
        return {"mp_extra_figure": 1.0}

    monkeypatch.setattr(bench_firmware, "_registered", [])
    register(provider)
    result = CliRunner().invoke(firmware, ["--json", "--runs", "3", "--naive-runs", "1"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    for key in KEYS:
        assert key in figures, key
        assert figures[key] > 0, key
    assert figures["mp_naive_sign_ms"] > figures["mp_sign_ms"]
    assert figures["mp_sign_peak_heap_bytes"] < 100 * 1024
    # The whole signing path holds more than the ECDSA module alone, and
    # keeping keccak resident costs more again.
    assert figures["mp_ecdsa_sign_peak_heap_bytes"] < figures["mp_sign_peak_heap_bytes"]
    assert figures["mp_sign_peak_heap_bytes"] < figures["mp_core_sign_peak_heap_bytes"]
    assert figures["mp_sign_resident_heap_bytes"] < figures["mp_sign_peak_heap_bytes"]
    assert figures["mp_naive_matches"] and figures["cpython_naive_matches"]
    assert figures["mp_extra_figure"] == 1.0 and seen and seen[0].micropython
