"""One gateway per database; a busy port or a taken lock is one line and a prompt exit."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from terrapin.gateway.instancelock import (
    EXIT_LOCKED,
    InstanceLock,
    InstanceLocked,
    holder,
    lock_path,
)
from terrapin.tools.devkit.gatewayproc import GatewayProcess, run_command

QUICK = 30.0  # s: a refused start must end well before a supervisor would kill it


def _run_once(config_path, timeout: float = QUICK) -> tuple[int, str, float]:
    """`terrapin gateway run` expected to exit by itself: (code, stderr, seconds)."""
    t0 = time.monotonic()
    try:
        done = subprocess.run(
            run_command(config_path), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:  # the bug this guards against: a hang
        raise AssertionError(f"`gateway run` still runs after {timeout} s: {exc.stderr}") from None
    return done.returncode, done.stderr, time.monotonic() - t0


def test_a_second_gateway_on_the_same_database_exits_naming_the_pid(gw_home, gw_broker, tmp_path):
    first = GatewayProcess(gw_home).start()
    try:
        assert holder(gw_home.db_path) == first.pid
        # Same database, another API port: today both would run and fight over the broker.
        other = tmp_path / "other.toml"
        text = gw_home.config_path.read_text()
        text = text.replace(f"port = {gw_home.api_port}", "port = 1")  # never reached
        other.write_text(text.replace('path = "gateway.db"', f'path = "{gw_home.db_path}"'))
        for config in (gw_home.config_path, other):
            code, err, _ = _run_once(config)
            assert code == EXIT_LOCKED, err
            lines = err.strip().splitlines()
            assert f"pid {first.pid}" in lines[0] and "Traceback" not in err, err
            assert len(lines) <= 2, err  # the error and its hint
        assert first.running() and first.status()["connected"]  # the first one is untouched
        first.kill()  # kill -9: the kernel drops the lock, no stale file blocks a restart
        assert holder(gw_home.db_path) is None
        first.start()
        assert holder(gw_home.db_path) == first.pid
        assert first.stop() == 0
        assert holder(gw_home.db_path) is None
    finally:
        first.kill()


def test_a_port_in_use_is_one_line_and_no_child_is_left(gw_home):
    busy = socket.socket()
    busy.bind(("127.0.0.1", gw_home.api_port))
    busy.listen()
    try:
        assert gw_home.config.pipeline.workers == 2  # the children that used to hang it
        code, err, took = _run_once(gw_home.config_path)
    finally:
        busy.close()
    assert code == 1, err
    assert "Traceback" not in err and f"127.0.0.1:{gw_home.api_port}" in err, err
    assert err.startswith("error: cannot listen on"), err
    assert took < QUICK
    assert holder(gw_home.db_path) is None  # released on the way out


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    db = tmp_path / "gateway.db"
    with InstanceLock(db):
        assert lock_path(db).stat().st_mode & 0o777 == 0o600
        with pytest.raises(InstanceLocked, match="already uses") as err:
            InstanceLock(db).acquire()
        assert err.value.exit_code == EXIT_LOCKED
    assert holder(db) is None
    lock_path(db).write_text("999999\n")  # a file left by a dead process locks nothing
    assert holder(db) is None
    InstanceLock(db).acquire().release()
