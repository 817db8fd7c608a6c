"""The flash image the HIL bench's QEMU target boots (qemu-system-xtensa -M esp32).

Layout, for the classic ESP32 and MicroPython's ESP32_GENERIC build:

    0x1000     MicroPython's merged .bin, as a hobbyist downloads it: bootloader,
               partition table at 0x8000, app at 0x10000
    vfs        the `vfs` data partition from that table (0x200000 on a 4MB
               board): a littlefs v2 filesystem holding the firmware exactly
               as `terrapin device deploy` lays it out, plus /config.json
    the rest   0xFF, erased flash, up to 2, 4, 8 or 16 MB; 16 MB by default,
               the only size Espressif's QEMU 7.x `-machine esp32` boots
               (a 4 MB file fails with "failed to read the initial flash content")

This module gathers the files (the compiled firmware, the config), checks the
.bin and assembles the flash. The partition table is read by partition_table;
the littlefs, with the parameters MicroPython's esp32 port mounts it with, is
made by flashfs, which also reads and changes files on a built image.

CLI: python -m terrapin.hil.qemu_image --micropython BIN --out FLASH
         [--config JSON] [--flash-size 16MB] [--board-mpy N] [--uplink-uart 0|1]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from terrapin.gateway.errors import TerrapinError
from terrapin.hil.flashfs import BLOCK_SIZE, flash_path, make_littlefs
from terrapin.hil.partition_table import (
    TABLE_OFFSET,
    TYPE_APP,
    FlashImageError,
    Partition,
    find_partition,
    parse_partition_table,
)
from terrapin.tools.board.deploy import (
    ARCHES,
    FIRMWARE_DIR,
    MANIFEST,
    BoardMpy,
    build_image,
    find_mpy_cross,
    plan,
)
from terrapin.tools.board.flash import BOARDS, cache_dir, find_image

BOARD = "esp32"
IMAGE_OFFSET = BOARDS[BOARD].offset  # 0x1000: where the merged .bin goes on a classic ESP32
ESP_IMAGE_MAGIC = 0xE9  # first byte of the bootloader and of every app image
FLASH_SIZES = {"2MB": 2 << 20, "4MB": 4 << 20, "8MB": 8 << 20, "16MB": 16 << 20}
# What Espressif's QEMU (7.x, `-machine esp32`) needs: it reads exactly 16 MB.
DEFAULT_FLASH_SIZE = "16MB"
CONFIG_PATH = "config.json"
# sys.implementation._mpy of MicroPython >= 1.23 on the ESP32: .mpy v6.3, xtensawin.
ESP32_MPY = 6 | (3 << 8) | (ARCHES.index("xtensawin") << 10)

# What the QEMU board runs with when no --config is given: no WiFi, its MQTT
# stream over UART1 to the host bridge, a simulated sensor.
BENCH_CONFIG = {
    "broker": {"host": "127.0.0.1", "port": 1883},
    # QEMU routes UART1 to its second -serial whatever the pins; on a real
    # board they must be the GPIOs wired to the host (docs/FIRMWARE.md).
    "serial_uplink": {"uart": 1, "baud": 115200, "tx": 25, "rx": 26},
    "sensors": [{"driver": "simulated"}],
    "sample_period_s": 5,
    "status_period_s": 30,
    "watchdog_s": 0,
    "log": "info",
}


# The bench config's serial_uplink per UART: 1 (its own -serial), or 0 shared
# with the console (firmware/sharedline.py) for an emulator whose UART1 output
# never reaches the host. QemuBoard writes the one it uses into its image copy.
UPLINK_BY_UART = {1: BENCH_CONFIG["serial_uplink"], 0: {"uart": 0}}


def bench_config(uplink_uart: int = 1) -> dict:
    """BENCH_CONFIG with the serial uplink on `uplink_uart` (0 or 1)."""
    return {**BENCH_CONFIG, "serial_uplink": dict(UPLINK_BY_UART[uplink_uart])}


def image_uplink_uart(image: str | Path) -> int | None:
    """The serial_uplink.uart in a built image's /config.json (None without one)."""
    from terrapin.hil.flashfs import read_flash_file

    cfg = json.loads(read_flash_file(image, CONFIG_PATH))
    uplink = cfg.get("serial_uplink") if isinstance(cfg, dict) else None
    return uplink.get("uart", 1) if isinstance(uplink, dict) else None


def set_image_uplink_uart(image: str | Path, uplink_uart: int) -> None:
    """Point the image's /config.json at `uplink_uart` (its other keys kept)."""
    from terrapin.hil.flashfs import read_flash_file, write_flash_file

    cfg = json.loads(read_flash_file(image, CONFIG_PATH))
    cfg["serial_uplink"] = dict(UPLINK_BY_UART[uplink_uart])
    write_flash_file(image, CONFIG_PATH, json.dumps(cfg, indent=2).encode() + b"\n")


