"""The flash image the HIL bench's QEMU target boots (qemu-system-xtensa -M esp32).

Layout, for the classic ESP32 and MicroPython's ESP32_GENERIC build:

    0x1000     MicroPython's merged .bin, as a hobbyist downloads it: bootloader,
               partition table at 0x8000, app at 0x10000
    vfs        the `vfs` data partition from that table (0x200000 on a 4MB
               board): a littlefs v2 filesystem holding the firmware exactly
               as `terrapin device deploy` lays it out, plus /config.json
    the rest   0xFF, erased flash, up to 2, 4, 8 or 16 MB (what QEMU accepts)

littlefs is formatted with the parameters MicroPython's esp32 port mounts
with: _boot.py does `vfs.mount(bdev, "/")` on `esp32.Partition` "vfs", whose
ioctl gives a 4096-byte block, and the auto-detected `VfsLfs2(bdev)` takes
its defaults readsize=32, progsize=32, lookahead=32 (extmod/vfs_lfsx.c; cache
size min(block, 4 * max(read, prog)) = 128; name_max/file_max/attr_max 0, so
littlefs' own 255 / 2**31-1 / 1022, which the superblock records and mount
checks). New images are on-disk version 2.0, which every littlefs v2 in
MicroPython mounts; newer ones upgrade it to 2.1 on first write, and the
readers here take both.

The bench also reads a QEMU board's flash after a run (read_flash_file,
list_flash_files: /outbox/ segments, /seq) and changes /config.json between
boots (write_flash_file).

CLI: python -m terrapin.hil.qemu_image --micropython BIN --out FLASH
         [--config JSON] [--flash-size 4MB] [--board-mpy N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import struct
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from terrapin.tools.deploy import (
    ARCHES,
    FIRMWARE_DIR,
    MANIFEST,
    BoardMpy,
    build_image,
    find_mpy_cross,
    plan,
)
from terrapin.tools.errors import TerrapinError
from terrapin.tools.flash import BOARDS, cache_dir, find_image

BOARD = "esp32"
IMAGE_OFFSET = BOARDS[BOARD].offset  # 0x1000: where the merged .bin goes on a classic ESP32
TABLE_OFFSET = 0x8000
TABLE_MAX = 0xC00  # the bootloader reads at most this much of the table
ENTRY = struct.Struct("<2sBBII16sI")  # magic, type, subtype, offset, size, label, flags
ENTRY_MAGIC = b"\xaa\x50"
MD5_MAGIC = b"\xeb\xeb"
ESP_IMAGE_MAGIC = 0xE9  # first byte of the bootloader and of every app image
TYPE_APP, TYPE_DATA = 0, 1
VFS_LABEL = "vfs"
FLASH_SIZES = {"2MB": 2 << 20, "4MB": 4 << 20, "8MB": 8 << 20, "16MB": 16 << 20}
CONFIG_PATH = "config.json"
# sys.implementation._mpy of MicroPython >= 1.23 on the ESP32: .mpy v6.3, xtensawin.
ESP32_MPY = 6 | (3 << 8) | (ARCHES.index("xtensawin") << 10)

# littlefs as MicroPython's esp32 port mounts it (see the module docstring).
BLOCK_SIZE = 4096
LFS_READ_SIZE = 32
LFS_PROG_SIZE = 32
LFS_LOOKAHEAD = 32
LFS_CACHE_SIZE = min(BLOCK_SIZE, 4 * max(LFS_READ_SIZE, LFS_PROG_SIZE))
LFS_NAME_MAX = 255
LFS_FORMAT_VERSION = 0x00020000  # on-disk 2.0: mountable by every littlefs v2

# What the QEMU board runs with when no --config is given: no WiFi, its MQTT
# stream over UART1 to the host bridge, a simulated sensor.
BENCH_CONFIG = {
    "broker": {"host": "127.0.0.1", "port": 1883},
    "serial_uplink": {"uart": 1, "baud": 115200},
    "sensors": [{"driver": "simulated"}],
    "sample_period_s": 5,
    "status_period_s": 30,
    "watchdog_s": 0,
    "log": "info",
}

_TYPE_NAMES = {TYPE_APP: "app", TYPE_DATA: "data"}
_SUBTYPE_NAMES = {
    TYPE_APP: {0x00: "factory", 0x20: "test", **{0x10 + i: f"ota_{i}" for i in range(16)}},
    TYPE_DATA: {
        0x00: "ota", 0x01: "phy", 0x02: "nvs", 0x03: "coredump", 0x04: "nvs_keys",
        0x05: "efuse", 0x06: "undefined", 0x80: "esphttpd", 0x81: "fat", 0x82: "spiffs",
        0x83: "littlefs",
    },
}  # fmt: skip


class FlashImageError(TerrapinError):
    """The MicroPython image, the config or a flash image cannot be used."""

    exit_code = 2


@dataclass(frozen=True)
class Partition:
    """One entry of an ESP32 partition table."""

    label: str
    type: int
    subtype: int
    offset: int
    size: int
    flags: int = 0

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def kind(self) -> str:
        """`app/factory`, `data/fat`, ... as in the partition CSV."""
        t = _TYPE_NAMES.get(self.type, f"{self.type:#04x}")
        s = _SUBTYPE_NAMES.get(self.type, {}).get(self.subtype, f"{self.subtype:#04x}")
        return f"{t}/{s}"


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


# -- partition table ---------------------------------------------------------


def parse_partition_table(flash: bytes, offset: int = TABLE_OFFSET) -> list[Partition]:
    """The partitions of the table at `offset` of a flash image (FlashImageError if none).

    32-byte entries (magic AA 50, type, subtype, offset, size, 16-byte label,
    flags), then an optional MD5 entry (EB EB, 14 x FF, MD5 of the entries
    before it), then 0xFF.
    """
    table = bytes(flash[offset : offset + TABLE_MAX])
    parts: list[Partition] = []
    for pos in range(0, len(table) - ENTRY.size + 1, ENTRY.size):
        entry = table[pos : pos + ENTRY.size]
        if entry[:2] == ENTRY_MAGIC:
            _, ptype, sub, off, size, label, flags = ENTRY.unpack(entry)
            name = label.split(b"\0", 1)[0].decode("ascii", "replace")
            parts.append(Partition(name, ptype, sub, off, size, flags))
        elif entry[:2] == MD5_MAGIC:
            if hashlib.md5(table[:pos]).digest() != entry[16:]:
                raise FlashImageError(
                    f"the partition table at {offset:#x} is corrupt (its MD5 does not match)"
                )
        elif entry == b"\xff" * ENTRY.size:
            break
        elif parts:
            raise FlashImageError(
                f"the partition table at {offset:#x} has a bad entry at {offset + pos:#x}"
            )
        else:
            break
    if not parts:
        raise FlashImageError(f"no partition table at {offset:#x} (no entry starts with AA 50)")
    return parts


def find_partition(parts: list[Partition], label: str = VFS_LABEL) -> Partition:
    """The data partition called `label` (MicroPython's filesystem is `vfs`)."""
    for p in parts:
        if p.label == label and p.type == TYPE_DATA:
            return p
    have = ", ".join(f"{p.label} ({p.kind})" for p in parts)
    raise FlashImageError(f"no {label!r} data partition in the partition table (it has: {have})")


# -- littlefs ----------------------------------------------------------------


def _lfs_config(block_count: int, disk_version: int = 0) -> dict:
    return {
        "block_size": BLOCK_SIZE,
        "block_count": block_count,
        "read_size": LFS_READ_SIZE,
        "prog_size": LFS_PROG_SIZE,
        "cache_size": LFS_CACHE_SIZE,
        "lookahead_size": LFS_LOOKAHEAD,
        "name_max": LFS_NAME_MAX,
        "disk_version": disk_version,
    }


def _flash_path(path: str) -> str:
    """`/a/b` or `a/b` -> `a/b`; refuses empty, `.` and `..` parts."""
    parts = path.strip("/").split("/")
    if not path.strip("/") or any(p in ("", ".", "..") for p in parts):
        raise FlashImageError(f"bad flash path {path!r}")
    return "/".join(parts)


def _write_file(fs, path: str, data: bytes) -> None:
    rel = _flash_path(path)
    parent = rel.rpartition("/")[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(rel, "wb") as f:
        f.write(data)


def make_littlefs(files: dict[str, bytes], size: int) -> tuple[bytearray, int]:
    """A littlefs partition of `size` bytes holding `files`; returns (bytes, blocks used)."""
    from littlefs import LittleFS, LittleFSError, UserContext

    if size % BLOCK_SIZE or size < 2 * BLOCK_SIZE:
        raise FlashImageError(f"a {size:#x}-byte partition cannot hold {BLOCK_SIZE}-byte blocks")
    total = sum(len(d) for d in files.values())
    too_big = (
        f"the files ({len(files)} files, {total:,} bytes) do not fit in the {size:,}-byte partition"
    )
    if total > size:
        raise FlashImageError(too_big)
    ctx = UserContext(buffer=bytearray(b"\xff" * size))
    fs = LittleFS(ctx, mount=False, **_lfs_config(size // BLOCK_SIZE, LFS_FORMAT_VERSION))
    fs.format()
    fs.mount()
    for path in sorted(files):
        try:
            _write_file(fs, path, files[path])
        except LittleFSError as exc:
            if exc.code == LittleFSError.Error.LFS_ERR_NOSPC:
                raise FlashImageError(too_big) from exc
            raise FlashImageError(f"cannot write {path} to littlefs: {exc}") from exc
    used = fs.used_block_count
    fs.unmount()
    return ctx.buffer, used


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
    flash_size: int = FLASH_SIZES["4MB"],
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
        files={_flash_path(k): len(v) for k, v in files.items()},
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
    flash_size: str | int = "4MB",
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


# -- reading and changing a flash image ------------------------------------------------


@contextmanager
def _mounted(image_path: str | Path, write: bool = False) -> Iterator:
    """littlefs of the vfs partition of a flash image file; written back if `write`."""
    from littlefs import LittleFS, LittleFSError, UserContext

    path = Path(image_path)
    try:
        f = open(path, "r+b" if write else "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise FlashImageError(f"cannot open the flash image {path}: {exc.strerror}") from exc
    with f:
        f.seek(TABLE_OFFSET)
        table = f.read(TABLE_MAX)
        try:
            vfs = find_partition(parse_partition_table(table, 0))
        except FlashImageError as exc:
            raise FlashImageError(f"{path}: {exc}") from exc
        size = vfs.size - vfs.size % BLOCK_SIZE
        f.seek(vfs.offset)
        data = bytearray(f.read(size))
        if len(data) != size:
            raise FlashImageError(f"{path} ends inside partition {vfs.label} (truncated image)")
        fs = LittleFS(UserContext(buffer=data), mount=False, **_lfs_config(size // BLOCK_SIZE))
        try:
            fs.mount()
            if write:  # keep the on-disk version, so a board that made it still mounts it
                version = fs.fs_stat().disk_version
                fs.unmount()
                fs = LittleFS(
                    UserContext(buffer=data),
                    mount=False,
                    **_lfs_config(size // BLOCK_SIZE, version),
                )
                fs.mount()
        except LittleFSError as exc:
            raise FlashImageError(
                f"{path}: partition {vfs.label} at {vfs.offset:#x} holds no littlefs "
                f"MicroPython could mount ({exc})"
            ) from exc
        try:
            yield fs
        except LittleFSError as exc:
            raise FlashImageError(f"{path}: {exc}") from exc
        finally:
            fs.unmount()
        if write:
            f.seek(vfs.offset)
            f.write(data)


def list_flash_files(image_path: str | Path, under: str = "/") -> list[str]:
    """Every file (not directory) below `under`, as sorted absolute paths (`/outbox/0001`)."""
    from littlefs import LittleFSError

    top = "/" + under.strip("/")
    with _mounted(image_path) as fs:
        try:
            walk = list(fs.walk(top))
        except (LittleFSError, OSError) as exc:
            raise FlashImageError(f"no directory {top} on the flash image {image_path}") from exc
        out = []
        for root, _dirs, names in walk:
            base = root.rstrip("/")
            out.extend(f"{base}/{n}" for n in names)
    return sorted(out)


def read_flash_file(image_path: str | Path, path: str) -> bytes:
    """The bytes of one file on the flash image (FlashImageError if it is not there)."""
    rel = _flash_path(path)
    with _mounted(image_path) as fs:
        try:
            with fs.open(rel, "rb") as f:
                return f.read()
        except OSError as exc:  # FileNotFoundError, IsADirectoryError
            raise FlashImageError(f"no file /{rel} on the flash image {image_path}") from exc


def write_flash_file(image_path: str | Path, path: str, data: bytes) -> None:
    """Create or replace one file on the flash image (parent directories are made)."""
    from littlefs import LittleFSError

    with _mounted(image_path, write=True) as fs:
        try:
            _write_file(fs, path, bytes(data))
        except LittleFSError as exc:
            if exc.code == LittleFSError.Error.LFS_ERR_NOSPC:
                raise FlashImageError(
                    f"/{_flash_path(path)} ({len(data):,} bytes) does not fit on the flash image"
                ) from exc
            raise


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
    parser.add_argument("--flash-size", default="4MB", help="2MB, 4MB, 8MB or 16MB")
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
            config=args.config,
            flash_size=args.flash_size,
            board_mpy=args.board_mpy,
        )
    except TerrapinError as exc:
        hint = f" ({exc.hint})" if exc.hint else ""
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 2
    if args.config is None:
        print("config: the built-in bench config (serial uplink on UART1)")
    print("\n".join(report.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
