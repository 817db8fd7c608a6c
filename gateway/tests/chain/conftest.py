"""Fixtures for the chain tests; the helpers live in terrapin.tools.devkit.chainkit."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from terrapin.tools.devkit.chainkit import Anvil


@pytest.fixture
def anvil(anvil_exe: str, tmp_path: Path) -> Iterator[Anvil]:
    node = Anvil(anvil_exe, tmp_path, "--silent").start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def rng() -> random.Random:
    return random.Random(int(os.environ.get("TERRAPIN_TEST_SEED", "6")))
