"""The TLS option: the virtual board verifies Mosquitto's certificate (broker.ca_file) and drains.

On the unix port mbedtls takes its buffers from the MicroPython heap, so this
board runs with a larger heap; on an ESP32 they come from the IDF heap.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from terrapin.tools.devkit.broker import Mosquitto, free_port, wait_for_port

pytestmark = [pytest.mark.micropython, pytest.mark.mosquitto]


def make_cert(tmp_path):  # type: ignore[no-untyped-def]
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    key, cert = tmp_path / "broker.key", tmp_path / "broker.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    key.chmod(0o644)
    return key, cert


def test_tls_with_ca_file(fw, micropython_exe, mosquitto_exe, tmp_path):
    key, cert = make_cert(tmp_path)
    plain = free_port()
    broker = Mosquitto(
        tmp_path / "mq",
        extra_config=f"certfile {cert}\nkeyfile {key}\nlistener {plain} 127.0.0.1",
    ).start()
    wait_for_port(broker.host, plain)  # start() waits for the TLS listener only
    gw = fw.TestGateway(broker.host, plain)
    try:
        cfg = fw.board_config(broker.port)
        cfg["broker"].update({"tls": True, "ca_file": str(cert)})
        board = fw.AppBoard(micropython_exe, tmp_path, cfg)
        board.start("--max-readings", "5", "--exit-when-drained", "--stats", heap="256k")
        assert board.wait(60) == 0, board.console()
        assert gw.seqs(board.address()) == set(range(1, 6))
        assert not gw.problems, gw.problems
        # a board that does not trust the broker's certificate never connects
        other = tmp_path / "other"
        other.mkdir()
        _k2, wrong = make_cert(other)
        cfg["broker"]["ca_file"] = str(wrong)
        bad = fw.AppBoard(micropython_exe, tmp_path, cfg, "untrusting")
        bad.start("--max-readings", "1", "--exit-when-drained", heap="256k")
        fw.wait_for(lambda: "unreachable" in bad.console(), 20, "a TLS failure", bad.console)
        bad.kill()
        assert "connected to" not in bad.console()
    finally:
        gw.close()
        broker.stop()
