"""Boots read the ESP32's flash a few dozen times, not thousands (issue 18).

In Espressif's QEMU every flash read costs 10-50 ms whatever its size, and
MicroPython mounts the ESP32's littlefs with a 128-byte cache: a first boot
made ~5,000 reads (3-4 minutes). main.py now remounts it through FlashCache
(docs/FIRMWARE.md, "First boot"). Here the MicroPython unix port boots the
deployed firmware out of the littlefs of a QEMU flash image (its .mpy built
for the unix port) through a block device with esp32.Partition's protocol
that counts the reads reaching the "flash": the first boot (key made, first
reading signed and stored) and two boots with readings pending, each ended
by a (simulated) deep sleep. Then the flash is mounted without the cache and
must hold what the boots wrote: the cache writes through.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from terrapin.hil import flashfs
from terrapin.hil import qemu_image as qi
from terrapin.hil.esp32_standin import standin_bin
from terrapin.hil.partition_table import find_partition, parse_partition_table
from terrapin.tools.micropython import run_micropython

# At most this many flash reads from main.py's start to the end of the app's
# boot, through the cache (measured on the unix port: 73 for a first boot,
# 42 with readings pending; the ESP32's adds the OTA state look-up). The same
# boot without it: ~1,000 and more as the directories' logs grow.
MAX_BOOT_READS = 100
# Flash writes (programs) of a boot with readings pending, its reading and its
# deep sleep: the sequence bound (written, renamed) and the appended reading
# (measured: 3-4). The first boot makes ~15 (key, bound, outbox folder, segment).
MAX_WAKE_WRITES = 6

BOOT = r"""
import sys, os, vfs

class Dev:
    # esp32.Partition's block protocol over the image file, counting reads.
    def __init__(self, path, offset, size):
        self.f = open(path, "r+b")
        self.offset = offset
        self.blocks = size // 4096
        self.reads = self.writes = 0

    def readblocks(self, block, buf, off=0):
        self.reads += 1
        self.f.seek(self.offset + block * 4096 + off)
        if self.f.readinto(buf) != len(buf):
            raise OSError(5)

    def writeblocks(self, block, buf, off=None):
        self.writes += 1
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

path, offset, size, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
dev = Dev(path, offset, size)
vfs.mount(dev, "/flash")  # as the esp32 port's _boot.py mounts its vfs partition
os.chdir("/flash")
sys.path.insert(0, "")
marks = ["mount %d" % dev.reads]  # the reads of MicroPython's own mount and of main.py
import main  # the deployed /main.py: definitions only under this name

cache = main.cached_mount(dev, "/flash") if mode == "cached" else None
marks.append("start %d" % dev.reads)

def booted():  # what app.main calls once booted (main.start hands it the cache's)
    marks.append("booted %d" % dev.reads)
    if cache is not None:
        cache.slots = []  # the count stops here; main.py's keeps them for the first reading

if cache is not None:
    cache.booted = booted
else:
    sys.path.insert(0, "lib")
    __import__("terrapin.firmware.app").firmware.app.booted = booted
sys.argv[:] = ["main.py", "--config", "config.json", "--flash", ".", "--deep-sleep-sim"]
try:
    code = main.start(cache)
except SystemExit as exc:
    code = exc.value if hasattr(exc, "value") else exc.args[0]
