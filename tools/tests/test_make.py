"""The Makefile's slow steps say one line each; their output goes to a log shown only
when a step fails (what `make demo` and `make test` print on a fresh machine)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from terrapin.tools.devkit.chainkit import REPO

MAKE = shutil.which("make")


def make(*args: str) -> subprocess.CompletedProcess:
    if MAKE is None:
        pytest.fail("make is not installed (apt-get install make)")
    return subprocess.run(
        [MAKE, "--no-print-directory", "-C", str(REPO), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_creating_the_venv_is_one_line(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    done = make(f"VENV={venv}", f"{venv}/bin/python")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [f"creating {venv} with python3"], done.stdout
    assert done.stderr == ""
    assert (venv / "bin" / "python").exists() and (venv / "make.log").exists()


def test_a_failing_step_shows_its_log(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"  # a pip that fails, as on a machine without a network
    python.write_text(
        "#!/bin/sh\necho 'ERROR: No matching distribution found for esptool'\nexit 3\n"
    )
    python.chmod(0o755)
    done = make(f"VENV={venv}", f"{venv}/.stamp-demo")
    assert done.returncode != 0
    lines = done.stdout.splitlines()
    assert lines[0] == f"pip: terrapin and the board tools into {venv}"
    assert "ERROR: No matching distribution found for esptool" in lines
    assert lines[-1] == (
        f"failed: pip: terrapin and the board tools into {venv} (log: {venv}/make.log)"
    )
