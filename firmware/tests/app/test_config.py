"""Config validation: every problem is a message a person can act on; secrets never echoed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from terrapin.firmware import config

GOOD = {"broker": {"host": "gw.local", "port": 1883}, "sensors": [{"driver": "simulated"}]}


def check(over: dict, board: str = "unix") -> tuple[dict, list, list, list]:
    cfg = json.loads(json.dumps(GOOD))
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return config.parse(json.dumps(cfg), board)


def test_good_config_gets_defaults() -> None:
    data, errors, sensor_errors, warnings = check({})
    assert errors == sensor_errors == warnings == []
    assert data["broker"]["tls"] is False and data["broker"]["keepalive_s"] == 60
    assert data["outbox"] == {"max_bytes": 65536, "segment_bytes": 4096}
    assert data["sample_period_s"] == 60 and data["window"] == 8


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"broker": {"host": ""}}, "broker.host can't be empty"),
        ({"broker": {"port": 0}}, "broker.port must be a whole number from 1 to 65535 (got 0)"),
        (
            {"broker": {"port": "1883"}},
            'broker.port must be a whole number from 1 to 65535 (got "1883")',
        ),
        ({"broker": {"tls": "yes"}}, 'broker.tls must be true or false (got "yes")'),
        ({"broker": {"password": "pw"}}, "broker.password is set but broker.user is not"),
        ({"sample_period_s": -5}, "sample_period_s must be a number from 0.001 to 86400 (got -5)"),
        ({"ack_timeout_s": "30"}, "ack_timeout_s must be a number"),
        ({"window": 100}, "window must be a whole number from 1 to 64 (got 100)"),
        ({"log": "verbose"}, 'log must be one of error, info, debug (got "verbose")'),
        (
            {"outbox": {"segment_bytes": 100}},
            "outbox.segment_bytes must be a whole number from 2048",
        ),
        ({"sensors": []}, "sensors must be a list with at least one sensor"),
        ({"broker": 5}, "broker must be an object {...}"),
    ],
)
def test_fatal_errors_are_named(over: dict, message: str) -> None:
    _data, errors, _s, _w = check(over)
    assert any(message in e for e in errors), errors


def test_esp32_needs_wifi_and_checks_lengths() -> None:
    _d, errors, _s, _w = check({}, board="esp32")
    assert "wifi.ssid can't be empty" in errors
    _d, errors, _s, _w = check({"wifi": {"ssid": "x" * 33, "password": "short"}}, board="esp32")
    assert "wifi.ssid can't be longer than 32 characters" in errors
    assert "wifi.password must be at least 8 characters" in errors
    _d, errors, _s, _w = check({"wifi": {"ssid": "home", "password": "longenough"}}, "esp32")
    assert errors == []


def test_secrets_are_never_echoed() -> None:
    secret = "s3cr3t-password-value"
    _d, errors, _s, _w = check({"broker": {"user": 12, "password": 12345}})
    _d2, errors2, _s2, _w2 = check({"wifi": {"ssid": "x", "password": "abc"}}, "esp32")
    _d3, errors3, _s3, _w3 = check({"broker": {"user": "u", "password": secret * 10}})
    text = " ".join(errors + errors2 + errors3)
    assert "12345" not in text and "abc" not in text and secret not in text
    assert "broker.password must be text" in text
    assert "broker.password can't be longer than 128 characters" in text


def test_sensor_problems_leave_out_that_sensor_only() -> None:
    data, errors, sensor_errors, warnings = check(
        {
            "sensors": [
                {"driver": "bme280", "sda": 21, "scl": 22, "addr": 0x76},
                {"driver": "bme280", "sda": 21},
                {"driver": "sht3x", "sda": 21, "scl": 22, "addr": 300},
                {"driver": "warp"},
                {"driver": "simulated", "colour": "red"},
                {"driver": "simulated"},
            ]
        }
    )
    assert errors == []
    assert [s["driver"] for s in data["sensors"]] == ["bme280", "simulated"]
    assert 'sensors[1] (bme280) needs "scl" (the GPIO number it is wired to)' in sensor_errors
    assert any("sensors[2] (sht3x).addr must be a whole number" in e for e in sensor_errors)
    assert any("sensors[3]: unknown driver" in e for e in sensor_errors)
    assert any('another sensor is also called "simulated"' in e for e in sensor_errors)
    assert "sensors[4] (simulated): unknown key colour ignored" in warnings


def test_not_json_and_missing_file(tmp_path) -> None:
    assert config.parse("{nope")[1][0].startswith("config is not valid JSON")
    assert config.parse("[1]")[1] == ["config must be a JSON object {...}"]
    assert "not found" in config.load(str(tmp_path / "missing.json"))[1][0]


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(sorted(config.DEFAULTS) + ["x"]),
        st.none()
        | st.integers()
        | st.text()
        | st.floats()
        | st.booleans()
        | st.lists(st.integers(), max_size=2),
    )
)
def test_any_json_object_gives_messages_not_exceptions(over: dict) -> None:
    data, errors, sensor_errors, warnings = config.validate(over)
    for msg in errors + sensor_errors + warnings:
        assert isinstance(msg, str) and msg


def test_serial_uplink_replaces_wifi_on_esp32() -> None:
    data, errors, _, warnings = check({"serial_uplink": {"uart": 2, "tx": 25, "rx": 26}}, "esp32")
    assert errors == [] and warnings == []  # no wifi.ssid needed: the UART is the uplink
    assert data["serial_uplink"] == {"uart": 2, "baud": 115200, "tx": 25, "rx": 26, "rxbuf": 4096}
    assert "serial_uplink" not in check({})[0]  # WiFi (or the unix port's TCP) by default


def test_serial_uplink_pins_are_required_on_esp32() -> None:
    # The default pins are the flash (UART1) or a WROVER's PSRAM (UART2).
    _, errors, _, _ = check({"serial_uplink": {"uart": 1, "tx": 25}}, "esp32")
    assert errors == ["serial_uplink.rx must name the GPIO wired to the host (e.g. 25, 26)"]
    _, errors, _, _ = check({"serial_uplink": {"uart": 1}})  # the unix port has no pins
    assert errors == []


def test_serial_uplink_on_uart0_shares_the_repl_uart() -> None:
    # No pins: UART0's are the REPL's (sharedline.py: frames beside the console).
    data, errors, _, warnings = check({"serial_uplink": {"uart": 0}}, "esp32")
    assert errors == [] and warnings == []
    assert data["serial_uplink"]["uart"] == 0


@pytest.mark.parametrize(
    ("uplink", "message"),
    [
        ("uart1", 'serial_uplink must be an object like {"uart": 1, "tx": 25, "rx": 26}'),
        ({"uart": 3}, "serial_uplink.uart must be a whole number from 0 to 2 (got 3)"),
        ({"uart": 0}, "serial_uplink.tx must not be set with uart 0 (the REPL UART's pins)"),
        ({"baud": 300}, "serial_uplink.baud must be a whole number from 9600 to 2000000 (got 300)"),
        ({"rx": 99}, "serial_uplink.rx must be a whole number from 0 to 48 (got 99)"),
        ({"rxbuf": 16}, "serial_uplink.rxbuf must be a whole number from 256 to 32768 (got 16)"),
    ],
)
def test_serial_uplink_errors_are_named(uplink: object, message: str) -> None:
    if isinstance(uplink, dict):
        uplink = {"tx": 25, "rx": 26, **uplink}
    _, errors, _, _ = check({"serial_uplink": uplink}, "esp32")
    assert message in errors


def test_serial_uplink_unknown_key_is_a_warning() -> None:
    uplink = {"uart": 1, "tx": 25, "rx": 26, "buad": 9600}
    _, errors, _, warnings = check({"serial_uplink": uplink}, "esp32")
    assert errors == [] and warnings == [
        "unknown key serial_uplink.buad ignored; did you mean serial_uplink.baud?"
    ]
