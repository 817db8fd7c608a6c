"""`terrapin demo` (first version): the virtual board's readings verify on the
host, and the host check fails on tampered envelopes."""

from __future__ import annotations

import json

import cbor2
import pytest
from click.testing import CliRunner

from terrapin.tools.demo import demo, host_check


@pytest.mark.micropython
def test_demo_signs_on_the_unix_port_and_verifies(micropython_exe, tmp_path):
    result = CliRunner().invoke(demo, ["--readings", "3", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "MicroPython unix port" in result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["seq"] for r in summary["readings"]] == [1, 2, 3]
    assert all(r["verified"] for r in summary["readings"])
    pub = bytes.fromhex(summary["public_key"])
    env = (tmp_path / "reading-2.cbor").read_bytes()
    assert host_check(env, pub, 2)[2] == []
    # Tamper: one payload byte changed -> the signature no longer verifies.
    fields = list(cbor2.loads(env).value)
    payload = bytearray(fields[2])
    payload[-1] ^= 1
    fields[2] = bytes(payload)
    problems = host_check(cbor2.dumps(cbor2.CBORTag(18, fields), canonical=True), pub, 2)[2]
    assert "signature does not verify (coincurve)" in problems
    assert host_check(env, pub, 3)[2] == ["seq 2 != 3"]


def test_demo_falls_back_to_cpython_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("TERRAPIN_MICROPYTHON", str(tmp_path / "no-such-micropython"))
    result = CliRunner().invoke(demo, ["--readings", "1"])
    assert result.exit_code == 0, result.output
    assert "running the firmware core on CPython instead" in " ".join(result.output.split())
    assert "all 1 readings verified" in result.output
