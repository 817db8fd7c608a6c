"""qemu_image: the partition table it reads, the flash it builds, its CLI.

No real MicroPython ESP32 .bin is available here, so each test makes a
stand-in (esp32_standin): a merged image for 0x1000 with a partition table
laid out like MicroPython's ports/esp32/partitions-4MiB.csv. That the built
littlefs mounts in MicroPython itself is checked in test_flashfs.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from terrapin.hil import qemu_image as qi
from terrapin.hil.esp32_standin import MP_4MIB, partition_table, standin_bin
from terrapin.hil.flashfs import read_flash_file
from terrapin.hil.partition_table import (
    FlashImageError,
    Partition,
    find_partition,
    parse_partition_table,
)

MiB = 1 << 20


@pytest.fixture
def standin(tmp_path) -> Path:
    path = tmp_path / "ESP32_GENERIC.bin"
    path.write_bytes(standin_bin())
    return path


def test_partition_table_is_parsed_from_the_documented_format():
    flash = b"\xff" * 0x8000 + partition_table(MP_4MIB)
    parts = parse_partition_table(flash)
    assert [(p.label, p.type, p.subtype, p.offset, p.size) for p in parts] == MP_4MIB
    assert [p.kind for p in parts] == ["data/nvs", "data/phy", "app/factory", "data/fat"]
    assert find_partition(parts) == Partition("vfs", 1, 0x81, 0x200000, 0x200000)
    # without the MD5 entry too, and a flipped bit in an entry breaks the MD5
    assert parse_partition_table(b"\xff" * 0x8000 + partition_table(MP_4MIB, md5=False))
    bad = bytearray(flash)
    bad[0x8000 + 3 * 32 + 8] ^= 0x01
    with pytest.raises(FlashImageError, match="MD5"):
        parse_partition_table(bad)


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
    with pytest.raises(FlashImageError, match=message):
        qi.build_flash_image(tmp_path / "out.bin", micropython=src, **kwargs)
    assert not (tmp_path / "out.bin").exists()


def test_flash_sizes():
    assert qi.parse_flash_size("4MB") == 4 * MiB
    assert qi.parse_flash_size("16m") == 16 * MiB
    assert qi.parse_flash_size("8MiB") == 8 * MiB
    assert qi.parse_flash_size(2 * MiB) == 2 * MiB
    for bad in ("1MB", "4GB", "", "four", 3 * MiB, "4194305"):
        with pytest.raises(FlashImageError):
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
    assert read_flash_file(tmp_path / "o/f.bin", "/config.json") == cfg.read_bytes()


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
