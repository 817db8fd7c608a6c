"""Secrets handled as secrets: files that hold them are 0600 from the moment they
exist, no command takes one as a command-line value, and adding a board that is
already allowed never replaces its live password by surprise."""

from __future__ import annotations

import contextlib
import os
import stat
import sys

import click
import pytest
from click.testing import CliRunner

from terrapin.gateway import allowlist, mosquitto_conf, secretfile
from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.home import OTA_SECRET, init_home
from terrapin.tools.board.ota import new_release_key
from terrapin.tools.cli.gateway import gateway as gateway_cli
from terrapin.tools.devkit.simboard import SimBoard, board_address, new_key

_EVENTS: list[tuple] | None = None  # set while a test records file events


def _audit(event: str, args: tuple) -> None:
    if _EVENTS is not None and event in ("open", "os.chmod"):
        _EVENTS.append((event, *args[:3]))


sys.addaudithook(_audit)  # audit hooks cannot be removed: it records only when asked


@contextlib.contextmanager
def recorded(umask: int = 0):
    """File opens and chmods (Python's audit events) under a wide-open umask: a file
    not created with mode 0600 shows its umask-given mode, or a chmod after it."""
    global _EVENTS
    events: list[tuple] = []
    old = os.umask(umask)
    _EVENTS = events
    try:
        yield events
    finally:
        _EVENTS = None
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _touching(events, path) -> list[tuple]:
    """Events on `path` or on a temporary sibling of it (`.name.<pid>.tmp`)."""
    name = os.path.basename(path)
    out = []
    for ev in events:
        target = ev[1]
        if isinstance(target, (str, bytes, os.PathLike)):
            base = os.path.basename(os.fsdecode(target))
            if base == name or (base.startswith(f".{name}.") and base.endswith(".tmp")):
                out.append(ev)
    return out


def test_secret_files_are_0600_from_the_moment_they_exist(tmp_path):
    home = tmp_path / "gw"
    with recorded() as events:
        init_home(home, mqtt_port=18830, api_port=18831)
        allowlist.add_board(home / "gateway.toml", board_address(new_key()), None)
        new_release_key(tmp_path / "release.key")
    passwd = home / "mosquitto" / "passwd"
    group = mosquitto_conf.broker_group()
    want = {
        home / "gateway.secret": 0o600,
        home / OTA_SECRET: 0o600,
        tmp_path / "release.key": 0o600,
        passwd: 0o640 if group is not None else 0o600,
    }
    for path, mode in want.items():
        assert _mode(path) == mode, f"{path}: {oct(_mode(path))}"
        touching = _touching(events, path)
        creates = [ev for ev in touching if ev[0] == "open" and ev[3] & os.O_CREAT]
        assert creates, f"{path}: no create seen"
        for ev in creates:
            # os.open (mode None in the event) with O_EXCL: created with its mode,
            # never an existing file reused, never write_text (mode "w").
            assert ev[2] is None and ev[3] & os.O_EXCL, f"{path}: created by {ev}"
        chmods = [ev for ev in touching if ev[0] == "os.chmod"]
        assert not chmods, f"{path}: chmod after the write: {chmods}"
    if group is not None:
        assert os.stat(passwd).st_gid == group


def test_write_secret_never_overwrites_when_asked_not_to(tmp_path):
    path = tmp_path / "key"
    secretfile.write_secret(path, "first\n", replace=False)
    with pytest.raises(TerrapinError, match="not overwriting"):
        secretfile.write_secret(path, "second\n", replace=False)
    assert path.read_text() == "first\n" and _mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key"]  # no temporary file left
    with pytest.raises(TerrapinError, match="not overwriting"):
        new_release_key(path)


