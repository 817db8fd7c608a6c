"""The CLI: help lists commands, user mistakes give a message and an exit code."""

from __future__ import annotations

import subprocess
import sys

from terrapin.tools.cli.main import main
from terrapin.tools.devkit.broker import Mosquitto


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "bench" in out


def test_unknown_command_is_an_error_not_a_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "terrapin.tools.cli.main", "no-such-command"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "No such command" in proc.stderr


def test_mosquitto_fixture_accepts_connections(mosquitto: Mosquitto):
    import socket

    with socket.create_connection((mosquitto.host, mosquitto.port), timeout=2):
        pass
