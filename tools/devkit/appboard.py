"""The firmware app as the bench and `terrapin sim` drive it: its config file, its
first boot (the key is made on the board; the gateway allow-lists it), and what
its console says (signed seqs, TP-STATS). Shared by the HIL bench's boards and
`terrapin sim`; the board process itself is tools/devkit/virtualboard.py."""

from __future__ import annotations

import json
import re

from terrapin.gateway.errors import TerrapinError

STORED = re.compile(r"^\[debug\] stored seq (\d+) ", re.M)
_ADDR = re.compile(r"^\[info\] board address ([0-9a-f]{40})", re.M)
_PUB = re.compile(r"^\[info\] public key (04[0-9a-f]{128})", re.M)
BOARD_PASSWORD = "hil-bench-board-password"  # the bench's own broker; not a secret


class AppConsoleError(TerrapinError):
    """The board's console lacks a line the bench needs; ends with the console tail."""


def app_config(host: str, port: int, address: str = "", **overrides: object) -> dict:
    """A bench board's config.json: the broker (with the board's credentials once
    it has an address), simulated sensors, fast sampling, debug log."""
    cfg: dict = {
        "broker": {"host": host, "port": port, "keepalive_s": 10},
        "sample_period_s": 0.05,
        "sensors": [{"driver": "simulated"}],
        "ack_timeout_s": 2,
        "backoff_max_s": 2,
        "status_period_s": 5,
        "log": "debug",
    }
    if address:
        cfg["broker"].update(user=address, password=BOARD_PASSWORD)
    cfg.update(overrides)
    return cfg


def identity(console: str, name: str = "board") -> tuple[str, str]:
    """(address hex, public key hex) the board printed at boot."""
    addr, pub = _ADDR.search(console), _PUB.search(console)
    if not addr or not pub:
        raise AppConsoleError(f"{name}: no address on the console:\n{console[-2000:]}")
    return addr.group(1), pub.group(1)


def signed(console: str) -> list[int]:
    """Every seq the board reported as signed and written to its outbox, in order."""
    return [int(m) for m in STORED.findall(console)]


def last_stats(console: str, name: str = "board") -> dict:
    """The last TP-STATS line the board printed."""
    lines = [ln for ln in console.splitlines() if ln.startswith("TP-STATS ")]
    if not lines:
        raise AppConsoleError(f"{name}: no TP-STATS line:\n{console[-2000:]}")
    return json.loads(lines[-1][len("TP-STATS ") :])


def poll_info(con, seconds: float, pause: float = 0.3) -> tuple[float, int]:
    """TP1 `info` on `con` (a serialconsole.BoardConsole) for `seconds`, each answered
    within 3 s and from the running app: (slowest answer in s, answers)."""
    import time

    t0 = time.monotonic()
    slowest, answers = 0.0, 0
    while time.monotonic() - t0 < seconds:
        t = time.monotonic()
        info = con.request("info", timeout=3)
        slowest = max(slowest, time.monotonic() - t)
        answers += 1
        if info.get("state") != "online":
            raise AppConsoleError(f"info during the poll: {info}")
        time.sleep(pause)
    return slowest, answers
