"""Serial port listing and choice, fed with pyserial's own ListPortInfo objects."""

from __future__ import annotations

import json

import pytest
from serial.tools import list_ports
from serial.tools.list_ports_common import ListPortInfo

from terrapin.gateway.errors import TerrapinError
from terrapin.tools.board.ports import choose_port, describe
from terrapin.tools.cli.main import main


def port(device: str, vid: int | None = None, pid: int | None = None, desc: str = "n/a"):
    info = ListPortInfo(device, skip_link_detection=True)
    info.vid, info.pid, info.description = vid, pid, desc
    return info


UART = port("/dev/ttyS0")
CP2102 = port("/dev/ttyUSB0", 0x10C4, 0xEA60, "CP2102 USB to UART Bridge Controller")
CH340 = port("/dev/ttyUSB1", 0x1A86, 0x7523, "USB Serial")
S3 = port("/dev/ttyACM0", 0x303A, 0x1001, "USB JTAG/serial debug unit")
ARDUINO = port("/dev/ttyACM1", 0x2341, 0x0043, "Arduino Uno")


@pytest.mark.parametrize("infos", [[UART, CP2102], [CH340, ARDUINO], [S3, UART, ARDUINO]])
def test_the_one_esp32_like_port_is_chosen(infos) -> None:
    ports = describe(infos)
    chosen = choose_port(ports)
    assert chosen.bridge and chosen.device in {i.device for i in infos}
    assert [p.device for p in ports] == sorted(i.device for i in infos)


def test_ids_and_labels() -> None:
    (cp,) = describe([CP2102])
    assert cp.usb_id == "10c4:ea60" and cp.bridge == "CP210x"
    assert cp.label() == (
        "/dev/ttyUSB0 (10c4:ea60, CP2102 USB to UART Bridge Controller, ESP32-like: CP210x)"
    )
    assert describe([S3])[0].bridge == "Espressif USB"  # any product id of Espressif's
    assert describe([ARDUINO])[0].bridge is None and describe([UART])[0].usb_id == ""


@pytest.mark.parametrize(
    ("infos", "words"),
    [
        ([], "no serial port found"),
        ([UART, ARDUINO], "no ESP32-like port: /dev/ttyACM1 (2341:0043, Arduino Uno); /dev/ttyS0"),
        ([CP2102, CH340], "several ESP32-like ports: /dev/ttyUSB0"),
    ],
)
def test_otherwise_the_ports_are_listed(infos, words: str) -> None:
    with pytest.raises(TerrapinError, match="^" + words.replace("(", r"\(").replace(")", r"\)")):
        choose_port(describe(infos))


def test_device_ports_lists_this_machine(capsys) -> None:
    assert main(["device", "ports", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["ports"]
    assert [p["device"] for p in listed] == sorted(p.device for p in list_ports.comports())


def test_a_command_without_port_uses_or_explains_this_machine(tmp_path, capsys) -> None:
    code = main(["device", "provision", "--no-prompt"])
    err = capsys.readouterr().err
    ports = describe(list_ports.comports())
    if len([p for p in ports if p.bridge]) == 1:  # a board is plugged in here
        assert "using " in err
    else:
        assert code == 1 and "--port" in err and "which board?" not in err
