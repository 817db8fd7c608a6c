"""The HIL plugin is a good neighbour: another project with terrapin installed in
the same environment sees none of its options and none of its skips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from terrapin.hil import plugin


def _pytest(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _project(tmp_path: Path) -> Path:
    """A project of its own: its own ini file (so its own rootdir) and a slow test."""
    project = tmp_path / "elsewhere"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: a slow test\n")
    (project / "test_other.py").write_text(
        "import pytest\n\n@pytest.mark.slow\ndef test_slow_runs():\n    assert True\n"
    )
    return project


def test_another_project_sees_no_terrapin_options(tmp_path) -> None:
    out = _pytest(_project(tmp_path), "--help")
    assert out.returncode == 0, out.stderr
    assert "--terrapin-" not in out.stdout, out.stdout
    assert "Terrapin hardware-in-the-loop" not in out.stdout


def test_another_projects_slow_test_runs(tmp_path) -> None:
    out = _pytest(_project(tmp_path), "-rs", "test_other.py")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout and "skipped" not in out.stdout, out.stdout


def test_every_option_is_namespaced(pytestconfig) -> None:
    """Ours are loaded here (this project's addopts) and all start with --terrapin-."""
    group = pytestconfig._parser.getgroup("terrapin-hil")  # type: ignore[attr-defined]
    names = [name for opt in group.options for name in opt.names()]
    assert names and all(n.startswith("--terrapin-") for n in names), names
    assert plugin.hil_targets(pytestconfig)


def _skipping_project(tmp_path: Path) -> Path:
    project = tmp_path / "skips"
    project.mkdir()
    (project / "pytest.ini").write_text(
        "[pytest]\naddopts = -p terrapin.hil.plugin\nmarkers =\n"
        "    hardware: needs a board\n    slow: slow\n"
    )
    (project / "test_skips.py").write_text(
        "import pytest\n\n"
        "def test_plain_skip():\n    pytest.skip('no frobnicator here')\n\n"
        "@pytest.mark.hardware\ndef test_hardware_skip():\n    pytest.skip('no board')\n"
    )
    return project


def test_one_skip_rule_fails_skips_in_ci_unless_hardware(tmp_path, monkeypatch) -> None:
    project = _skipping_project(tmp_path)
    monkeypatch.setenv("CI", "true")
    out = _pytest(project, "-rA", "test_skips.py")
    assert "1 failed" in out.stdout and "1 skipped" in out.stdout, out.stdout
    assert "CI=true forbids this skip" in out.stdout and "no frobnicator here" in out.stdout
    monkeypatch.delenv("CI")
    out = _pytest(project, "-rA", "test_skips.py")
    assert out.returncode == 0 and "2 skipped" in out.stdout, out.stdout
