"""Console mode (issue 18, the heap budget): the running app answers only `info`,
`reboot` and `console` on its TP1 console; every other command is answered
`CONSOLE_MODE`, and the host's client reboots the board into console mode (the
whole console, no app) and asks again. A board without a usable config opens
console mode by itself, so a fresh board can be provisioned. The deployed
firmware on the unix port behind a pseudo-terminal, driven by the host's own
TP1 client (tools/board/serialconsole.py)."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from terrapin.tools.board.serialconsole import BoardConsole, BoardError, Link, open_port
from terrapin.tools.devkit.virtualboard import VirtualBoard
from terrapin.tools.micropython import micropython_command

pytestmark = pytest.mark.micropython

QUIET = {"broker": {"host": "127.0.0.1", "port": 9}, "sample_period_s": 3600}


def app_board(flash: Path, config: dict | None) -> VirtualBoard:
    flash.mkdir()
    if config is not None:
        (flash / "config.json").write_text(json.dumps(config))
    return VirtualBoard(
        flash,
        script=flash / "main.py",
        args=("--config", "config.json", "--flash", ".", "--console"),
        tcp_port=None,
    ).start()


def test_the_running_app_leaves_provisioning_to_console_mode(tmp_path, micropython_exe):
    vb = app_board(tmp_path / "flash", QUIET)
    link = Link(open_port(vb.pty_path))
    try:
        con = BoardConsole(link, reboot_timeout=30)
        info = con.wait_ready(60)
        assert info["mode"] == "app" and info["proto"] == 1 and info["addr"], info
        assert info["config"] == ["broker", "sample_period_s"] and info["provisioning"], info
        # What the app answers itself: it never reboots for these.
        with pytest.raises(BoardError) as err:
            con._request("config-set", base64.b64encode(b'{"log": "debug"}').decode())
        assert err.value.code == "CONSOLE_MODE" and "console" in err.value.text
        assert vb.boots == 1
        # The client takes the board into console mode and asks again.
        answer = con.request("config-set", base64.b64encode(b'{"log": "debug"}').decode())
        assert answer["keys"] == ["broker", "log", "sample_period_s"], answer
        assert con.switched and vb.boots == 2 and vb.exit_codes == [3]
        info = con.request("info")
        assert info["mode"] == "console" and info["addr"] == con.request("keygen")["addr"]
        assert con.request("keygen")["created"] is False  # the key the app made stays
        # The flag held one boot: back to the app, which runs the new config.
        con.leave_console_mode()
        info = con.wait_ready(60)
        while info.get("mode") != "app":
            info = con.wait_ready(60)
        assert info["config"] == ["broker", "log", "sample_period_s"], info
        assert vb.boots == 3 and not (tmp_path / "flash" / "console_mode").exists()
    finally:
        link.close()
        vb.stop()


def test_a_board_without_a_config_opens_console_mode_for_provisioning(
    tmp_path, micropython_exe
):
    """A fresh board (no config.json): before, the app stopped and nothing answered
    TP1. Now console mode answers, keygen and config work, and a reboot runs the app."""
    vb = app_board(tmp_path / "flash", None)
    link = Link(open_port(vb.pty_path))
    try:
        con = BoardConsole(link)
        info = con.wait_ready(60)
        assert info["mode"] == "console" and info["addr"] is None and info["config"] is None
        made = con.request("keygen")
        assert made["created"] is True
        con.request("config-set", base64.b64encode(json.dumps(QUIET).encode()).decode())
        assert not con.switched  # already in console mode: no reboot for these
        con.request("done")  # provisioned: the trust config is locked from here on
        con.request("reboot")
        info = con.wait_ready(60)
        while info.get("mode") != "app":
            info = con.wait_ready(60)
        assert info["addr"] == made["addr"] and vb.boots == 2 and not info["provisioning"]
        # The attack: someone on the serial line takes the running board into
        # console mode to point it at their own broker. Console mode keeps the lock.
        evil = base64.b64encode(b'{"broker": {"host": "10.6.6.6"}}').decode()
        with pytest.raises(BoardError) as err:
            con.request("config-set", evil)
        assert err.value.code == "LOCKED" and con.switched, err.value
        with pytest.raises(BoardError) as err:
            con.request("sign-bind", "0x" + "11" * 20, "0", "1", "0x" + "22" * 20)
        assert err.value.code == "DENIED", err.value
        assert json.loads((tmp_path / "flash" / "config.json").read_text())["broker"] == {
            "host": "127.0.0.1",
            "port": 9,
        }
    finally:
        link.close()
        vb.stop()


def test_console_mode_goes_back_to_the_app_when_the_host_goes_quiet(tmp_path):
    """console.main with a short quiet limit: the board resets (into the app) by
    itself when nobody speaks, but not while the app cannot run (`stay`)."""
    from terrapin.tools.board.deploy import DirTarget, deploy

    deploy(DirTarget(tmp_path))
    script = (
        "import sys\nsys.path.insert(0, 'lib')\n"
        "from terrapin.firmware import console\n"
        "class Board:\n"
        "    root = '.'\n    config_path = 'config.json'\n"
        "    def flash_ready(self): pass\n"
        "    def feed(self): pass\n"
        "    def heap_free(self): return 0\n"
        "    def reset(self): raise SystemExit(3)\n"
        "console.main(Board(), sys.argv[1] == 'stay', 300)\n"
    )
    (tmp_path / "quiet.py").write_text(script)
    for stay, code in (("go", 3), ("stay", None)):
        proc = subprocess.Popen(
            micropython_command("quiet.py", stay),
            cwd=tmp_path,
            stdin=subprocess.PIPE,  # open and silent: a host that stopped talking
            stdout=subprocess.PIPE,
        )
        try:
            got = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            got = None
        finally:
            proc.kill()
            out = proc.communicate()[0]
        assert got == code, (stay, got, out[-300:])
        assert b'TP1 EV {"state": "console"' in out
