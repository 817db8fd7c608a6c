"""`gateway init --force` on a live home: keeps settings, sections, secrets, boards and
the database; backs up what it replaces; says exactly what it did."""

from __future__ import annotations

import stat

import pytest
from click.testing import CliRunner

from terrapin.gateway import mosquitto_conf
from terrapin.gateway.errors import TerrapinError
from terrapin.tools.cli.gateway import gateway
from terrapin.tools.devkit.gatewayproc import GatewayThread
from terrapin.tools.devkit.simboard import board_address

CHAIN = (
    "\n[chain]\n"
    "# deployed on 2026-12-01\n"
    'network = "http://127.0.0.1:8545"\n'
    'registry = "0x5FbDB2315678afecb367f032d93F642f64180aa3"\n'
    'anchor = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"\n'
    "\n[rewards]\n"
    'budget = "1000"\n'
    "tiers = { a = 1, b = [2, 3] }\n"
)


def _init(*args: str) -> list[str]:
    result = CliRunner().invoke(gateway, ["init", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_force_on_a_live_home_keeps_everything_and_says_what_it_did(gw_home, gw_broker):
    d = gw_home.dir
    text = gw_home.config_path.read_text().replace("replay_window = 4096", "replay_window = 100")
    gw_home.config_path.write_text(text + CHAIN)
    original = gw_home.config_path.read_text()
    chain_before = gw_home.config.section("chain")
    rewards_before = gw_home.config.section("rewards")
    key, _ = gw_home.add_sim_board()
    secret, ota = (d / "gateway.secret").read_text(), (d / "ota.secret").read_text()
    passwd = d / "mosquitto" / "passwd"
    running = GatewayThread(gw_home.config).start()
    try:
        out = _init("--dir", str(d), "--force")
        assert running.gateway.ingest.connected.is_set()
    finally:
        running.stop()

    cfg = gw_home.config
    assert cfg.section("chain") == chain_before and cfg.section("rewards") == rewards_before
    assert cfg.policy.replay_window == 100 and cfg.mqtt.port == gw_home.mqtt_port
    assert cfg.api.port == gw_home.api_port
    assert (d / "gateway.secret").read_text() == secret and (d / "ota.secret").read_text() == ota
    users = mosquitto_conf.read_passwd(passwd)
    assert board_address(key).hex() in users and len(users) == 3
    assert mosquitto_conf.check_password(secret.strip(), users[mosquitto_conf.GATEWAY_USER])

    assert f"kept database {gw_home.db_path}" in out and not any("created" in x for x in out)
    assert f"kept {d}/gateway.secret (--rotate-secret replaces it)" in out
    assert any(x.startswith(f"kept {passwd}") and "1 board user(s)" in x for x in out), out
    # The config's text changed (regenerated comments): the old one is backed up, 0600.
    changed = [x for x in out if x.startswith(f"changed {gw_home.config_path}")]
    assert len(changed) == 1, out
    backup = d / changed[0].split("the old one is ")[1].rstrip(")")
    assert backup.read_text() == original and _mode(backup) == 0o600
    assert any("runs on this home: restart it" in x for x in out), out

    # Again: nothing to change, and it says so for every file.
    again = _init("--dir", str(d), "--force")
    assert not [x for x in again if x.startswith(("changed", "wrote", "created"))], again


def test_rotate_secret_replaces_both_passwords_and_keeps_the_boards(gw_home):
    d = gw_home.dir
    old_secret = (d / "gateway.secret").read_text()
    gw_home.add_sim_board()
    out = _init("--dir", str(d), "--force", "--rotate-secret")
    new_secret = (d / "gateway.secret").read_text()
    assert new_secret != old_secret and _mode(d / "gateway.secret") == 0o600
    backups = sorted(d.glob("gateway.secret.bak-*"))
    assert len(backups) == 1 and backups[0].read_text() == old_secret
    assert _mode(backups[0]) == 0o600
    users = mosquitto_conf.read_passwd(d / "mosquitto" / "passwd")
    assert mosquitto_conf.check_password(new_secret.strip(), users[mosquitto_conf.GATEWAY_USER])
    ota = (d / "ota.secret").read_text().strip()
    assert mosquitto_conf.check_password(ota, users[mosquitto_conf.OTA_USER])
    assert len(users) == 3  # the board's user is still there
    wrote = [x for x in out if "passwd: user(s)" in x]
    assert wrote and "terrapin-gateway, terrapin-ota; 1 board user(s) kept" in wrote[0]


def test_without_force_nothing_is_touched(gw_home):
    before = gw_home.config_path.read_text()
    with pytest.raises(TerrapinError, match="exists"):
        CliRunner().invoke(gateway, ["init", "--dir", str(gw_home.dir)], catch_exceptions=False)
    with pytest.raises(TerrapinError, match="--rotate-secret needs --force"):
        CliRunner().invoke(
            gateway, ["init", "--dir", str(gw_home.dir), "--rotate-secret"], catch_exceptions=False
        )
    assert gw_home.config_path.read_text() == before
    broken = gw_home.config_path.read_text() + "\n[pipline]\n"
    gw_home.config_path.write_text(broken)
    with pytest.raises(TerrapinError, match=r"not updating .*unknown section"):
        CliRunner().invoke(
            gateway, ["init", "--dir", str(gw_home.dir), "--force"], catch_exceptions=False
        )
    assert gw_home.config_path.read_text() == broken
