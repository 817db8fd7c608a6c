"""Two `device add` (or add + remove) at once lose no broker user (issue 14's race):
the password file's read-modify-write runs under a lock, in separate processes."""

from __future__ import annotations

import subprocess
import sys

from terrapin.gateway import allowlist, mosquitto_conf

N = 60  # boards per process; without the lock some of the 2 x N writes are lost

SCRIPT = """
import sys
from terrapin.gateway import allowlist
config, action, start, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sys.stdin.readline()  # both processes start writing at the same moment
for i in range(start, start + n):
    addr = i.to_bytes(20, "big")
    if action == "add":
        allowlist.add_board(config, addr, None)
    else:
        allowlist.remove_board(config, addr)
"""


def _together(config, *jobs: tuple[str, int]) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(config), action, str(start), str(N)],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for action, start in jobs
    ]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err


def _users(gw_home) -> set[str]:
    return set(mosquitto_conf.read_passwd(gw_home.dir / "mosquitto" / "passwd"))


def _hexes(start: int) -> set[str]:
    return {i.to_bytes(20, "big").hex() for i in range(start, start + N)}


def test_two_concurrent_adds_keep_every_user(gw_home):
    _together(gw_home.config_path, ("add", 1000), ("add", 2000))
    users = _users(gw_home)
    missing = (_hexes(1000) | _hexes(2000)) - users
    assert not missing, f"{len(missing)} broker users lost, e.g. {sorted(missing)[:3]}"
    assert {mosquitto_conf.GATEWAY_USER, mosquitto_conf.OTA_USER} <= users
    passwd = gw_home.dir / "mosquitto" / "passwd"
    assert passwd.stat().st_mode & 0o037 == 0  # 0600, or 0640 to the broker group as root
    assert not [p.name for p in passwd.parent.iterdir() if p.name.endswith(".tmp")]


def test_add_and_remove_at_once_keep_each_others_changes(gw_home):
    for i in range(3000, 3000 + N):
        allowlist.add_board(gw_home.config_path, i.to_bytes(20, "big"), None)
    _together(gw_home.config_path, ("add", 4000), ("remove", 3000))
    users = _users(gw_home)
    assert not _hexes(4000) - users, "an add was lost"
    assert not _hexes(3000) & users, "a removed board came back"