def test_device_add_takes_no_password_on_the_command_line(gw_home, tmp_path, monkeypatch):
    cfg = str(gw_home.config_path)
    passwd = gw_home.dir / "mosquitto" / "passwd"
    run = CliRunner().invoke
    help_text = run(gateway_cli, ["device", "add", "--help"]).output
    assert "TERRAPIN_BOARD_PASSWORD" in help_text and "--password-file" in help_text
    assert "--password TEXT" not in help_text
    a, b, c = (board_address(new_key()).hex() for _ in range(3))
    refused = run(gateway_cli, ["device", "add", a, "--password", "pw-in-ps", "--config", cfg])
    assert isinstance(refused.exception, TerrapinError)
    assert "command line" in str(refused.exception) and a not in mosquitto_conf.read_passwd(passwd)
    # From a file (its first line) ...
    pw_file = tmp_path / "pw"
    pw_file.write_text("from-a-file\nignored\n")
    out = run(gateway_cli, ["device", "add", a, "--password-file", str(pw_file), "--config", cfg])
    assert out.exit_code == 0, out.output
    assert mosquitto_conf.check_password("from-a-file", mosquitto_conf.read_passwd(passwd)[a])
    # ... or from the environment ...
    monkeypatch.setenv("TERRAPIN_BOARD_PASSWORD", "from-the-env")
    assert run(gateway_cli, ["device", "add", b, "--config", cfg]).exit_code == 0
    assert mosquitto_conf.check_password("from-the-env", mosquitto_conf.read_passwd(passwd)[b])
    # ... else a new random one.
    monkeypatch.delenv("TERRAPIN_BOARD_PASSWORD")
    assert run(gateway_cli, ["device", "add", c, "--config", cfg]).exit_code == 0
    assert not mosquitto_conf.check_password("from-the-env", mosquitto_conf.read_passwd(passwd)[c])


def _commands(group: click.Group, ctx: click.Context):
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, click.Context(cmd, parent=ctx))
        elif cmd is not None:
            yield f"{ctx.command_path} {name}", cmd


def test_no_command_takes_a_secret_as_a_command_line_value():
    from terrapin.tools.cli.main import cli

    ctx = click.Context(cli, info_name="terrapin")
    secret_words = ("password", "secret", "private")
    offenders = []
    for path, cmd in _commands(cli, ctx):
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.is_flag or p.hidden:
                continue
            name = max(p.opts, key=len)
            takes_a_value = not name.endswith(("-file", "-env"))
            if takes_a_value and any(w in name for w in secret_words):
                offenders.append(f"{path} {name}")
    assert not offenders, offenders


def test_re_adding_a_live_board_never_locks_it_out(gw_home, gw_broker, gw_running, gw_tools):
    """The attack: `device add` run again for an allowed board (a second operator, a
    script run twice). Before, it replaced the password and, at the next broker
    reload, the live board could no longer log in."""
    key, password = gw_home.add_sim_board()
    addr = board_address(key).hex()
    gw_tools.reload_broker(gw_broker)
    cfg = str(gw_home.config_path)
    again = CliRunner().invoke(gateway_cli, ["device", "add", addr, "--config", cfg])
    assert isinstance(again.exception, TerrapinError), again.output
    assert "already allowed" in str(again.exception) and "--rotate-password" in str(
        again.exception.hint
    )
    gw_tools.reload_broker(gw_broker)
    board = SimBoard("127.0.0.1", gw_home.mqtt_port, key, password=password).start()
    try:
        board.publish(board.envelope(1), 1)
        assert board.wait_settled([1], 10), "the board lost its broker login"
    finally:
        board.stop()
    # Asked for, the rotation happens: the new password works, the old one no more.
    rotated = CliRunner().invoke(
        gateway_cli, ["device", "add", addr, "--rotate-password", "--json", "--config", cfg]
    )
    assert rotated.exit_code == 0, rotated.output
    gw_tools.reload_broker(gw_broker)
    stale = SimBoard("127.0.0.1", gw_home.mqtt_port, key, password=password)
    try:
        with pytest.raises(TimeoutError):
            stale.start(3)
    finally:
        stale.stop()
