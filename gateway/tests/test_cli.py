"""`terrapin gateway init|status|device ...` and the bench at a tiny scale."""

from __future__ import annotations

import json
import subprocess

import pytest
from click.testing import CliRunner

from terrapin.gateway import mosquitto_conf
from terrapin.gateway.errors import TerrapinError
from terrapin.tools.cli.gateway import gateway
from terrapin.tools.cli.main import main
from terrapin.tools.devkit.gatewayproc import run_command
from terrapin.tools.devkit.simboard import board_address, new_key


def invoke(*args):
    return CliRunner().invoke(gateway, list(args), catch_exceptions=False)


def test_init_writes_config_database_and_broker_files(gw_home):
    d = gw_home.dir
    for name in (
        "gateway.toml",
        "gateway.db",
        "gateway.secret",
        "mosquitto/mosquitto.conf",
        "mosquitto/acl",
    ):
        assert (d / name).exists(), name
    users = mosquitto_conf.read_passwd(d / "mosquitto" / "passwd")
    assert mosquitto_conf.check_password(gw_home.gateway_password(), users["terrapin-gateway"])
    assert gw_home.config.mqtt.port == gw_home.mqtt_port
    with pytest.raises(TerrapinError, match="exists"):
        invoke("init", "--dir", str(d))


def test_device_add_list_remove(gw_home):
    cfg = str(gw_home.config_path)
    addr = board_address(new_key()).hex()
    out = json.loads(invoke("device", "add", "0x" + addr.upper(), "--json", "--config", cfg).output)
    assert out["mqtt_user"] == addr and out["client_id"] == addr
    users = mosquitto_conf.read_passwd(gw_home.dir / "mosquitto" / "passwd")
    assert mosquitto_conf.check_password(out["mqtt_password"], users[addr])
    listed = json.loads(invoke("device", "list", "--json", "--config", cfg).output)
    assert [d["address"] for d in listed] == [addr]
    assert "removed" in invoke("device", "remove", addr, "--config", cfg).output
    assert addr not in mosquitto_conf.read_passwd(gw_home.dir / "mosquitto" / "passwd")
    with pytest.raises(TerrapinError, match="not on the allow-list"):
        invoke("device", "remove", addr, "--config", cfg)
    with pytest.raises(TerrapinError, match="not a board address"):
        invoke("device", "add", "xyz", "--config", cfg)


def test_mistakes_are_one_line_and_an_exit_code(tmp_path):
    proc = subprocess.run(
        run_command(tmp_path / "no.toml"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no gateway config" in proc.stderr and "gateway init" in proc.stderr


def test_status_of_a_running_gateway(gw_home, gw_running, gw_board, capsys):
    gw_board.publish(gw_board.envelope(1), 1)
    assert gw_board.wait_settled([1])
    assert main(["gateway", "status", "--json", "--config", str(gw_home.config_path)]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["counts"]["stored"] == 1 and st["connected"]
    assert main(["gateway", "status", "--config", str(gw_home.config_path)]) == 0
    assert gw_board.hex in capsys.readouterr().out


def test_status_when_nothing_runs(gw_home, capsys):
    assert main(["gateway", "status", "--config", str(gw_home.config_path)]) == 1
    assert "does not answer" in capsys.readouterr().err


def test_bench_smoke(mosquitto_exe, tmp_path):
    from terrapin.tools.bench.gateway import run_bench

    r = run_bench(2, 200, 20, 200.0, tmp_path, repeat=1)
    for key in (
        "passthrough_per_s",
        "gateway_per_s",
        "ratio",
        "verify_per_s",
        "p99_ack_latency_ms",
    ):
        assert r[key] > 0, key
    assert r["exactly_once"] and r["stored"] == r["expected"] == 220
    assert r["acked"] == 220 and r["acked_not_stored"] == r["published_not_acked"] == 0


def test_bench_exactly_once_checks_acks_against_the_database(tmp_path):
    # rows == expected alone would pass here: seq 3 was acked, seq 4 stored instead.
    from terrapin.gateway.store import Store, open_db
    from terrapin.tools.bench.gateway import exactly_once
    from terrapin.tools.devkit.simboard import SimBoard

    db_path = tmp_path / "gateway.db"
    Store(db_path).close()  # the schema
    board = SimBoard("127.0.0.1", 1)  # never connected: only its ACK bookkeeping is used
    board.acked.update({1, 2, 3})
    published = {board.address: {1, 2, 3}}

    def store(seqs):
        db = open_db(db_path)
        db.execute("DELETE FROM readings")
        for seq in seqs:
            db.execute(
                "INSERT INTO readings (device, seq, digest, envelope, time, received_at)"
                " VALUES (?, ?, x'00', x'00', 0, 0)",
                (board.address, seq),
            )
        db.commit()
        db.close()

    store([1, 2, 3])
    assert exactly_once(db_path, [board], published, 3)["exactly_once"]
    store([1, 2, 4])
    once = exactly_once(db_path, [board], published, 3)
    assert once["stored"] == once["expected"] == 3
    assert not once["exactly_once"] and once["acked_not_stored"] == 1
    store([1, 2, 3])
    board.acked.discard(3)
    board.rejected[3] = 1  # settled, but by a rejection: not stored exactly once and acked
    once = exactly_once(db_path, [board], published, 3)
    assert not once["exactly_once"] and once["published_not_acked"] == 1
