"""Flash: the error paths a hobbyist meets, for real (no board attached here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tty
from pathlib import Path

import pytest
import serial

from terrapin.gateway.errors import TerrapinError
from terrapin.tools.board import flash as flasher
from terrapin.tools.cli.main import main


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "micropython.bin"
    path.write_bytes(b"\xe9" + os.urandom(4095))
    return path


@pytest.fixture
def silent_pty():
    """A serial device nobody answers on (the other end is held, never read)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    os.close(slave)
    try:
        yield path
    finally:
        os.close(master)


def test_missing_port(image, capsys):
    assert main(["device", "flash", "--port", "/dev/ttyTERRAPIN9", "--image", str(image)]) == 1
    err = capsys.readouterr().err
    assert "serial port /dev/ttyTERRAPIN9 does not exist" in err and "ls /dev/ttyUSB*" in err


def test_nobody_answers(image, silent_pty):
    with pytest.raises(TerrapinError) as exc:
        flasher.flash(silent_pty, "esp32", image, connect_attempts=1)
    assert f"no ESP32 bootloader answered on {silent_pty}" in str(exc.value)
    assert "hold BOOT" in exc.value.hint


def test_busy_port(image, silent_pty, capsys):
    holder = serial.Serial(silent_pty, exclusive=True)  # e.g. a serial monitor left open
    try:
        assert main(["device", "flash", "--port", silent_pty, "--image", str(image)]) == 1
    finally:
        holder.close()
    err = capsys.readouterr().err
    assert f"serial port {silent_pty} is busy" in err and "close the other program" in err


def test_no_permission(image, tmp_path):
    """EACCES on the port: the dialout hint. As root, the tool runs without the
    capabilities that bypass file permissions (setpriv), on a device owned by
    someone else, which is the situation of a user outside the dialout group."""
    device = tmp_path / "ttyUSB0"
    device.write_bytes(b"")
    device.chmod(0o600)
    cmd = [
        sys.executable,
        "-m",
        "terrapin.tools.cli.main",
        "device",
        "flash",
        "--port",
        str(device),
    ]
    cmd += ["--image", str(image)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot drop CAP_DAC_OVERRIDE")
        os.chown(device, 65534, 65534)
        cmd = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--", *cmd]
    else:
        device.chmod(0o000)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert f"no permission to open serial port {device}" in proc.stderr
    assert "sudo usermod -aG dialout $USER" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_image_from_cache_or_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(TerrapinError) as exc:
        flasher.find_image("esp32c3", None)
    expected = tmp_path / "cache" / "terrapin" / "micropython" / "esp32c3.bin"
    assert str(expected) in str(exc.value) and "ESP32_GENERIC_C3" in exc.value.hint
    expected.parent.mkdir(parents=True)
    expected.write_bytes(b"\xe9")
    assert flasher.find_image("esp32c3", None) == expected
    with pytest.raises(TerrapinError, match="does not exist"):
        flasher.find_image("esp32", tmp_path / "nope.bin")
