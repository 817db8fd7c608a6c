"""Serial ports and which of them look like an ESP32 board.

`describe` turns pyserial's ListPortInfo objects into SerialPorts (device, USB
vid:pid, description, the USB-UART bridge it is); `choose_port` picks the one
ESP32-like port when exactly one is plugged in and otherwise says which exist.
`list_ports` is pyserial's `list_ports.comports()` through `describe`: the
logic takes the listing as input, so it is tested with real ListPortInfo objects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from terrapin.gateway.errors import TerrapinError

# USB-UART bridges found on ESP32 boards, by (vendor id, product id).
BRIDGES: dict[tuple[int, int], str] = {
    (0x10C4, 0xEA60): "CP210x",
    (0x1A86, 0x7523): "CH340",
    (0x1A86, 0x55D4): "CH9102",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6015): "FTDI FT231X",
}
ESPRESSIF_VID = 0x303A  # native USB of the ESP32-S2/S3/C3/C6 (any product id)


@dataclass(frozen=True)
class SerialPort:
    device: str
    vid: int | None
    pid: int | None
    description: str

    @property
    def usb_id(self) -> str:
        """ "10c4:ea60", or "" for a port that is not USB."""
        return "" if self.vid is None or self.pid is None else f"{self.vid:04x}:{self.pid:04x}"

    @property
    def bridge(self) -> str | None:
        """The USB-UART bridge an ESP32 board uses, or None for anything else."""
        if self.vid == ESPRESSIF_VID:
            return "Espressif USB"
        if self.vid is None or self.pid is None:
            return None
        return BRIDGES.get((self.vid, self.pid))

    def label(self) -> str:
        parts = [self.usb_id or "no USB id", self.description]
        if self.bridge:
            parts.append(f"ESP32-like: {self.bridge}")
        return f"{self.device} ({', '.join(p for p in parts if p and p != 'n/a')})"


def describe(infos: Iterable) -> list[SerialPort]:
    """pyserial ListPortInfo objects as SerialPorts, sorted by device name."""
    ports = [
        SerialPort(
            str(info.device), info.vid, info.pid, str(info.description or "").strip() or "n/a"
        )
        for info in infos
    ]
    return sorted(ports, key=lambda p: p.device)


def list_ports() -> list[SerialPort]:
    from serial.tools import list_ports as pyserial_ports

    return describe(pyserial_ports.comports())


def choose_port(ports: list[SerialPort]) -> SerialPort:
    """The one ESP32-like port; otherwise an error that lists what is there."""
    likely = [p for p in ports if p.bridge]
    if len(likely) == 1:
        return likely[0]
    if not ports:
        raise TerrapinError(
            "no serial port found: is the board plugged in (with a data cable)?",
            hint="pass --port (e.g. /dev/ttyUSB0), or --target unix --dir D for a virtual "
            "board; on Linux your user needs the dialout group",
        )
    listed = "; ".join(p.label() for p in ports)
    why = "several ESP32-like ports" if likely else "no ESP32-like port"
    raise TerrapinError(f"{why}: {listed}", hint="pick one with --port DEVICE")
