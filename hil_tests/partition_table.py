"""The ESP32 partition table of a flash image: parse it, find a partition in it.

The bench reads it to place the firmware's littlefs (the `vfs` partition) when
it builds a QEMU flash image (qemu_image) and when it reads or changes files
on one (flashfs). parse_partition_table documents the entry format.

FlashImageError, the error of every flash-image module of the bench
(partition_table, flashfs, qemu_image), is defined here, at the bottom layer.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from terrapin.gateway.errors import TerrapinError

TABLE_OFFSET = 0x8000
TABLE_MAX = 0xC00  # the bootloader reads at most this much of the table
ENTRY = struct.Struct("<2sBBII16sI")  # magic, type, subtype, offset, size, label, flags
ENTRY_MAGIC = b"\xaa\x50"
MD5_MAGIC = b"\xeb\xeb"
TYPE_APP, TYPE_DATA = 0, 1
VFS_LABEL = "vfs"

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
