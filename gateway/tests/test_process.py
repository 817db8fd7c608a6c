"""GatewayProcess: the real `terrapin gateway run` child, started, killed and stopped."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from terrapin.tools.devkit.gatewayproc import GatewayProcess, GatewayProcessError


def test_connects_survives_kill_9_and_stops_cleanly(gw_home, gw_broker, tmp_path):
    gw = GatewayProcess(gw_home, env={"TERRAPIN_PROBE": "gw-process-test"})
    assert gw.url == f"http://127.0.0.1:{gw_home.api_port}/api/status"
    try:
        gw.start()
        assert gw.status()["connected"] and gw.starts == 1
        with pytest.raises(GatewayProcessError, match="already runs"):
            gw.start()  # a second child would leak
        assert gw.proc is not None
        environ = Path(f"/proc/{gw.proc.pid}/environ").read_bytes().split(b"\0")
        assert b"TERRAPIN_PROBE=gw-process-test" in environ
        assert len(gw.worker_pids()) == gw_home.config.pipeline.workers > 0
        main_cpu, workers_cpu = gw.cpu_seconds() or (-1.0, -1.0)
        assert main_cpu > 0 and workers_cpu >= 0
        gw.kill()
        assert not gw.running() and gw.proc.returncode == -signal.SIGKILL
        gw.start()
        assert gw.starts == 2
        assert gw.stop() == 0, gw.log_tail()
        assert gw.stop() is None  # nothing left to stop
    finally:
        gw.kill()
    assert (gw_home.dir / "gateway.log").stat().st_size > 0


def test_an_exit_before_connecting_names_the_code_and_the_log(gw_home):
    text = gw_home.config_path.read_text().replace("stages = []", 'stages = ["batch"]')
    gw_home.config_path.write_text(text + "\n[chain]\nno_such_key = 1\n")  # checked in the child
    gw = GatewayProcess(gw_home.config_path)
    with pytest.raises(GatewayProcessError, match=r"exited \(code 2\)") as err:
        gw.start(timeout=60)
    assert "no_such_key" in str(err.value) and str(gw.log_path) in str(err.value)
    assert not gw.running()


def test_no_broker_times_out_and_stop_escalates_to_sigkill(gw_home):
    gw = GatewayProcess(gw_home)  # nothing listens on its broker port
    try:
        with pytest.raises(GatewayProcessError, match="did not connect to the broker in 2 s"):
            gw.start(timeout=2)
        assert gw.running() and gw.proc is not None
        os.kill(gw.proc.pid, signal.SIGSTOP)  # it cannot act on SIGTERM now
        assert gw.stop(timeout=0.5) == -signal.SIGKILL
        assert not gw.running()
    finally:
        gw.kill()


def test_a_config_without_the_api_is_refused(gw_home):
    text = gw_home.config_path.read_text()
    assert text.count("enabled = true") == 1  # only [api] has the key
    gw_home.config_path.write_text(text.replace("enabled = true", "enabled = false"))
    with pytest.raises(GatewayProcessError, match="enabled = false"):
        GatewayProcess(gw_home)
