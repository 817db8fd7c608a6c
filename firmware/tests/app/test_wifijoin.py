"""Joining WiFi never blocks the main loop (issue 18: board/esp32.py's
network_up() waited up to 10 s in a loop for wlan.isconnected()). The join is
a pure stepped function (firmware/wifijoin.py), run here on CPython and on the
unix port against a stand-in for the ESP32's WLAN (mp_wifi_join.py), and
board/esp32.py's network_up() is stepped over stand-ins for `machine` and
`network` on the unix port, then its open_socket() to a real listener."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from terrapin.tools.devkit.virtualboard import REPO
from terrapin.tools.micropython import ESP32_HEAP

SCRIPT = Path(__file__).resolve().parent / "mp_wifi_join.py"

# What each scenario's steps return, then connect() and disconnect() counts,
# then what a step after the end returns (wrong-password only).
EXPECTED = [
    "joins [False, True] 1 1 None",  # one disconnect before the join: a clean start
    # after the failure the next step starts a new join: a second connect()
    "wrong-password [False, 'error wifi join failed (status 202)'] 2 3 False",
    "silent-ap [False, 'error %d'] 1 2 None",
    "already-joining [False, True] 0 0 None",  # a join under way is not restarted
]


def run(exe: list[str], *args: str) -> list[str]:
    proc = subprocess.run(
        [*exe, str(SCRIPT), *args],
        capture_output=True,
        cwd=REPO,
        env={**os.environ, "MICROPYPATH": str(REPO), "PYTHONPATH": str(REPO)},
        timeout=60,
        check=False,
    )
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    return out.splitlines()


def expected(etimedout: int) -> list[str]:
    return [line.replace("%d", str(etimedout)) for line in EXPECTED]


def test_the_join_is_stepped_on_cpython():
    assert run([sys.executable]) == expected(110)


@pytest.mark.micropython
def test_the_join_is_stepped_on_the_unix_port(micropython_exe):
    assert run([micropython_exe, "-X", f"heapsize={ESP32_HEAP}"]) == expected(110)


@pytest.mark.micropython
def test_the_esp32_board_layer_steps_its_wifi_join(micropython_exe):
    # The stand-in AP answers after 1.5 s: network_up() says "not yet" at once
    # and "up" on a later call (the old code blocked inside the first call).
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        line, tcp = run([micropython_exe, "-X", f"heapsize={ESP32_HEAP}"], "esp32", str(port))
    head, slowest = line.rsplit(" slowest_ms ", 1)
    assert head == "esp32 [False, True] 1", line
    assert tcp == "tcp True True", tcp  # then the broker's socket, opened in steps
    print(f"longest network_up() call while joining: {slowest} ms")