dev.f.flush()
print("FLASH-READS %d writes %d exit %s (%s)" % (dev.reads, dev.writes, code, ", ".join(marks)))
"""

CONFIG = {
    "broker": {"host": "127.0.0.1", "port": 9},  # nothing listens: readings stay pending
    "sensors": [{"driver": "simulated"}],
    "sample_period_s": 60,
    "deep_sleep": True,
    "awake_s": 1,
    "watchdog_s": 0,
    "log": "debug",
}


@pytest.fixture(scope="module")
def unix_mpy(micropython_exe) -> int:
    proc = run_micropython("-c", "import sys; print(sys.implementation._mpy)")
    return int(proc.stdout)


def _image(tmp_path: Path, unix_mpy: int) -> tuple[Path, object]:
    (tmp_path / "esp32.bin").write_bytes(standin_bin())
    out = tmp_path / "flash.bin"
    qi.build_flash_image(out, micropython=tmp_path / "esp32.bin", config=CONFIG, board_mpy=unix_mpy)
    return out, find_partition(parse_partition_table(out.read_bytes()))


def _boot(tmp_path: Path, image: Path, part, mode: str) -> tuple[int, int, str]:
    """(flash reads from main.py's start to booted, flash writes of the whole run, log)."""
    script = tmp_path / "flashboot.py"
    script.write_text(BOOT)
    proc = run_micropython(
        str(script), str(image), str(part.offset), str(part.size), mode, heapsize="4m",
        timeout=120,
    )  # fmt: skip
    log = (proc.stdout + proc.stderr).decode(errors="replace")
    m = re.search(r"writes (\d+) exit (\d+) \(mount \d+, start (\d+), booted (\d+)\)", log)
    assert m, log
    assert m.group(2) == "4", log  # went to (simulated) deep sleep: the boot and a reading ran
    return int(m.group(4)) - int(m.group(3)), int(m.group(1)), log


def test_boots_read_the_flash_through_the_cache(tmp_path, micropython_exe, unix_mpy):
    image, part = _image(tmp_path, unix_mpy)
    reads = []
    for n in range(3):
        count, writes, log = _boot(tmp_path, image, part, "cached")
        if n:  # nothing rewritten that did not change: the sequence bound and one reading
            assert writes <= MAX_WAKE_WRITES, (writes, log)
        assert ("(new key made on this board)" in log) == (n == 0), log
        assert f"[info] outbox: {n} pending" in log, log
        assert "stored seq" in log, log
        reads.append(count)
    assert max(reads) <= MAX_BOOT_READS, f"flash reads per boot {reads}: over {MAX_BOOT_READS}"
    # The same boot without the cache: what the emulator paid before.
    plain, _, log = _boot(tmp_path, image, part, "plain")
    print(f"flash reads per boot: cached {reads}, plain {plain}")
    assert "[info] outbox: 3 pending" in log, log
    assert plain > 10 * max(reads), (plain, reads)
    # Written through: an independent reader finds the four readings and the key.
    outbox = [p for p in flashfs.list_flash_files(image) if p.startswith("/outbox/")]
    assert outbox, flashfs.list_flash_files(image)
    assert len(flashfs.read_flash_file(image, "key.bin")) == 40


def test_cache_serves_what_the_flash_holds_through_writes(tmp_path, micropython_exe, unix_mpy):
    # Random file work through a 2-block cache (evictions all the time) must
    # read back what was written, and the flash itself must hold it after.
    image, part = _image(tmp_path, unix_mpy)
    script = tmp_path / "churn.py"
    script.write_text(BOOT.split("\npath, offset, size, mode")[0] + CHURN)
    proc = run_micropython(
        str(script), str(image), str(part.offset), str(part.size), heapsize="4m", timeout=120
    )
    log = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode == 0 and "CHURN-OK" in log, log
    files = json.loads(log.split("CHURN-OK ", 1)[1].splitlines()[0])
    for name, size in files.items():
        assert len(flashfs.read_flash_file(image, "churn/" + name)) == size, name


CHURN = r"""
import random
path, offset, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
dev = Dev(path, offset, size)
vfs.mount(dev, "/flash")
sys.path.insert(0, "/flash")
import main
cache = main.cached_mount(dev, "/flash", slots=2)
assert cache is not None
os.mkdir("/flash/churn")
shadow = {}
random.seed(7)
for step in range(300):
    if step == 150:  # booted: the blocks go at the next write, then reads go to the flash
        cache.booted()
        assert cache.slots, "booted() must keep the blocks until the next write"
    if step == 151 and cache.slots:
        raise SystemExit("the cache kept its blocks after booted() and a write")
    name = "f%d" % random.getrandbits(3)
    op = random.getrandbits(2)
    p = "/flash/churn/" + name
    if op == 0 or name not in shadow:
        data = bytes(random.getrandbits(8) for _ in range(random.getrandbits(12)))
        with open(p, "wb") as f:
            f.write(data)
        shadow[name] = data
    elif op == 1:
        extra = bytes(random.getrandbits(8) for _ in range(random.getrandbits(9)))
        with open(p, "ab") as f:
            f.write(extra)
        shadow[name] += extra
    elif op == 2:
        other = "f%d" % random.getrandbits(3)
        os.rename(p, "/flash/churn/" + other)
        shadow[other] = shadow.pop(name)
    else:
        os.remove(p)
        del shadow[name]
    for n, data in shadow.items():
        with open("/flash/churn/" + n, "rb") as f:
            got = f.read()
        if got != data:
            raise SystemExit("step %d: %s reads back wrong" % (step, n))
    if sorted(os.listdir("/flash/churn")) != sorted(shadow):
        raise SystemExit("step %d: listing %s" % (step, os.listdir("/flash/churn")))
vfs.umount("/flash")
dev.f.flush()
import json
print("CHURN-OK " + json.dumps({n: len(d) for n, d in shadow.items()}))
"""
