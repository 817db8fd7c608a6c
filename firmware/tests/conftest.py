"""Shared fixtures for the crypto-core tests (firmware/tests/, not app/).

`run_mp` runs a MicroPython script under the unix port (heapsize ESP32_HEAP,
the ESP32's free heap in 64-bit terms: tools/micropython.py) with the repo
root on sys.path, feeds it lines on stdin and returns its stdout lines; a
failure shows the script's stderr.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from terrapin.tools.micropython import ESP32_HEAP

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent


def double_hex(value: float) -> str:
    """A float as the hex of its IEEE double: exact across interpreters
    (no reliance on MicroPython's decimal float parsing)."""
    return struct.pack(">d", value).hex()


def mp_vector_line(vector: dict) -> str:
    """One stdin line for mp_vectors.py."""
    if "reason" in vector:
        return json.dumps(
            {
                "kind": "invalid",
                "name": vector["name"],
                "envelope": vector["envelope"],
                "topic": vector["topic_address"],
                "pub": vector["public_key"],
            }
        )
    return json.dumps(
        {
            "kind": "valid",
            "name": vector["name"],
            "priv": vector["private_key"],
            "seq": vector["seq"],
            "time": vector["time"],
            "records": [[r["name"], r["unit"], double_hex(r["value"])] for r in vector["records"]],
            "envelope": vector["envelope"],
        }
    )


@pytest.fixture(scope="session")
def vector_line() -> Callable[[dict], str]:
    return mp_vector_line


@pytest.fixture(scope="session")
def run_mp(micropython_exe: str) -> Callable[..., list[str]]:
    def run(script, lines=(), heapsize: str = ESP32_HEAP, timeout: float = 120) -> list[str]:
        proc = subprocess.run(
            [micropython_exe, "-X", f"heapsize={heapsize}", str(script)],
            input="".join(line + "\n" for line in lines).encode(),
            capture_output=True,
            cwd=REPO_ROOT,
            timeout=timeout,
            env={**os.environ, "MICROPYPATH": str(REPO_ROOT)},
            check=False,
        )
        out = proc.stdout.decode(errors="replace")
        err = proc.stderr.decode(errors="replace")
        if proc.returncode != 0:
            pytest.fail(
                f"{script.name} under micropython exited {proc.returncode}\n"
                f"--- stdout ---\n{out[-3000:]}\n--- stderr ---\n{err[-3000:]}",
                pytrace=False,
            )
        return out.splitlines()

    return run
