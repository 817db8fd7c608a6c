"""The firmware type-checks against MicroPython's own stubs (micropython-esp32-stubs).

The stubs describe MicroPython's `machine`, `network`, `time`, `socket`, ... as
they are on an ESP32, so a call with the wrong arguments or an attribute the
ESP32 port lacks fails here instead of on a board. The stubs are installed into
their own folder (.venv/mpstubs, by `make test`) because they shadow CPython's
standard library. mypy also reports problems inside the stubs themselves;
only findings in firmware/ count.

MicroPython code carries no annotations, so mypy's inference about Optional
attributes is noise here; the check keeps the findings that mean "this API
does not exist or is called wrongly on an ESP32" (attr-defined, call-arg,
name-defined, import-not-found, ...) and switches off the inference ones.
Code that only runs on the unix port or CPython (board/unix.py,
console_main.py, the tests) is not ESP32 code and is left out.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INFERENCE_NOISE = (
    "union-attr", "assignment", "var-annotated", "misc", "index", "no-redef",
    "type-var", "has-type", "operator", "return-value", "arg-type",
)  # fmt: skip
NOT_ESP32 = (
    "firmware/tests/",
    "firmware/board/unix.py",
    "firmware/board/unixboot.py",
    "firmware/console_main.py",
    "firmware/checkout.py",
)


def own_classes() -> set[str]:
    """Classes the firmware defines. To keep resident heap small, boot-only
    helpers set their attributes outside __init__, which mypy cannot follow:
    'has no attribute' on these is noise; on MicroPython's classes it is not."""
    names: set[str] = set()
    for path in (REPO / "firmware").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                names.add(node.name)
    return names


def esp32_sources() -> list[str]:
    return sorted(
        str(p.relative_to(REPO))
        for p in (REPO / "firmware").rglob("*.py")
        if not str(p.relative_to(REPO)).startswith(NOT_ESP32)
    )


STUBS = Path(os.environ.get("TERRAPIN_MPSTUBS", Path(sys.prefix) / "mpstubs"))


def _mypy(*paths: str) -> list[str]:
    if not (STUBS / "machine.pyi").exists():
        # Under CI the plugin's one skip rule turns this into a failure (docs/HIL.md).
        pytest.skip(f"MicroPython stubs not found in {STUBS} (make test installs them)")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--custom-typeshed-dir",
            str(STUBS),
            "--no-site-packages",
            "--follow-imports=silent",
            "--explicit-package-bases",
            "--check-untyped-defs",
            *(f"--disable-error-code={code}" for code in INFERENCE_NOISE),
            "--no-error-summary",
            "--cache-dir",
            str(REPO / ".cache" / "mypy-firmware"),
            *paths,
        ],
        cwd=REPO,
        env={**os.environ, "MYPYPATH": str(STUBS)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if "error:" not in proc.stdout and proc.returncode not in (0, 1):
        pytest.fail(f"mypy did not run: {proc.stdout}{proc.stderr}", pytrace=False)
    noise = tuple(f'error: "{name}" has no attribute' for name in own_classes())
    return [
        line
        for line in proc.stdout.splitlines()
        if line.startswith(tuple(paths)) and not any(n in line for n in noise)
    ]


def test_firmware_matches_the_esp32_stubs():
    findings = _mypy(*esp32_sources())
    assert not findings, "\n".join(findings)


def test_the_check_catches_a_wrong_call(tmp_path):
    # The same check must fail on firmware that misuses the ESP32 API.
    bad = REPO / "firmware" / "sensors" / "_typecheck_probe.py"
    bad.write_text("import machine\nmachine.I2C(0).readfrom_mem(0x76)\nmachine.Pin(2).nosuch()\n")
    try:
        findings = _mypy("firmware/sensors/_typecheck_probe.py")
    finally:
        bad.unlink()
    assert any("readfrom_mem" in f for f in findings), findings
    assert any("nosuch" in f for f in findings), findings