@dataclass
class BuildReport:
    """What build_flash wrote, for printing and for the bench."""

    flash_size: int
    micropython: str
    micropython_bytes: int
    partition: Partition
    files: dict[str, int]  # flash path -> size
    block_count: int
    blocks_used: int
    image: str | None = None
    partitions: list[Partition] = field(default_factory=list)

    @property
    def bytes_used(self) -> int:
        return self.blocks_used * BLOCK_SIZE

    @property
    def bytes_free(self) -> int:
        return (self.block_count - self.blocks_used) * BLOCK_SIZE

    def lines(self) -> list[str]:
        p = self.partition
        out = [
            f"wrote {self.image or 'flash image'}: {self.flash_size >> 20}MB",
            f"  {IMAGE_OFFSET:#08x}  {self.micropython} ({self.micropython_bytes:,} bytes)",
            f"  {p.offset:#08x}  partition {p.label} ({p.kind}, {p.size:,} bytes): littlefs v2, "
            f"{self.block_count} blocks of {BLOCK_SIZE}",
        ]
        for path, size in sorted(self.files.items()):
            out.append(f"            /{path} ({size:,} bytes)")
        out.append(
            f"  {len(self.files)} files, {sum(self.files.values()):,} bytes; littlefs used "
            f"{self.bytes_used:,} bytes ({self.blocks_used} blocks), free {self.bytes_free:,} bytes"
        )
        return out


# -- firmware files ------------------------------------------------------------


def firmware_files(
    board_mpy: int = ESP32_MPY, src: Path = FIRMWARE_DIR, mpy_cross: str | None = None
) -> dict[str, bytes]:
    """{flash path: bytes} as `terrapin device deploy` leaves a fresh board.

    main.py as source, the package compiled for the board's .mpy ABI under
    lib/terrapin/firmware/, and the deploy manifest lib/terrapin/.manifest.json.
    """
    board = BoardMpy(board_mpy)
    cross = find_mpy_cross(board, mpy_cross)
    image = build_image(cross, board, src)
    image[MANIFEST] = json.dumps(plan(image, {}).manifest, sort_keys=True).encode()
    return image


