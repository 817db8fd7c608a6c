"""The QEMU target's flash image, checked against MicroPython's own littlefs.

No real MicroPython ESP32 .bin is available here, so each test makes a
stand-in: a merged image for 0x1000 whose partition table is written here
from the documented format (32-byte entries AA 50, type, subtype, offset,
size, 16-byte label, flags; an MD5 entry EB EB) and laid out like
MicroPython's ports/esp32/partitions-4MiB.csv. The vfs partition is then
mounted by the MicroPython unix port's `vfs.mount` (auto-detect, then
VfsLfs2 with its default parameters, as the esp32 port's _boot.py does)
through a block device with esp32.Partition's protocol over the image file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from terrapin.hil import qemu_image as qi
from terrapin.tools.deploy import MANIFEST
from terrapin.tools.micropython import run_micropython

MiB = 1 << 20
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


def mp_mount(tmp_path: Path, image: Path, part: qi.Partition, writes=None):
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

    part = qi.find_partition(qi.parse_partition_table(image.read_bytes()))
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


def test_partition_table_is_parsed_from_the_documented_format():
    flash = b"\xff" * 0x8000 + partition_table(MP_4MIB)
    parts = qi.parse_partition_table(flash)
    assert [(p.label, p.type, p.subtype, p.offset, p.size) for p in parts] == MP_4MIB
    assert [p.kind for p in parts] == ["data/nvs", "data/phy", "app/factory", "data/fat"]
    assert qi.find_partition(parts) == qi.Partition("vfs", 1, 0x81, 0x200000, 0x200000)
    # without the MD5 entry too, and a flipped bit in an entry breaks the MD5
    assert qi.parse_partition_table(b"\xff" * 0x8000 + partition_table(MP_4MIB, md5=False))
    bad = bytearray(flash)
    bad[0x8000 + 3 * 32 + 8] ^= 0x01
    with pytest.raises(qi.FlashImageError, match="MD5"):
        qi.parse_partition_table(bad)


def test_image_mounts_in_micropython_with_every_file_intact(
    tmp_path, standin, firmware, micropython_exe
):
    config = {"serial_uplink": {"uart": 1, "baud": 115200}, "broker": {"host": "10.0.2.2"}}
    cfg_path = tmp_path / "bench.json"
    cfg_path.write_text(json.dumps(config))
    out = tmp_path / "qemu" / "flash.bin"
    report = qi.build_flash_image(out, micropython=standin, config=cfg_path)

    flash = out.read_bytes()
    assert len(flash) == 4 * MiB
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
    assert qi.list_flash_files(out) == sorted("/" + k for k in expected)
    assert qi.read_flash_file(out, "/config.json") == cfg_path.read_bytes()
    segment = bytes(range(256)) * 20
    code, answer = mp_mount(tmp_path, out, vfs, writes={"outbox/00000001": segment})
    assert code == 0, answer
    assert qi.read_flash_file(out, "/outbox/00000001") == segment
    assert qi.list_flash_files(out, "/outbox") == ["/outbox/00000001"]

    # the host changes /config.json between boots; MicroPython reads the new one
    qi.write_flash_file(out, "/config.json", b'{"log": "debug"}')
    qi.write_flash_file(out, "/new/dir/file.bin", b"x" * 5000)
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
    with pytest.raises(qi.FlashImageError, match="holds no littlefs"):
        qi.read_flash_file(out, "/main.py")


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
    assert qi.list_flash_files(out) == ["/config.json", "/lib/x.mpy"]
    assert json.loads(qi.read_flash_file(out, "config.json")) == qi.BENCH_CONFIG
    with pytest.raises(qi.FlashImageError, match="no file /missing"):
        qi.read_flash_file(out, "/missing")
    with pytest.raises(qi.FlashImageError, match="no directory /outbox"):
        qi.list_flash_files(out, "/outbox")
    with pytest.raises(qi.FlashImageError, match="bad flash path"):
        qi.write_flash_file(out, "/../etc", b"")
    with pytest.raises(qi.FlashImageError, match="does not fit"):
        qi.write_flash_file(out, "/big", os.urandom(2 * MiB))
    assert qi.read_flash_file(out, "/lib/x.mpy") == b"M\x06"  # the failed write left it intact
    qi.write_flash_file(out, "/config.json", b"{}")
    assert disk_version(out) == 0x00020000  # host writes keep it mountable by any littlefs v2
    with pytest.raises(qi.FlashImageError, match="no partition table"):
        qi.read_flash_file(standin, "/main.py")


@pytest.mark.parametrize(
    ("image", "kwargs", "message"),
    [
        (b"\xe9" + b"\xff" * 0x9000, {}, r"no partition table at 0x8000"),
        (
            standin_bin(table_at=0x8000),
            {},
            r"no partition table at 0x8000.*image for offset 0",
        ),
        (standin_bin(MP_4MIB[:3]), {}, r"no 'vfs' data partition .*factory \(app/factory\)"),
        (standin_bin(), {"flash_size": "3MB"}, r"bad flash size '3MB'.*2MB, 4MB, 8MB or 16MB"),
        (
            standin_bin(),
            {"flash_size": "2MB"},
            r"partition vfs ends at 0x400000, beyond 2MB of flash",
        ),
        (b"PK\x03\x04" + b"\0" * 100, {}, r"not an ESP32 firmware \.bin"),
        (
            standin_bin([*MP_4MIB[:2], ("factory", 0, 0, 0x20000, 0x1E0000), MP_4MIB[3]]),
            {},
            r"no app image in its app partitions \(factory at 0x20000\)",
        ),
        (
            standin_bin(),
            {"files": {"big.bin": b"\0" * (2 * MiB + 1)}},
            r"do not fit in the 2,097,152-byte partition",
        ),
        (
            standin_bin(),
            {"files": {f"f{i}": random.Random(i).randbytes(300_000) for i in range(7)}},
            r"do not fit",
        ),
    ],
    ids=[
        "no-table",
        "offset-0-image",
        "no-vfs",
        "bad-size",
        "table-beyond-flash",
        "not-esp32",
        "no-app",
        "too-big",
        "too-big-after-overhead",
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, image, kwargs, message):
    src = tmp_path / "mp.bin"
    src.write_bytes(image)
    kwargs.setdefault("files", {"main.py": b""})
    with pytest.raises(qi.FlashImageError, match=message):
        qi.build_flash_image(tmp_path / "out.bin", micropython=src, **kwargs)
    assert not (tmp_path / "out.bin").exists()


def test_flash_sizes():
    assert qi.parse_flash_size("4MB") == 4 * MiB
    assert qi.parse_flash_size("16m") == 16 * MiB
    assert qi.parse_flash_size("8MiB") == 8 * MiB
    assert qi.parse_flash_size(2 * MiB) == 2 * MiB
    for bad in ("1MB", "4GB", "", "four", 3 * MiB, "4194305"):
        with pytest.raises(qi.FlashImageError):
            qi.parse_flash_size(bad)
    big = qi.build_flash(standin_bin(), {"a": b"1"}, "16MB")[0]
    assert len(big) == 16 * MiB and big[-1] == 0xFF


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cwd / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "terrapin.hil.qemu_image", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=False,
    )


def test_cli_builds_and_reports(tmp_path, standin):
    cfg = tmp_path / "c.json"
    cfg.write_text('{"serial_uplink": {"uart": 1, "baud": 115200}}')
    proc = cli(
        "--micropython", str(standin), "--out", "o/f.bin", "--config", str(cfg), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "partition vfs" in proc.stdout and "/config.json" in proc.stdout
    assert "/lib/terrapin/firmware/app.mpy" in proc.stdout and "free" in proc.stdout
    assert qi.read_flash_file(tmp_path / "o/f.bin", "/config.json") == cfg.read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--micropython", "nope.bin"], "firmware image nope.bin does not exist"),
        ([], "no MicroPython image for esp32: pass --micropython FILE or put one at"),
        (["--micropython", "{bin}", "--config", "list.json"], "must be a JSON object"),
        (["--micropython", "{bin}", "--config", "broken.json"], "is not valid JSON"),
        (["--micropython", "{bin}", "--config", "gone.json"], "cannot read the config"),
        (["--micropython", "{bin}", "--flash-size", "5MB"], "bad flash size '5MB'"),
    ],
    ids=["missing-bin", "no-default-bin", "config-list", "config-broken", "config-gone", "size"],
)
def test_cli_errors_are_one_line_and_exit_2(tmp_path, standin, args, message):
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text("{")
    args = [a.replace("{bin}", str(standin)) for a in args]
    proc = cli(*args, "--out", "f.bin", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr
    assert not (tmp_path / "f.bin").exists()
