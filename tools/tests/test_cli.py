"""The CLI: help lists commands, user mistakes give a message and an exit code."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import click

from terrapin.tools.cli.main import main
from terrapin.tools.devkit.broker import Mosquitto


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "bench" in out


def _reachable(command: click.Command, ctx: click.Context) -> list[click.Command]:
    found = [command]
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            found += _reachable(sub, click.Context(sub, parent=ctx, info_name=name))
    return found


def _defined_in(command: click.Command, module) -> bool:
    return getattr(command.callback, "__module__", None) == module.__name__


def test_every_command_of_the_cli_package_is_reachable_from_terrapin_help():
    import terrapin.tools.cli as package
    from terrapin.tools.cli.main import cli

    reachable = {id(c) for c in _reachable(cli, click.Context(cli, info_name="terrapin"))}
    defined = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for name, value in vars(module).items():
            if isinstance(value, click.Command) and _defined_in(value, module):
                defined[f"{module.__name__}.{name}"] = value
    assert "terrapin.tools.cli.chain.deploy" in defined and len(defined) > 10, sorted(defined)
    assert [n for n, c in defined.items() if id(c) not in reachable] == []


def test_chain_deploy_is_a_terrapin_command_and_the_old_module_still_runs_it():
    new = subprocess.run(
        [sys.executable, "-m", "terrapin.tools.cli.main", "chain", "deploy", "--help"],
        capture_output=True,
        text=True,
    )
    assert new.returncode == 0 and "--keystore FILE" in new.stdout, new.stderr
    old = subprocess.run(
        [sys.executable, "-m", "terrapin.tools.cli.chain"], capture_output=True, text=True
    )
    assert old.returncode == 2 and "Missing option '--rpc'" in old.stderr, old.stderr


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
