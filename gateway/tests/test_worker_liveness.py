"""A verify worker that dies is noticed whatever the load; a misspelled stage, or a
stage whose run() raises, stops `gateway run` with one line, not a traceback.

The liveness test puts every board on one worker (worker.shard_of) and kills
the OTHER one, the one no reading goes to, while the boards keep publishing:
the gateway must exit with code 1 within a few seconds (the supervisor then
restarts it), and after the restart every reading is stored exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from terrapin.gateway.worker import shard_of
from terrapin.tools.devkit.gatewayproc import GatewayProcess, run_command
from terrapin.tools.devkit.simboard import board_address, new_key

BOARDS = 3
RATE = 150  # readings per second per board: a steady stream, never idle
NOTICE_WITHIN = 5.0  # s from kill -9 of the idle worker to the gateway's exit


def keys_on_shard(shard: int, workers: int, n: int) -> list[bytes]:
    keys: list[bytes] = []
    while len(keys) < n:
        k = new_key()
        if shard_of(board_address(k), workers) == shard:
            keys.append(k)
    return keys


@pytest.mark.mosquitto
def test_a_killed_idle_worker_stops_the_gateway_under_load(gw_home, gw_broker, gw_tools, tmp_path):
    workers = gw_home.config.pipeline.workers
    assert workers >= 2, "needs a worker that no board is sharded to"
    creds = [gw_home.add_sim_board(k) for k in keys_on_shard(0, workers, BOARDS)]
    load = gw_tools.BoardLoad(gw_home, gw_broker, creds, RATE)
    boards, published = load.boards, load.published
    log = tmp_path / "gateway.log"
    gw = GatewayProcess(gw_home, log=log, settle=0.3)
    try:
        pids = gw.start(timeout=30).status()["workers"]
        assert len(pids) == workers and sorted(pids) == sorted(gw.worker_pids()), pids
        load.start()
        time.sleep(1.5)  # the gateway is busy with shard 0's boards
        stored_before = gw.status()["counts"]["stored"]
        assert stored_before > 0, gw.log_tail()
        idle = pids[1]  # no board is sharded to worker 1
        os.kill(idle, signal.SIGKILL)
        killed_at = time.monotonic()
        assert gw.proc is not None
        try:
            code = gw.proc.wait(NOTICE_WITHIN)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the gateway still runs {NOTICE_WITHIN} s after its idle verify worker "
                f"(pid {idle}) was killed under load\n{gw.log_tail()}"
            )
        noticed = time.monotonic() - killed_at
        assert code == 1, f"exit code {code}\n{gw.log_tail()}"
        text = log.read_text()
        assert f"verify worker terrapin-verify-1 (pid {idle}) died" in text, gw.log_tail()
        assert "Traceback" not in text, gw.log_tail()
        # The load went on the whole time: the boards published while it noticed.
        assert load.publishing()

        gw.start(timeout=30)  # what systemd's Restart=on-failure does
        time.sleep(1.0)
        load.stop()
        # PUBACK after commit alone brings every reading back; no board re-sends.
        gw_tools.wait_settled(boards, published)
        code = gw.stop()
        assert code == 0, f"exit code {code} on SIGTERM\n{gw.log_tail()}"
    finally:
        gw.kill()
        load.close()

    print(f"idle worker's death noticed in {noticed:.2f} s under {BOARDS * RATE} readings/s")
    gw_tools.check_exactly_once(gw_home.config.store.path, boards, published)


def run_gateway(config_path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        run_command(config_path), capture_output=True, text=True, timeout=60, check=False
    )


def test_a_misspelled_stage_stops_gateway_run_with_one_line_and_a_suggestion(gw_home):
    text = gw_home.config_path.read_text()
    assert "stages = []" in text
    gw_home.config_path.write_text(text.replace("stages = []", 'stages = ["bach"]'))
    out = run_gateway(gw_home.config_path)
    assert out.returncode == 2, out.stderr  # a config error
    assert "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"error: pipeline.stages in {gw_home.config_path}: unknown stage 'bach'",
        "hint: did you mean 'batch'?",
    ], out.stderr


# `terrapin gateway run` in a child process whose server builds one extra stage that
# raises in run(): the failure the stages' own bounded retries end in.
FAILING_STAGE_RUN = """
import sys
from terrapin.gateway import server

class Exploding:
    def run(self, shutdown):
        raise RuntimeError("node gone\\nafter 5 retries")

server.chain_stages = lambda cfg: [Exploding()]
from terrapin.tools.cli.main import main
sys.exit(main(["gateway", "run", "--config", sys.argv[1]]))
"""


@pytest.mark.mosquitto
def test_a_stage_that_raises_stops_the_gateway_with_exit_code_1(gw_home, gw_broker):
    text = gw_home.config_path.read_text().replace('format = "json"', 'format = "text"')
    gw_home.config_path.write_text(text)
    out = subprocess.run(
        [sys.executable, "-c", FAILING_STAGE_RUN, str(gw_home.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    failed = [line for line in out.stderr.splitlines() if "Exploding failed" in line]
    assert len(failed) == 2, out.stderr  # the log line, then main()'s error line
    assert "RuntimeError: node gone" in failed[0] and "exit code 1" in failed[0], out.stderr
    assert failed[1] == "error: stage Exploding failed: RuntimeError: node gone", out.stderr
    assert "after 5 retries" not in out.stderr, out.stderr  # one line each
