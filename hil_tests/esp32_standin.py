"""Stand-ins for MicroPython's ESP32_GENERIC .bin, for the flash-image tests.

No real MicroPython ESP32 .bin is available to the tests, so they make one:
a merged image for 0x1000 whose partition table is written here from the
documented format (32-byte entries AA 50, type, subtype, offset, size,
16-byte label, flags; an MD5 entry EB EB) and laid out like MicroPython's
ports/esp32/partitions-4MiB.csv. Used by test_qemu_image and test_flashfs.
"""

from __future__ import annotations

import hashlib
import random

# ports/esp32/partitions-4MiB.csv: name, type, subtype, offset, size
MP_4MIB = [
    ("nvs", 1, 0x02, 0x9000, 0x6000),
    ("phy_init", 1, 0x01, 0xF000, 0x1000),
    ("factory", 0, 0x00, 0x10000, 0x1F0000),
    ("vfs", 1, 0x81, 0x200000, 0x200000),
]


def partition_table(entries, md5: bool = True) -> bytes:
    out = b""
    for label, ptype, sub, offset, size in entries:
        out += (
            b"\xaa\x50"
            + bytes([ptype, sub])
            + offset.to_bytes(4, "little")
            + size.to_bytes(4, "little")
            + label.encode().ljust(16, b"\0")
            + (0).to_bytes(4, "little")
        )
    if md5:
        out += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(out).digest()
    return out.ljust(0xC00, b"\xff")


def standin_bin(entries=MP_4MIB, *, table_at: int | None = 0x7000, seed: int = 1) -> bytes:
    """A merged ESP32_GENERIC-like .bin for 0x1000: bootloader, table, app at 0x10000."""
    rng = random.Random(seed)
    image = bytearray(b"\xff" * 0x30000)  # app image ends at 0x40000 of the flash
    image[0:0x5000] = bytes([0xE9, 0x03, 0x02, 0x20]) + rng.randbytes(0x5000 - 4)
    if table_at is not None:
        image[table_at : table_at + 0xC00] = partition_table(entries)
    image[0xF000:0x30000] = bytes([0xE9, 0x06, 0x02, 0x20]) + rng.randbytes(0x21000 - 4)
    return bytes(image)
