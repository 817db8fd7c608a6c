"""flashfs checked against MicroPython's own littlefs.

The flash image is built by qemu_image from a stand-in .bin (esp32_standin).
Its vfs partition is then mounted by the MicroPython unix port's `vfs.mount`
(auto-detect, then VfsLfs2 with its default parameters, as the esp32 port's
_boot.py does) through a block device with esp32.Partition's protocol over
the image file; what MicroPython reads and writes is compared with what
flashfs reads and writes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from terrapin.hil import flashfs
from terrapin.hil import qemu_image as qi
from terrapin.hil.esp32_standin import standin_bin
from terrapin.hil.partition_table import (
    FlashImageError,
    Partition,
    find_partition,
    parse_partition_table,
)
from terrapin.tools.board.deploy import MANIFEST
from terrapin.tools.micropython import run_micropython

MiB = 1 << 20

# MicroPython side: esp32.Partition's block protocol over the image file, mounted
# the way ports/esp32/modules/_boot.py mounts the vfs partition.
MP_SCRIPT = r"""
import sys, os, vfs, json, binascii

class PartitionBdev:
    def __init__(self, path, offset, size):
        self.f = open(path, "r+b")
        self.offset = offset
        self.blocks = size // 4096

    def readblocks(self, block, buf, off=0):
        self.f.seek(self.offset + block * 4096 + off)
        if self.f.readinto(buf) != len(buf):
            raise OSError(5)

    def writeblocks(self, block, buf, off=None):
        if off is None:
            for i in range(len(buf) // 4096):
                self.ioctl(6, block + i)
            off = 0
        self.f.seek(self.offset + block * 4096 + off)
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 3:
            self.f.flush()
        if op == 4:
            return self.blocks
        if op == 5:
            return 4096
        if op == 6:
            self.f.seek(self.offset + arg * 4096)
            self.f.write(b"\xff" * 4096)
        return 0

def walk(top):
    for entry in os.ilistdir(top):
        path = top + "/" + entry[0]
        if entry[1] == 0x4000:
            yield from walk(path)
        else:
            yield path

path, offset, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
vfs.mount(PartitionBdev(path, offset, size), "/flash")
files = {}
for p in walk("/flash"):
    with open(p, "rb") as f:
        files[p[len("/flash/"):]] = binascii.hexlify(f.read()).decode()
writes = {}
if len(sys.argv) > 4:
    with open(sys.argv[4]) as f:
        writes = json.load(f)
for p, hexdata in writes.items():
    parts = p.split("/")
    for i in range(1, len(parts)):
        try:
            os.mkdir("/flash/" + "/".join(parts[:i]))
        except OSError:
            pass
    with open("/flash/" + p, "wb") as f:
        f.write(binascii.unhexlify(hexdata))
st = os.statvfs("/flash")
vfs.umount("/flash")
print(json.dumps({"files": files, "bsize": st[0], "blocks": st[2]}))
"""


def mp_mount(tmp_path: Path, image: Path, part: Partition, writes=None):
    """Mount the partition in the unix port: (returncode, answer or stderr)."""
    script = tmp_path / "mount_vfs.py"
    script.write_text(MP_SCRIPT)
    args = [str(script), str(image), str(part.offset), str(part.size)]
    if writes:  # in a file: the unix port dies on long argv strings
        (tmp_path / "writes.json").write_text(json.dumps({k: v.hex() for k, v in writes.items()}))
        args.append(str(tmp_path / "writes.json"))
    proc = run_micropython(*args, heapsize="4m", timeout=60)
    if proc.returncode != 0:
        return proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace")
    answer = json.loads(proc.stdout)
    answer["files"] = {k: bytes.fromhex(v) for k, v in answer["files"].items()}
    return 0, answer


def disk_version(image: Path) -> int:
    from littlefs import LittleFS, UserContext

    part = find_partition(parse_partition_table(image.read_bytes()))
    data = bytearray(image.read_bytes()[part.offset : part.end])
    fs = LittleFS(UserContext(buffer=data), mount=False, block_size=4096, block_count=0)
    fs.mount()
    return fs.fs_stat().disk_version


@pytest.fixture(scope="module")
def firmware() -> dict[str, bytes]:
    return qi.firmware_files()


@pytest.fixture
def standin(tmp_path) -> Path:
    path = tmp_path / "ESP32_GENERIC.bin"
    path.write_bytes(standin_bin())
    return path


def test_image_mounts_in_micropython_with_every_file_intact(
    tmp_path, standin, firmware, micropython_exe
):
    config = {"serial_uplink": {"uart": 1, "baud": 115200}, "broker": {"host": "10.0.2.2"}}
    cfg_path = tmp_path / "bench.json"
    cfg_path.write_text(json.dumps(config))
    out = tmp_path / "qemu" / "flash.bin"
    report = qi.build_flash_image(out, micropython=standin, config=cfg_path)

    flash = out.read_bytes()
    assert len(flash) == 16 * MiB  # the default: what Espressif's QEMU reads
    assert flash[:0x1000] == b"\xff" * 0x1000
    assert flash[0x1000 : 0x1000 + len(standin.read_bytes())] == standin.read_bytes()
    vfs = report.partition
    assert (vfs.offset, vfs.size) == (0x200000, 0x200000)
    assert flash[vfs.offset + 8 : vfs.offset + 16] == b"littlefs"  # what vfs.mount detects
    expected = {**firmware, "config.json": cfg_path.read_bytes()}
    assert report.files == {k: len(v) for k, v in expected.items()}
    assert report.block_count == 512 and 0 < report.blocks_used < 512

    # the deploy layout: main.py source, .mpy v6 for the ESP32, the manifest last
    assert expected["main.py"] == (qi.FIRMWARE_DIR / "main.py").read_bytes()
    mpys = [k for k in expected if k.endswith(".mpy")]
    assert mpys and all(expected[k][:2] == b"M\x06" for k in mpys)
    manifest = json.loads(expected[MANIFEST])
    assert manifest == {
        k: hashlib.sha256(v).hexdigest() for k, v in firmware.items() if k != MANIFEST
    }

    code, answer = mp_mount(tmp_path, out, vfs)
    assert code == 0, answer
    assert answer["bsize"] == 4096 and answer["blocks"] == 512
    assert answer["files"].keys() == expected.keys()
    for path, data in expected.items():
        assert answer["files"][path] == data, path

    # our reader sees the same, and MicroPython's writes come back through it
    assert flashfs.list_flash_files(out) == sorted("/" + k for k in expected)
    assert flashfs.read_flash_file(out, "/config.json") == cfg_path.read_bytes()
    segment = bytes(range(256)) * 20
    code, answer = mp_mount(tmp_path, out, vfs, writes={"outbox/00000001": segment})
    assert code == 0, answer
    assert flashfs.read_flash_file(out, "/outbox/00000001") == segment
    assert flashfs.list_flash_files(out, "/outbox") == ["/outbox/00000001"]

    # the host changes /config.json between boots; MicroPython reads the new one
    flashfs.write_flash_file(out, "/config.json", b'{"log": "debug"}')
    flashfs.write_flash_file(out, "/new/dir/file.bin", b"x" * 5000)
    code, answer = mp_mount(tmp_path, out, vfs)
    assert code == 0, answer
    assert answer["files"]["config.json"] == b'{"log": "debug"}'
    assert answer["files"]["new/dir/file.bin"] == b"x" * 5000
    assert answer["files"]["outbox/00000001"] == segment
    assert answer["files"]["main.py"] == expected["main.py"]


def test_corrupted_superblock_is_refused_by_micropython_and_by_the_reader(
    tmp_path, standin, micropython_exe
):
    out = tmp_path / "flash.bin"
    report = qi.build_flash_image(out, micropython=standin, files={"main.py": b"print(1)\n"})
    vfs = report.partition
    code, answer = mp_mount(tmp_path, out, vfs)
    assert code == 0 and answer["files"]["main.py"] == b"print(1)\n"

    # change block_size in the superblock of both metadata blocks, keeping the
    # "littlefs" magic so auto-detection still picks VfsLfs2: the CRCs fail
    flash = bytearray(out.read_bytes())
    for block in (0, 1):
        base = vfs.offset + block * 4096
        if flash[base + 8 : base + 16] == b"littlefs":
            flash[base + 24] ^= 0x10
    out.write_bytes(flash)
    code, err = mp_mount(tmp_path, out, vfs)
    assert code != 0 and "OSError" in err, err
    with pytest.raises(FlashImageError, match="holds no littlefs"):
        flashfs.read_flash_file(out, "/main.py")


def test_littlefs_mount_parameters_match_micropython(tmp_path, standin, micropython_exe):
    """An image formatted with other geometry is refused: the test can tell."""
    from littlefs import LittleFS, UserContext

    out = tmp_path / "flash.bin"
    report = qi.build_flash_image(out, micropython=standin, files={"a": b"1"})
    vfs = report.partition
    # the same partition formatted with 512-byte blocks: MicroPython must refuse it
    ctx = UserContext(vfs.size)
    fs = LittleFS(ctx, block_size=512, block_count=vfs.size // 512)
    with fs.open("a", "wb") as f:
        f.write(b"1")
    fs.unmount()
    flash = bytearray(out.read_bytes())
    flash[vfs.offset : vfs.end] = ctx.buffer
    out.write_bytes(flash)
    code, err = mp_mount(tmp_path, out, vfs)
    assert code != 0 and "OSError" in err, err


def test_file_errors_and_paths(tmp_path, standin):
    out = tmp_path / "flash.bin"
    qi.build_flash_image(out, micropython=standin, files={"lib/x.mpy": b"M\x06"})
    assert flashfs.list_flash_files(out) == ["/config.json", "/lib/x.mpy"]
    assert json.loads(flashfs.read_flash_file(out, "config.json")) == qi.BENCH_CONFIG
    with pytest.raises(FlashImageError, match="no file /missing"):
        flashfs.read_flash_file(out, "/missing")
    with pytest.raises(FlashImageError, match="no directory /outbox"):
        flashfs.list_flash_files(out, "/outbox")
    with pytest.raises(FlashImageError, match="bad flash path"):
        flashfs.write_flash_file(out, "/../etc", b"")
    with pytest.raises(FlashImageError, match="does not fit"):
        flashfs.write_flash_file(out, "/big", os.urandom(2 * MiB))
    assert flashfs.read_flash_file(out, "/lib/x.mpy") == b"M\x06"  # the failed write left it intact
    flashfs.write_flash_file(out, "/config.json", b"{}")
    assert disk_version(out) == 0x00020000  # host writes keep it mountable by any littlefs v2
    with pytest.raises(FlashImageError, match="no partition table"):
        flashfs.read_flash_file(standin, "/main.py")
