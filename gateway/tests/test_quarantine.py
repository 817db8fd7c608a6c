"""The quarantine decisions (gateway/quarantine.py) on a clock the test sets: when a
board is quarantined, for how long, how it escalates and how it is released. What
the broker does with the commands: test_quarantine_e2e.py."""

from __future__ import annotations

import json

from terrapin.gateway.quarantine import MARK, Quarantine

BOARD = bytes.fromhex("ab" * 20)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _quarantine(clock: Clock) -> tuple[Quarantine, list[dict]]:
    sent: list[dict] = []
    q = Quarantine(
        lambda payload: sent.extend(json.loads(payload)["commands"]),
        drops=100,
        window=10,
        burst=1000,
        cooldown=60,
        max_cooldown=200,
        clock=clock,
    )
    return q, sent


def _drops(q: Quarantine, n: int, at: float) -> None:
    for _ in range(n):
        q.note_drop(BOARD, at)


def test_drops_spread_wider_than_the_window_never_quarantine():
    clock = Clock()
    q, sent = _quarantine(clock)
    for i in range(10):  # 99 per 11 s, 990 in all
        _drops(q, 99, clock.now + 11 * i)
    assert sent == [] and q.active == {}


def test_the_cooldown_doubles_per_offence_up_to_its_cap_and_is_forgotten_after_a_day():
    clock = Clock()
    q, sent = _quarantine(clock)
    seconds = []
    for _ in range(4):
        _drops(q, 100, clock.now)
        entry = q.active[BOARD]
        seconds.append(entry.until - clock.now)
        create, disable = sent[-2:]
        assert create["command"] == "createClient" and create["username"] == BOARD.hex()
        assert create["textname"] == f"{MARK} until {entry.until:.0f} offence {entry.offence}"
        assert disable == {"command": "disableClient", "username": BOARD.hex()}
        _drops(q, 500, clock.now)  # its backlog draining: no second command
        assert len(sent) == 3 * len(seconds) - 1  # create + disable each, delete before
        clock.now = entry.until
        assert q.release(BOARD, why="test")
        assert sent[-1] == {"command": "deleteClient", "username": BOARD.hex()}
    assert seconds == [60, 120, 200, 200]
    clock.now += 86_401
    _drops(q, 100, clock.now)
    assert q.active[BOARD].offence == 1
    assert q.status()["quarantined_total"] == 5 and q.status()["released_total"] == 4


def test_someone_elses_dynsec_client_is_enabled_again_never_deleted():
    clock = Clock()
    q, sent = _quarantine(clock)
    _drops(q, 100, clock.now)
    q.on_response(
        json.dumps(
            {
                "responses": [
                    {
                        "command": "createClient",
                        "error": "Client already exists",
                        "correlationData": BOARD.hex(),
                    },
                    {"command": "disableClient"},
                ]
            }
        ).encode()
    )
    assert q.broker_support is True
    q.release(BOARD)
    assert sent[-1] == {"command": "enableClient", "username": BOARD.hex()}


def test_drops_in_the_grace_after_a_connect_are_the_sessions_backlog_and_never_count():
    clock = Clock()
    q, sent = _quarantine(clock)
    q.on_connect()
    sent.clear()  # the listClients
    _drops(q, 5000, clock.now + 9.9)
    assert sent == [] and q.active == {}
    _drops(q, 100, clock.now + 10.1)
    assert BOARD in q.active


def test_more_than_its_burst_in_one_second_is_quarantined_at_once():
    clock = Clock()
    q, sent = _quarantine(clock)
    for i in range(10):  # 1,000 readings/s for 10 s: not more than the burst
        for _ in range(1000):
            q.note_arrival(BOARD, clock.now + i + 0.5)
    assert sent == []
    for _ in range(1001):
        q.note_arrival(BOARD, clock.now + 20.5)
    assert BOARD in q.active and sent[-1]["command"] == "disableClient"


def test_a_restarted_gateway_resumes_only_its_own_quarantines():
    clock = Clock()
    q, _ = _quarantine(clock)
    other = "cd" * 20
    clients = [
        {"username": BOARD.hex(), "textname": f"{MARK} until {clock.now + 30:.0f} offence 3"},
        {"username": other, "textname": "an operator's client"},
        {"username": "terrapin-gateway", "textname": f"{MARK} until 1 offence 1"},
        {"username": "ef" * 20, "textname": f"{MARK} until soon offence 1"},
    ]
    q.on_response(
        json.dumps(
            {
                "responses": [
                    {
                        "command": "listClients",
                        "correlationData": "resume",
                        "data": {"clients": clients},
                    }
                ]
            }
        ).encode()
    )
    assert list(q.active) == [BOARD]
    assert q.active[BOARD].offence == 3 and q.active[BOARD].until == clock.now + 30
    q.on_response(b"not json")  # logged, ignored


def test_gateway_init_loads_the_plugin_with_a_state_file_that_defers_to_the_password_file(
    tmp_path,
):
    from pathlib import Path

    from terrapin.gateway import mosquitto_conf
    from terrapin.gateway.home import init_home

    init_home(tmp_path)
    conf = (tmp_path / "mosquitto" / "mosquitto.conf").read_text()
    plugin = mosquitto_conf.find_dynsec_plugin()
    assert plugin is not None, "Debian's mosquitto package ships the plugin (make test installs it)"
    state = tmp_path / "mosquitto" / "data" / mosquitto_conf.DYNSEC_FILE
    assert f"plugin {plugin}\n" in conf
    assert f"plugin_opt_config_file {state}\n" in conf
    dynsec = json.loads(state.read_text())
    assert dynsec["clients"] == [] and dynsec["roles"] == []
    assert not any(dynsec["defaultACLAccess"].values())  # never grants: it defers
    assert state.stat().st_mode & 0o077 == 0
    acl = (tmp_path / "mosquitto" / "acl").read_text()
    gateway_part = acl.split("user terrapin-gateway\n", 1)[1].split("\nuser ", 1)[0]
    assert "topic write $CONTROL/dynamic-security/v1\n" in gateway_part
    assert "$CONTROL" not in acl.split("user terrapin-gateway\n", 1)[0]  # no board may
    assert Path(plugin).exists()
