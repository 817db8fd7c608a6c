"""Deeply nested JSON never crashes the board (issue 14): a config, an OTA
manifest or offer, a console line nested a thousand levels deep is refused
with a clear error, and the board carries on. Pure parts on CPython and on the
unix port; the app itself with its console on the unix port at an ESP32 heap."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from terrapin.firmware import jsonsafe
from terrapin.tools.board.serialconsole import BoardConsole, BoardError, Link, open_port
from terrapin.tools.devkit.virtualboard import VirtualBoard
from terrapin.tools.micropython import ESP32_HEAP

DEEP_OBJECT = '{"a":' * 1000 + "1" + "}" * 1000
DEEP_LIST = "[" * 20000 + "]" * 20000


def test_depth_counts_brackets_outside_strings():
    assert jsonsafe.depth('{"a": [1, {"b": "[[[{{{"}]}') == 3
    assert jsonsafe.depth(b'["\\"[[[", 1]') == 1
    assert jsonsafe.depth("1") == 0


@pytest.mark.parametrize("text", [DEEP_OBJECT, DEEP_LIST, "[" * 9 + "]" * 9])
def test_too_deep_is_a_value_error_with_a_reason(text):
    with pytest.raises(jsonsafe.JSONError, match="nested deeper than 8 levels"):
        jsonsafe.loads(text)


def test_what_the_board_reads_still_parses():
    cfg = {"sensors": [{"driver": "bme280", "pins": {"sda": 21, "scl": 22}}], "wifi": {"s": "["}}
    assert jsonsafe.loads(json.dumps(cfg)) == cfg
    with pytest.raises(ValueError, match="not valid JSON"):
        jsonsafe.loads("{nope")


def test_on_the_unix_port_nothing_escapes(run_mp, tmp_path):
    script = tmp_path / "deep.py"
    script.write_text(
        "from firmware import jsonsafe\n"
        f"for text in ({DEEP_OBJECT!r}, '[' * 20000 + ']' * 20000, '{{nope'):\n"
        "    try:\n"
        "        jsonsafe.loads(text)\n"
        "    except ValueError as exc:\n"
        "        print('refused', exc.args[0])\n"
        "print(jsonsafe.loads('{\"a\": [1, 2]}'))\n"
    )
    lines = run_mp(script)
    assert lines[:2] == ["refused nested deeper than 8 levels"] * 2, lines
    assert lines[2].startswith("refused not valid JSON") and lines[3] == "{'a': [1, 2]}", lines


def app_board(flash, config: str, heapsize: str = ESP32_HEAP, console=True) -> VirtualBoard:
    flash.mkdir()
    (flash / "config.json").write_text(config)
    return VirtualBoard(
        flash,
        script=flash / "main.py",
        args=("--config", "config.json", "--flash", ".") + (("--console",) if console else ()),
        tcp_port=None,
        heapsize=heapsize,
        restart=console,  # console mode is a reboot away (the `console` command)
    ).start()


def test_a_deeply_nested_config_is_a_config_error_not_a_crash(tmp_path, micropython_exe):
    """The app's config-error path (exit 2, 'fix /config.json' on an ESP32), with
    the reason; before, json.loads's MemoryError escaped as a traceback."""
    vb = app_board(tmp_path / "flash", DEEP_OBJECT, console=False)  # with it: console mode
    try:
        assert vb.wait_exit(60) == 2, vb.console_log()[-2000:]
        log = vb.console_log()
        assert "config: config is not valid JSON: nested deeper than 8 levels" in log, log[-2000:]
        assert "Traceback" not in log, log[-2000:]
    finally:
        vb.stop()


def test_a_deeply_nested_config_over_the_console_is_refused(tmp_path, micropython_exe):
    cfg = json.dumps({"broker": {"host": "127.0.0.1", "port": 9}, "sample_period_s": 3600})
    # The chunked config commands (console mode, where the client takes the app).
    vb = app_board(tmp_path / "flash", cfg)
    link = Link(open_port(vb.pty_path))
    try:
        con = BoardConsole(link)
        assert con.wait_ready(60)["proto"] == 1
        raw = DEEP_OBJECT.encode()  # 6 KB: the chunked transfer, as `device provision` sends it
        con.request("config-begin")
        for i in range(0, len(raw), 600):
            con.request("config-chunk", base64.b64encode(raw[i : i + 600]).decode())
        with pytest.raises(BoardError) as err:
            con.request("config-end", hashlib.sha256(raw).hexdigest(), timeout=30)
        assert err.value.code == "BAD_CONFIG" and "nested deeper" in err.value.text
        with pytest.raises(BoardError) as err:  # and one level too deep in one line
            con.request("config-set", base64.b64encode(b'{"a":' * 9 + b"1" + b"}" * 9).decode())
        assert err.value.code == "BAD_CONFIG" and "nested deeper" in err.value.text
        assert con.request("info")["proto"] == 1  # and the board carries on
        assert con.switched and vb.exit_codes == [3], vb.console_log()[-2000:]  # `console` only
        assert (
            json.loads((tmp_path / "flash" / "config.json").read_text())["sample_period_s"] == 3600
        )
    finally:
        link.close()
        vb.stop()