def config_bytes(config: dict | str | Path | None) -> bytes:
    """The /config.json to write: a dict, a JSON file, or BENCH_CONFIG for None.

    Only checked to be a JSON object; the firmware validates the content.
    """
    if config is None:
        return json.dumps(BENCH_CONFIG, indent=2).encode() + b"\n"
    if isinstance(config, dict):
        return json.dumps(config, indent=2).encode() + b"\n"
    path = Path(config)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FlashImageError(f"cannot read the config {path}: {exc.strerror}") from exc
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise FlashImageError(f"the config {path} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise FlashImageError(f"the config {path} must be a JSON object {{...}}")
    return raw


# -- flash image -------------------------------------------------------------


def parse_flash_size(size: str | int) -> int:
    """'4MB' (also 4M, 4MiB, 4 MB, or the byte count) -> bytes; only QEMU's sizes."""
    if isinstance(size, int):
        if size in FLASH_SIZES.values():
            return size
    else:
        m = re.fullmatch(r"\s*(\d+)\s*(MB|M|MIB)?\s*", size, re.IGNORECASE)
        if m and m.group(2):
            key = f"{int(m.group(1))}MB"
            if key in FLASH_SIZES:
                return FLASH_SIZES[key]
        elif m and int(m.group(1)) in FLASH_SIZES.values():
            return int(m.group(1))
    raise FlashImageError(
        f"bad flash size {size!r}: QEMU's esp32 machine takes 2MB, 4MB, 8MB or 16MB"
    )


def micropython_image(path: str | Path | None = None) -> Path:
    """The ESP32_GENERIC .bin: `path`, else where `terrapin device flash` looks for it."""
    return find_image(BOARD, path, option="--micropython", error=FlashImageError)


def build_flash(
    micropython: bytes,
    files: dict[str, bytes],
    flash_size: int = FLASH_SIZES[DEFAULT_FLASH_SIZE],
    *,
    source: str = "the MicroPython image",
) -> tuple[bytearray, BuildReport]:
    """The full flash: `micropython` at 0x1000, `files` in the vfs partition, 0xFF elsewhere."""
    flash_size = parse_flash_size(flash_size)
    if not micropython or micropython[0] != ESP_IMAGE_MAGIC:
        raise FlashImageError(
            f"{source} is not an ESP32 firmware .bin (it must start with the bootloader, "
            f"byte {ESP_IMAGE_MAGIC:#x}); use MicroPython's ESP32_GENERIC .bin"
        )
    end = IMAGE_OFFSET + len(micropython)
    if end > flash_size:
        raise FlashImageError(
            f"{source} ({len(micropython):,} bytes at {IMAGE_OFFSET:#x}) does not fit in "
            f"{flash_size >> 20}MB of flash"
        )
    flash = bytearray(b"\xff" * flash_size)
    flash[IMAGE_OFFSET:end] = micropython
    try:
        parts = parse_partition_table(flash)
    except FlashImageError as exc:
        hint = ""
        try:
            parse_partition_table(micropython)
            hint = (
                f"; {source} has one at {TABLE_OFFSET:#x} of the file, so it is an image for "
                "offset 0 (ESP32-S3/C3 or a full flash dump), not the classic ESP32's 0x1000"
            )
        except FlashImageError:
            pass
        raise FlashImageError(f"{source}: {exc}{hint}") from exc
    for p in parts:
        if p.end > flash_size:
            raise FlashImageError(
                f"partition {p.label} ends at {p.end:#x}, beyond {flash_size >> 20}MB of flash "
                "(use a larger --flash-size)"
            )
    apps = [p for p in parts if p.type == TYPE_APP]
    if not any(flash[p.offset] == ESP_IMAGE_MAGIC for p in apps):
        where = ", ".join(f"{p.label} at {p.offset:#x}" for p in apps) or "none in the table"
        raise FlashImageError(f"{source} has no app image in its app partitions ({where})")
    vfs = find_partition(parts)
    if vfs.offset % BLOCK_SIZE:
        raise FlashImageError(f"partition {vfs.label} at {vfs.offset:#x} is not block-aligned")
    if end > vfs.offset and flash[vfs.offset : min(end, vfs.end)].strip(b"\xff"):
        raise FlashImageError(
            f"{source} ends at {end:#x}, inside partition {vfs.label} at {vfs.offset:#x}"
        )
    lfs, used = make_littlefs(files, vfs.size - vfs.size % BLOCK_SIZE)
    flash[vfs.offset : vfs.offset + len(lfs)] = lfs
    report = BuildReport(
        flash_size=flash_size,
        micropython=source,
        micropython_bytes=len(micropython),
        partition=vfs,
        files={flash_path(k): len(v) for k, v in files.items()},
        block_count=len(lfs) // BLOCK_SIZE,
        blocks_used=used,
        partitions=parts,
    )
    return flash, report


def build_flash_image(
    out: str | Path,
    *,
    micropython: str | Path | None = None,
    config: dict | str | Path | None = None,
    flash_size: str | int = DEFAULT_FLASH_SIZE,
    board_mpy: int = ESP32_MPY,
    src: Path = FIRMWARE_DIR,
    files: dict[str, bytes] | None = None,
) -> BuildReport:
    """Write the QEMU flash image to `out`: MicroPython, the deployed firmware, the config.

    `files` replaces the compiled firmware (the config is still added).
    """
    size = parse_flash_size(flash_size)
    image = micropython_image(micropython)
    cfg = config_bytes(config)
    content = dict(firmware_files(board_mpy, src) if files is None else files)
    content[CONFIG_PATH] = cfg
    flash, report = build_flash(image.read_bytes(), content, size, source=str(image))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(flash)
    tmp.replace(out)
    report.image = str(out)
    return report


# -- CLI -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m terrapin.hil.qemu_image",
        description="Build the ESP32 flash image the HIL bench boots in QEMU.",
    )
    parser.add_argument(
        "--micropython",
        metavar="BIN",
        help=f"MicroPython's ESP32_GENERIC .bin (default: {cache_dir() / 'esp32.bin'})",
    )
    parser.add_argument("--out", required=True, metavar="FLASH", help="the flash image to write")
    parser.add_argument(
        "--config", metavar="JSON", help="/config.json for the board (default: a bench config)"
    )
    parser.add_argument(
        "--flash-size",
        default=DEFAULT_FLASH_SIZE,
        help=f"2MB, 4MB, 8MB or 16MB (default {DEFAULT_FLASH_SIZE}: Espressif's QEMU needs it)",
    )
    parser.add_argument(
        "--uplink-uart",
        type=int,
        choices=sorted(UPLINK_BY_UART),
        default=1,
        help="the bench config's serial uplink: 1 (own UART) or 0 (shared with the console)",
    )
    parser.add_argument(
        "--board-mpy",
        type=int,
        default=ESP32_MPY,
        help=f"the board's sys.implementation._mpy (default {ESP32_MPY}: v6.3 xtensawin)",
    )
    args = parser.parse_args(argv)
    try:
        report = build_flash_image(
            args.out,
            micropython=args.micropython,
            config=args.config if args.config else bench_config(args.uplink_uart),
            flash_size=args.flash_size,
            board_mpy=args.board_mpy,
        )
    except TerrapinError as exc:
        hint = f" ({exc.hint})" if exc.hint else ""
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 2
    if args.config is None:
        print(f"config: the built-in bench config (serial uplink on UART{args.uplink_uart})")
    print("\n".join(report.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
