"""`gateway backup` under load and `gateway restore` into a fresh home: every reading
acked before the backup started is restored, and anchoring resumes where it was,
without anchoring a batch twice (real Mosquitto, boards, gateway process and anvil)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from terrapin.gateway.instancelock import EXIT_LOCKED
from terrapin.tools.devkit.broker import Mosquitto
from terrapin.tools.devkit.chainkit import ANVIL_KEY, Anvil, TcpProxy, deploy_on_rpc
from terrapin.tools.devkit.gatewayhome import GatewayHome, chain_section, start_broker
from terrapin.tools.devkit.gatewayproc import GatewayProcess

CLI = (sys.executable, "-m", "terrapin.tools.cli.main", "gateway")
ENV = {"TERRAPIN_CHAIN_KEY": ANVIL_KEY}
DONE = ("anchored", "confirmed")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=180)


def rows(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def wait_for(what: str, check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def anchored(db: Path) -> dict[int, tuple]:
    sql = "SELECT id, root, tx_hash FROM batches WHERE status IN ('anchored', 'confirmed')"
    return {r[0]: r[1:] for r in rows(db, sql)}


def all_anchored(db: Path) -> bool:
    left = rows(db, "SELECT COUNT(*) FROM batches WHERE status NOT IN ('anchored', 'confirmed')")
    unbatched = rows(
        db, "SELECT COUNT(*) FROM readings WHERE id NOT IN (SELECT reading_id FROM batch_leaves)"
    )
    return left[0][0] == 0 and unbatched[0][0] == 0


@pytest.fixture
def chain(anvil_exe: str, tmp_path: Path):
    node = Anvil(anvil_exe, tmp_path, "--silent").start()
    proxy = TcpProxy(node.port).up()
    try:
        deployed = deploy_on_rpc(node.url)
        yield (
            proxy,
            chain_section(
                proxy.url, registry=deployed.registry, anchor=deployed.anchor, rpc_timeout=2
            ),
        )
    finally:
        proxy.down()
        node.stop()


def test_backup_under_load_restores_acked_readings_and_resumes_anchoring(
    chain, mosquitto_exe, tmp_path, gw_tools
):
    proxy, section = chain
    home = GatewayHome(tmp_path / "gw", chain=section)
    broker = start_broker(home, extra_config="max_inflight_messages 1000")
    gw = GatewayProcess(home, env=ENV)
    load = None
    try:
        creds = [home.add_sim_board() for _ in range(3)]
        gw.start()
        load = gw_tools.BoardLoad(home, broker, creds, rate=40)
        load.start()
        wait_for("a first anchored batch", lambda: len(anchored(home.db_path)) >= 2)
        # From here the chain sees nothing new from this gateway: what the backup
        # holds is all the chain has, and the restored gateway must carry on from it.
        proxy.down()
        acked_before = {}
        for b in load.boards:
            with b._lock:
                acked_before[b.address] = set(b.acked)
        anchored_before = anchored(home.db_path)
        dest = tmp_path / "backup"
        t0 = time.monotonic()
        made = cli("backup", str(dest), "--config", str(home.config_path))
        took = time.monotonic() - t0
        assert made.returncode == 0, made.stderr
        assert load.publishing(), "the load stopped during the backup"
        time.sleep(1.0)  # readings go on arriving after the backup
        load.stop()
        gw_tools.wait_settled(load.boards, load.published)
    finally:
        if load is not None:
            load.close()
        gw.stop()
        broker.stop()
    print(
        f"backup under load of {sum(map(len, acked_before.values()))} acked readings: {took:.1f} s"
    )

    assert (dest.stat().st_mode & 0o777) == 0o700
    assert all((p.stat().st_mode & 0o777) == 0o600 for p in dest.rglob("*") if p.is_file())
    assert not list(dest.rglob("*-wal")), "the database copy must be self-contained"
    assert "online backup" in made.stdout

    restored = tmp_path / "restored"
    done = cli("restore", str(dest), "--dir", str(restored))
    assert done.returncode == 0, done.stderr
    db = restored / "gateway.db"
    for address, seqs in acked_before.items():
        have = {
            r[0] for r in rows(db, f"SELECT seq FROM readings WHERE device = x'{address.hex()}'")
        }
        missing = sorted(seqs - have)
        assert not missing, f"board {address.hex()}: acked before the backup, lost: {missing[:10]}"
    restored_batches = anchored(db)
    assert {k: v for k, v in restored_batches.items() if k in anchored_before} == anchored_before
    txs_before = rows(db, "SELECT id, batch_id, tx_hash FROM chain_txs ORDER BY id")

    again = cli("restore", str(dest), "--dir", str(restored))
    assert again.returncode == 1 and "already has a gateway" in again.stderr, again.stderr

    # Resume on the restored home: same ports, same chain (the proxy back up).
    proxy.up()
    mq = restored / "mosquitto"
    broker2 = Mosquitto(mq / "run", port=home.mqtt_port, base_config=mq / "mosquitto.conf")
    broker2.start()
    gw2 = GatewayProcess(restored / "gateway.toml", env=ENV)
    try:
        gw2.start()
        live = cli("restore", str(dest), "--dir", str(restored), "--force")
        assert live.returncode == EXIT_LOCKED and f"pid {gw2.pid}" in live.stderr, live.stderr
        wait_for("every restored reading anchored", lambda: all_anchored(db), timeout=90)
        status = gw2.status()["stages"]["Anchorer"]
        assert status["error"] is None, status
    finally:
        gw2.stop()
        broker2.stop()
    after = anchored(db)
    for batch_id, (root, tx_hash) in restored_batches.items():
        assert after[batch_id] == (root, tx_hash), f"batch {batch_id} was anchored again"
    txs_after = rows(db, "SELECT id, batch_id, tx_hash FROM chain_txs ORDER BY id")
    assert txs_after[: len(txs_before)] == txs_before
    old_ids = set(restored_batches)
    assert not [t for t in txs_after[len(txs_before) :] if t[1] in old_ids], "re-sent an anchor"
    assert len(after) > len(restored_batches), "the batches after the backup were not anchored"


def test_a_damaged_backup_and_a_used_dest_are_refused_and_force_keeps_the_old_home(
    gw_home, tmp_path
):
    dest = tmp_path / "b"
    assert cli("backup", str(dest), "--config", str(gw_home.config_path)).returncode == 0
    used = cli("backup", str(dest), "--config", str(gw_home.config_path))
    assert used.returncode == 1 and "is not an empty folder" in used.stderr

    old_config = gw_home.config_path.read_text()
    forced = cli("restore", str(dest), "--dir", str(gw_home.dir), "--force")
    assert forced.returncode == 0, forced.stderr
    kept = list(gw_home.dir.glob("gateway.toml.bak-*"))
    assert len(kept) == 1 and kept[0].read_text() == old_config
    assert list(gw_home.dir.glob("gateway.db.bak-*"))

    db = dest / "home" / "gateway.db"
    db.write_bytes(db.read_bytes()[:-10] + b"\0" * 10)
    broken = cli("restore", str(dest), "--dir", str(tmp_path / "fresh"))
    assert broken.returncode == 1 and "damaged (checksum)" in broken.stderr
    assert "Traceback" not in broken.stderr and not (tmp_path / "fresh").exists()
