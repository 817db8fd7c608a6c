"""`terrapin sim` at tiny scale: both board kinds, churn on, nothing lost or doubled,
the latency report has its keys and sane numbers."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from terrapin.tools.sim import sim

pytestmark = pytest.mark.mosquitto


def _check(report: dict, kind: str, boards: int) -> None:
    assert report["kind"] == kind and report["boards"] == boards
    assert report["signed"] > 0 and report["stored"] == report["signed"]
    assert report["lost"] == report["duplicates"] == report["not_anchored"] == 0
    for key in ("sample_to_stored_ms", "sample_to_anchored_ms"):
        lat = report[key]
        assert 0 <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"] < 60_000, lat
    assert report["sample_to_stored_ms"]["p50"] <= report["sample_to_anchored_ms"]["p50"]


def test_sim_cpython_fleet_with_churn(tmp_path, mosquitto_exe):
    args = [
        "--boards",
        "12",
        "--rate",
        "4",
        "--duration",
        "5",
        "--churn",
        "1",
        "--kind",
        "cpython",
        "--json",
    ]
    result = CliRunner().invoke(sim, [*args, "--dir", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    _check(report, "cpython", 12)
    assert report["churn_events"] > 0


@pytest.mark.micropython
def test_sim_firmware_boards(tmp_path, mosquitto_exe, micropython_exe):
    from terrapin.tools.sim import run_sim

    report = run_sim(2, 5.0, 4.0, 0.0, "firmware", tmp_path)
    _check(report, "firmware", 2)
    assert report["signed"] >= 2 * 10
