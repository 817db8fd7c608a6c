"""Socket errno values by platform (issue 18: mqtt.py hard-coded Linux's 11, 115,
110; an ESP32's newlib says 119 for EINPROGRESS and 116 for ETIMEDOUT, so a
would-block on a write dropped the session on a real board)."""

from __future__ import annotations

import errno
import socket
import time

import pytest

from terrapin.firmware import mqtt, sockerr
from terrapin.firmware.mqtt import MQTTClient, MQTTError

ESP32 = {"EAGAIN": 11, "EINPROGRESS": 119, "ETIMEDOUT": 116, "ECONNRESET": 104, "EISCONN": 127}
LINUX = {"EAGAIN": 11, "EINPROGRESS": 115, "ETIMEDOUT": 110, "ECONNRESET": 104, "EISCONN": 106}


@pytest.mark.parametrize(("platform", "values"), [("esp32", ESP32), ("linux", LINUX)])
def test_each_platform_has_its_own_numbers(platform, values):
    for name, number in values.items():
        assert sockerr.value(name, platform) == number, name
    busy = sockerr.busy(platform)
    assert set(busy) >= {values["EAGAIN"], values["EINPROGRESS"], values["ETIMEDOUT"]}
    assert values["ECONNRESET"] not in busy


def test_a_number_busy_on_one_platform_is_not_busy_on_the_other():
    esp32, linux = sockerr.busy("esp32"), sockerr.busy("linux")
    assert sockerr.blocked(OSError(119), esp32) and not sockerr.blocked(OSError(119), linux)
    assert sockerr.blocked(OSError(116), esp32) and not sockerr.blocked(OSError(116), linux)
    assert sockerr.blocked(OSError(115), linux) and not sockerr.blocked(OSError(115), esp32)
    assert not sockerr.blocked(OSError(104), esp32) and not sockerr.blocked(ValueError(), esp32)


def test_where_it_runs_the_errno_module_names_win():
    assert sockerr.value("EINPROGRESS") == errno.EINPROGRESS
    assert sockerr.ETIMEDOUT == errno.ETIMEDOUT and errno.EINPROGRESS in sockerr.BUSY


def test_the_unix_port_takes_its_errno_module_values(run_mp, tmp_path):
    script = tmp_path / "errs.py"
    script.write_text(
        "import errno\n"
        "from firmware import sockerr\n"
        "print(sockerr.value('EINPROGRESS') == errno.EINPROGRESS,\n"
        "      sockerr.ETIMEDOUT == errno.ETIMEDOUT)\n"
        "print(sockerr.EISCONN)  # the unix port's errno has no EISCONN: the table's\n"
        "e = sockerr.busy('esp32')\n"
        "print(sockerr.blocked(OSError(119), e), sockerr.blocked(OSError(116), e),\n"
        "      sockerr.blocked(OSError(104), e))\n"
    )
    assert run_mp(script) == ["True True", "106", "True True False"]


class WouldBlockOnce:
    """The first write raises `code` (what lwIP says when its send buffer is full)."""

    def __init__(self, write, code: int):
        self.real = write
        self.code = code

    def __call__(self, data):
        if self.code:
            code, self.code = self.code, 0
            raise OSError(code)
        return self.real(data)


@pytest.mark.mosquitto
@pytest.mark.parametrize(("platform", "code"), [("esp32", 119), ("esp32", 116), ("linux", 115)])
def test_a_would_block_write_keeps_the_session(mosquitto, monkeypatch, platform, code):
    monkeypatch.setattr(mqtt, "_BUSY", sockerr.busy(platform))
    acks: list[int] = []
    c = MQTTClient("errno-" + platform, on_puback=acks.append)
    c.connect(socket.create_connection((mosquitto.host, mosquitto.port)))
    c.write = WouldBlockOnce(c.write, code)
    pid = c.publish(b"t/errno", b"x", 1)
    deadline = time.time() + 5
    while pid not in acks and time.time() < deadline:
        c.poll(50)
    assert pid in acks and c.connected
    c.close()


@pytest.mark.mosquitto
def test_a_reset_still_breaks_the_session(mosquitto, monkeypatch):
    monkeypatch.setattr(mqtt, "_BUSY", sockerr.busy("esp32"))
    c = MQTTClient("errno-reset")
    c.connect(socket.create_connection((mosquitto.host, mosquitto.port)))
    c.write = WouldBlockOnce(c.write, 104)
    with pytest.raises(MQTTError, match="write"):
        c.publish(b"t/errno", b"x", 1)
