"""Nothing the app imports is unloaded and none of its functions is deleted
(issue 18: modules by responsibility, not by load time).

The deployed firmware (.mpy, as on a board) boots on the unix port, takes
three readings that a test gateway acknowledges through Mosquitto, and exits;
then the harness lists what is still there. The app used to unload config,
its schema, the key store, keccak, the curve code, the outbox scan, status
and board/unixboot after use, and to delete its boot functions
(`app._forget_boot`).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from terrapin.tools.board.deploy import DirTarget, deploy
from terrapin.tools.micropython import micropython_command

pytestmark = [pytest.mark.micropython, pytest.mark.mosquitto]

PKG = "terrapin.firmware."
# What boot, a reading and a status message import: each must still be there.
USED = (
    "config", "keystore", "keccak", "secp256k1", "cose", "cborenc",
    "outbox", "seqstore", "status", "uplink", "mqtt", "ack",
    "schedule", "board.unix", "board.unixboot", "app",
)  # fmt: skip

HARNESS = """
import sys
sys.path.insert(0, 'lib')
from terrapin.firmware.board import unix
from terrapin.firmware import app
before = sorted(k for k in dir(app) if not k.startswith('__'))
code = unix.main(sys.argv[1:])
print('CODE', code)
print('MODULES', ' '.join(sorted(m for m in sys.modules if m.startswith('terrapin.firmware'))))
print('GONE', ' '.join(k for k in before if not hasattr(app, k)))
"""


def _line(out: str, tag: str) -> list[str]:
    for line in out.splitlines():
        if line.startswith(tag + " ") or line == tag:
            return line.split()[1:]
    raise AssertionError(f"no {tag} line in:\n{out[-3000:]}")


def test_the_app_keeps_every_module_and_function_it_used(fw, gateway, mosquitto, tmp_path):
    deploy(DirTarget(tmp_path))
    (tmp_path / "harness.py").write_text(HARNESS)
    cfg = fw.board_config(mosquitto.port, log="info")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    proc = subprocess.run(
        micropython_command(
            "harness.py", "--config", "config.json", "--flash", "flash",
            "--max-readings", "3", "--exit-when-drained", "--period-ms", "20",
        ),
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert _line(out, "CODE") == ["0"], out[-3000:]
    assert sorted(seq for _, seq in gateway.digests) == [1, 2, 3], out[-2000:]
    loaded = set(_line(out, "MODULES"))
    missing = [m for m in USED if PKG + m not in loaded]
    assert not missing, f"unloaded after use: {missing}\n{out[-2000:]}"
    assert _line(out, "GONE") == [], out[-2000:]
