"""Write MicroPython to an ESP32 with esptool (used as a library).

Image: `--image FILE`, else the cache folder
`~/.cache/terrapin/micropython/<board>.bin` ($XDG_CACHE_HOME respected),
where a hobbyist puts the .bin downloaded from micropython.org/download.
Steps: open the port (clear errors when missing, busy or not permitted),
detect the chip and check it is the board asked for, erase, write, reset.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from terrapin.gateway.errors import TerrapinError
from terrapin.tools.board.serialconsole import PortError, open_port, port_error


@dataclass(frozen=True)
class BoardModel:
    name: str
    chip: str  # esptool's CHIP_NAME
    offset: int  # where the MicroPython image starts in flash
    download: str


BOARDS = {
    "esp32": BoardModel(
        "esp32", "ESP32", 0x1000, "https://micropython.org/download/ESP32_GENERIC/"
    ),
    "esp32s3": BoardModel(
        "esp32s3", "ESP32-S3", 0x0, "https://micropython.org/download/ESP32_GENERIC_S3/"
    ),
    "esp32c3": BoardModel(
        "esp32c3", "ESP32-C3", 0x0, "https://micropython.org/download/ESP32_GENERIC_C3/"
    ),
}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "terrapin" / "micropython"


def find_image(
    board: str, image: str | Path | None, option: str = "--image", error: type = TerrapinError
) -> Path:
    """MicroPython's .bin for `board`: `image`, else the cache folder's; `option` is
    the caller's name for the flag, `error` the TerrapinError it raises."""
    spec = BOARDS[board]
    if image is not None:
        path = Path(image)
        if not path.is_file():
            raise error(f"firmware image {path} does not exist")
        return path
    path = cache_dir() / f"{board}.bin"
    if not path.is_file():
        raise error(
            f"no MicroPython image for {board}: pass {option} FILE or put one at {path}",
            hint=f"download the .bin from {spec.download} (MicroPython 1.24 or newer)",
        )
    return path


def check_port(port: str) -> None:
    """Open and close the port once, so a missing/busy/forbidden port gets our message."""
    open_port(port, baudrate=115200).close()


class _ProgressLogger:
    """esptool's legacy logger interface, feeding a callback instead of stdout."""

    def __init__(self, progress: Callable[[int, int], None] | None, note: Callable[[str], None]):
        from esptool.logger import TemplateLogger

        outer = self

        class Logger(TemplateLogger):
            def print(self, *args, **kwargs):
                text = " ".join(str(a) for a in args).strip()
                if text:
                    note(text)

            def note(self, message):
                note(message)

            def warning(self, message):
                note("warning: " + message)

            def error(self, message):
                note("error: " + message)

            def stage(self, finish=False):
                pass

            def progress_bar(self, cur_iter, total_iters, prefix="", suffix="", bar_length=30):
                if outer.progress is not None:
                    outer.progress(cur_iter, total_iters)

            def set_verbosity(self, verbosity):
                pass

        self.progress = progress
        self.logger = Logger()


def flash(
    port: str,
    board: str = "esp32",
    image: str | Path | None = None,
    *,
    baud: int = 460800,
    erase: bool = True,
    connect_attempts: int = 3,
    progress: Callable[[int, int], None] | None = None,
    note: Callable[[str], None] = lambda s: None,
) -> dict:
    """Erase and write MicroPython; returns {"chip", "mac", "image", "offset"}."""
    spec = BOARDS[board]
    path = find_image(board, image)
    check_port(port)
    import esptool
    from esptool.logger import log

    log.set_logger(_ProgressLogger(progress, note).logger)
    try:
        esp = esptool.detect_chip(port, connect_attempts=connect_attempts)
    except esptool.FatalError as exc:
        raise TerrapinError(
            f"no ESP32 bootloader answered on {port}",
            hint="check the USB cable carries data; hold BOOT, tap EN/RST, release BOOT, retry. "
            f"({str(exc).splitlines()[0]})",
        ) from exc
    except OSError as exc:
        raise port_error(port, exc) from exc
    with esp:  # an ESPLoader closes its serial port on leaving (esptool 5)
        try:
            if spec.chip != esp.CHIP_NAME:
                raise TerrapinError(
                    f"the board on {port} is an {esp.CHIP_NAME}, not an {spec.chip}",
                    hint=f"use --board {_board_for(esp.CHIP_NAME)}",
                )
            mac = ":".join(f"{b:02x}" for b in esp.read_mac())
            esp = esptool.run_stub(esp)
            esptool.attach_flash(esp)
            if erase:
                note("erasing flash")
                esptool.erase_flash(esp)
            note(f"writing {path.name} at {spec.offset:#x}")
            esptool.write_flash(esp, [(spec.offset, str(path))])
            esptool.reset_chip(esp, "hard-reset")
        except esptool.FatalError as exc:
            raise TerrapinError(f"flashing failed: {exc}") from exc
        return {"chip": esp.CHIP_NAME, "mac": mac, "image": str(path), "offset": spec.offset}


def _board_for(chip: str) -> str:
    for name, spec in BOARDS.items():
        if spec.chip == chip:
            return name
    return "esp32"


__all__ = ["BOARDS", "PortError", "cache_dir", "find_image", "flash"]
