"""`terrapin bench gateway --store ... --instances N` at a tiny scale: the keys, and the
exactly-once check of every configuration."""

from __future__ import annotations

import subprocess
import sys

import pytest

from terrapin.tools.bench.gateway_scale import run_scale_bench

pytestmark = pytest.mark.timeout(300)


def test_sqlite_postgres_one_and_two_instances_in_one_run(tmp_path, postgres_server, mosquitto_exe):
    result = run_scale_bench(
        "postgresql",
        2,
        boards_n=2,
        readings=200,
        latency_readings=20,
        rate=50.0,
        workdir=tmp_path,
        repeat=1,
    )
    for key in ("gateway_per_s", "ratio", "p99_ack_latency_ms", "scaling_efficiency"):
        assert isinstance(result[key], float) and result[key] > 0, key
    for config in ("sqlite_x1", "postgresql_x1", "postgresql_x2"):
        assert result[f"exactly_once_{config}"], config
        assert result[f"stored_{config}"] == result[f"expected_{config}"] == 220
        assert 0 < result[f"ratio_{config}"] <= 1.5
    assert result["scaling_efficiency"] == round(
        result["gateway_per_s_x2"] / (2 * result["gateway_per_s"]), 3
    )


def test_several_instances_need_postgres():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "terrapin.tools.cli.main",
            "bench",
            "gateway",
            "--store",
            "sqlite",
            "--instances",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--store postgresql" in proc.stderr
