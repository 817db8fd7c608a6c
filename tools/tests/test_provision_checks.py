"""`terrapin device provision` checks every input before it touches a board: the board
config against the firmware's own schema, the gateway config, the broker address a real
board gets, secrets without a terminal. And `gateway init` finds the LAN address."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from terrapin.firmware import config as board_config
from terrapin.firmware.config import suggest
from terrapin.gateway.config import load_config
from terrapin.gateway.errors import ConfigError
from terrapin.gateway.home import is_loopback, lan_address
from terrapin.tools.board.hostconfig import host_problems
from terrapin.tools.board.provision import check_broker_host
from terrapin.tools.cli.main import main
from terrapin.tools.micropython import ESP32_HEAP

PROVISION = [sys.executable, "-m", "terrapin.tools.cli.main", "device", "provision"]
EXAMPLE = Path(board_config.__file__).with_name("config.example.json")


def nowhere(tmp_path: Path) -> str:
    """A port that does not exist: reaching the board would fail with "does not exist"."""
    return str(tmp_path / "ttyNONE")


def test_bad_board_config_is_refused_before_the_board(tmp_path: Path, capsys) -> None:
    bad = json.loads(EXAMPLE.read_text())
    bad["broker"]["port"] = "1883x"
    bad["sensors"][0]["driver"] = "bme208"
    bad["sampel_period_s"] = bad.pop("sample_period_s")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    code = main(["device", "provision", "--port", nowhere(tmp_path), "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "does not exist" not in err  # refused before the port was opened
    assert 'broker.port must be a whole number from 1 to 65535 (got "1883x")' in err
    assert "unknown driver" in err and "did you mean bme280?" in err
    assert "unknown key sampel_period_s; did you mean sample_period_s?" in err
    assert "nothing was written to the board" in err


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"brokr": {"host": "gw"}}, "did you mean broker?"),
        ({"broker": {"hots": "gw"}}, "unknown key broker.hots; did you mean broker.host?"),
        ({"broker": {"port": 0}}, "broker.port must be a whole number"),
        ({"sensors": [{"driver": "adc"}]}, 'needs "pin"'),
        ({"sensors": [{"driver": "adc", "pin": 3, "devider": 2}]}, "did you mean divider?"),
        ({"log": "verbose"}, "log must be one of"),
        ({"window": "8"}, "window must be a whole number"),
    ],
)
def test_host_refuses_what_the_board_would(given: dict, words: str) -> None:
    problems = host_problems(given)
    assert any(words in p for p in problems), problems


def test_a_partial_config_is_checked_only_for_what_it_writes() -> None:
    # The board keeps its other keys: a WiFi-only config is not "missing a broker".
    assert host_problems({"wifi": {"ssid": "home", "password": "12345678"}}) == []
    assert host_problems(json.loads(EXAMPLE.read_text())) == []
    assert suggest("zzzz", ["broker", "wifi"]) is None


def test_the_board_warns_with_the_same_suggestion() -> None:
    _data, errors, _sensor, warnings = board_config.validate({"brokr": {}, "broker": {"host": "h"}})
    assert errors == [] and warnings == ["unknown key brokr ignored; did you mean broker?"]


def test_missing_gateway_config_names_the_right_flag(tmp_path: Path, capsys) -> None:
    argv = ["device", "provision", "--port", nowhere(tmp_path)]
    argv += ["--gateway-config", str(tmp_path / "missing.toml")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no gateway config" in err and "does not exist" not in err
    assert "--gateway-config DIR/gateway.toml" in err


def test_loopback_broker_is_refused_for_a_real_board(tmp_path: Path, capsys) -> None:
    argv = ["gateway", "init", "--dir", str(tmp_path / "gw"), "--public-host", "127.0.0.1"]
    assert main(argv) == 0
    capsys.readouterr()
    cfg = tmp_path / "gw" / "gateway.toml"
    assert load_config(cfg).broker.public_host == ""
    argv = ["device", "provision", "--port", nowhere(tmp_path), "--gateway-config", str(cfg)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "broker host 127.0.0.1 is the board itself" in err and "public_host" in err
    argv = ["device", "provision", "--port", nowhere(tmp_path), "--broker", "localhost:1883"]
    assert main(argv) == 2
    assert "broker host localhost is the board itself" in capsys.readouterr().err
    check_broker_host({"broker": {"host": "127.0.0.1"}}, virtual=True)  # a virtual board: fine
    with pytest.raises(ConfigError):
        check_broker_host({"broker": {"host": "::1"}}, virtual=False)
    assert not is_loopback("192.168.1.20") and not is_loopback("gw.local")


def test_init_writes_a_listener_boards_reach(tmp_path: Path, capsys) -> None:
    argv = ["gateway", "init", "--dir", str(tmp_path), "--mqtt-port", "18999"]
    assert main([*argv, "--public-host", "10.1.2.3"]) == 0
    assert "boards connect to 10.1.2.3:18999" in capsys.readouterr().out
    assert load_config(tmp_path / "gateway.toml").broker.public_host == "10.1.2.3"
    conf = (tmp_path / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    assert "listener 18999 127.0.0.1" in conf  # local tools keep theirs
    board = conf.index("listener 18999 10.1.2.3")
    # Listener options are per listener: the board's has the same client-id rule.
    assert conf[board + 1] == "use_username_as_clientid true"


def test_init_finds_this_machines_lan_address(tmp_path: Path, capsys) -> None:
    found = lan_address()
    assert main(["gateway", "init", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr()
    public = load_config(tmp_path / "gateway.toml").broker.public_host
    if found is None:  # a machine without a default route
        assert public == "" and "--public-host" in out.err
        return
    assert public == found and not is_loopback(found)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((found, 0))  # an address of this machine's, not a guess


def test_no_terminal_and_no_password_variable_names_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRAPIN_")}
    proc = subprocess.run(
        [*PROVISION, "--port", nowhere(tmp_path), "--wifi-ssid", "home"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        start_new_session=True,  # no controlling terminal, as under cron or CI
    )
    assert proc.returncode == 2, proc.stderr
    assert "set $TERRAPIN_WIFI_PASSWORD" in proc.stderr
    assert "GetPassWarning" not in proc.stderr and "aborted" not in proc.stderr
    # No prompt to nobody: the error is the first thing said (no "Password input may be
    # echoed", no "WiFi password:" written to a pipe).
    assert proc.stderr.startswith("error: WiFi password is needed"), proc.stderr
    assert "echoed" not in proc.stderr, proc.stderr


@pytest.mark.anvil
def test_an_unfunded_payer_is_refused_before_the_board(
    anvil_exe, tmp_path: Path, capsys, monkeypatch
) -> None:
    from eth_account import Account

    from terrapin.tools.devkit import chainkit

    node = chainkit.Anvil(anvil_exe, tmp_path).start()
    try:
        registry = chainkit.deploy_on_rpc(node.url).registry
        monkeypatch.setenv("TP_EMPTY_KEY", Account.create().key.to_0x_hex())
        argv = ["device", "provision", "--port", nowhere(tmp_path), "--owner", "0x" + "ab" * 20]
        argv += ["--contract", registry, "--rpc", node.url, "--key-env", "TP_EMPTY_KEY"]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "has no funds on chain 31337" in err and "does not exist" not in err
    finally:
        node.stop()


@pytest.mark.micropython
def test_the_board_and_the_host_give_the_same_answers(micropython_exe: str) -> None:
    """The config schema on the MicroPython unix port (100 KB heap) and on CPython."""
    from terrapin.firmware import config as configschema

    cases = [
        {"brokr": {}, "broker": {"host": "h", "port": "1883x"}},
        {"broker": {"hots": "g"}, "sensors": [{"driver": "bme208"}]},
        json.loads(EXAMPLE.read_text()),
    ]
    script = (
        "import sys, json\n"
        f"sys.path.insert(0, {str(EXAMPLE.parent.parent)!r})\n"
        "from firmware import config as c\n"  # a package, as on the board
        "cases = json.loads(sys.stdin.read())\n"
        "print(json.dumps([c.validate(x, 'esp32')[1:] for x in cases]))\n"
    )
    board = subprocess.run(
        [micropython_exe, "-X", f"heapsize={ESP32_HEAP}", "-c", script],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert board.returncode == 0, board.stderr
    host = [list(configschema.validate(json.loads(json.dumps(x)), "esp32")[1:]) for x in cases]
    assert json.loads(board.stdout) == json.loads(json.dumps(host))
    # What the host refuses is built from those same answers (tools/board/hostconfig.py).
    assert any("did you mean broker.host" in p for p in host_problems(cases[1]))
    assert "did you mean bme280?" in board.stdout
