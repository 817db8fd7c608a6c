"""The littlefs in an ESP32 flash image's `vfs` partition, as MicroPython mounts it.

make_littlefs formats a new one holding given files (qemu_image builds the
QEMU board's flash with it); list_flash_files, read_flash_file and
write_flash_file read and change the files on an existing flash image file:
the bench reads a QEMU board's flash after a run (/outbox/ segments, /seq)
and changes /config.json between boots.

littlefs is formatted with the parameters MicroPython's esp32 port mounts
with: _boot.py does `vfs.mount(bdev, "/")` on `esp32.Partition` "vfs", whose
ioctl gives a 4096-byte block, and the auto-detected `VfsLfs2(bdev)` takes
its defaults readsize=32, progsize=32, lookahead=32 (extmod/vfs_lfsx.c; cache
size min(block, 4 * max(read, prog)) = 128; name_max/file_max/attr_max 0, so
littlefs' own 255 / 2**31-1 / 1022, which the superblock records and mount
checks). New images are on-disk version 2.0, which every littlefs v2 in
MicroPython mounts; newer ones upgrade it to 2.1 on first write, and the
readers here take both, and write back in the version they found.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from terrapin.hil.partition_table import (
    TABLE_MAX,
    TABLE_OFFSET,
    FlashImageError,
    find_partition,
    parse_partition_table,
)

# littlefs as MicroPython's esp32 port mounts it (see the module docstring).
BLOCK_SIZE = 4096
LFS_READ_SIZE = 32
LFS_PROG_SIZE = 32
LFS_LOOKAHEAD = 32
LFS_CACHE_SIZE = min(BLOCK_SIZE, 4 * max(LFS_READ_SIZE, LFS_PROG_SIZE))
LFS_NAME_MAX = 255
LFS_FORMAT_VERSION = 0x00020000  # on-disk 2.0: mountable by every littlefs v2


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


def flash_path(path: str) -> str:
    """`/a/b` or `a/b` -> `a/b`; refuses empty, `.` and `..` parts."""
    parts = path.strip("/").split("/")
    if not path.strip("/") or any(p in ("", ".", "..") for p in parts):
        raise FlashImageError(f"bad flash path {path!r}")
    return "/".join(parts)


def _write_file(fs, path: str, data: bytes) -> None:
    rel = flash_path(path)
    parent = rel.rpartition("/")[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(rel, "wb") as f:
        f.write(data)


# -- a new littlefs ------------------------------------------------------------


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
    rel = flash_path(path)
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
                    f"/{flash_path(path)} ({len(data):,} bytes) does not fit on the flash image"
                ) from exc
            raise
