"""`gateway init --store postgresql://...` and `gateway migrate --to postgresql://...`."""

from __future__ import annotations

import random
import subprocess
import sys

from click.testing import CliRunner

from terrapin.gateway.chain import tables as chain_tables
from terrapin.gateway.chain.anchorer import Anchorer
from terrapin.gateway.chain.batcher import Batcher
from terrapin.gateway.chain.node import Chain
from terrapin.gateway.config import load_config
from terrapin.gateway.pgsql import PgConnection
from terrapin.gateway.store import DUPLICATE, STORED, Pending
from terrapin.gateway.storebase import open_store, store_location
from terrapin.tools.cli.gateway import gateway
from terrapin.tools.devkit.chainkit import add_readings
from terrapin.tools.devkit.simboard import SimBoard


def run(*args: str):
    return CliRunner().invoke(gateway, list(args[1:]), catch_exceptions=False)


def terrapin(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command: its exit code and its one-line error."""
    argv = [sys.executable, "-m", "terrapin.tools.cli.main", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def test_init_with_a_postgres_store_creates_the_schema(tmp_path, postgres_url):
    result = run("gateway", "init", "--dir", str(tmp_path / "gw"), "--store", postgres_url)
    assert result.exit_code == 0, result.output
    cfg = load_config(tmp_path / "gw" / "gateway.toml")
    assert store_location(cfg) == postgres_url
    tables = {
        r[0]
        for r in PgConnection(postgres_url).execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    }
    assert {"readings", "devices", "rejections", "gateway_meta"} <= tables
    assert not (tmp_path / "gw" / "gateway.db").exists()  # nothing kept in a file


def test_init_refuses_a_store_that_is_not_postgres(tmp_path):
    proc = terrapin("gateway", "init", "--dir", str(tmp_path), "--store", "mysql://x")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "not a postgresql:// URL" in proc.stderr


def test_migrate_copies_everything_and_the_gateway_goes_on(tmp_path, postgres_url):
    assert run("gateway", "init", "--dir", str(tmp_path / "gw")).exit_code == 0
    config = str(tmp_path / "gw" / "gateway.toml")
    db = load_config(config).store.path
    rng = random.Random(11)
    boards = [SimBoard.make(rng) for _ in range(3)]
    readings = add_readings(chain_tables.connect(db), boards, 30)
    Batcher(db, batch_size=10).close_due(force=True)
    Anchorer(db, Chain.connect()).anchor_pending()

    result = run("gateway", "migrate", "--to", postgres_url, "--config", config)
    assert result.exit_code == 0, result.output
    assert "readings: 30 rows copied" in result.output and "[store] url" in result.output

    pg = PgConnection(postgres_url)
    for table, want in [("readings", 30), ("devices", 3), ("batches", 3), ("batch_leaves", 30)]:
        assert pg.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == want, table
    statuses = {r[0] for r in pg.execute("SELECT status FROM batches")}
    assert statuses <= {chain_tables.ANCHORED, chain_tables.CONFIRMED}
    found = chain_tables.leaf_proof(pg, readings[17][0])
    assert found is not None and found.batch.id == 1
    # The store goes on where the file stopped: old readings are duplicates, new ones
    # get ids after the copied ones, so the batcher takes exactly them next.
    store = open_store(postgres_url)
    _, board, seq = readings[-1]
    out, _ = store.commit([Pending(board.address, seq, b"\x00" * 32, b"e", 0, 1.0)])
    assert out[0].status != STORED
    new = Pending(board.address, seq + 1, b"\x05" * 32, b"e", 0, 1.0)
    assert store.commit([new])[0][0].status == STORED
    assert store.commit([new])[0][0].status == DUPLICATE
    assert store.reading(board.address, seq + 1)["id"] == 31
    store.close()
    (batch,) = Batcher(postgres_url, batch_size=10).close_due(force=True)
    assert (batch.id, batch.first_reading, batch.count) == (3, 31, 1)

    again = terrapin("gateway", "migrate", "--to", postgres_url, "--config", config)
    assert again.returncode != 0 and "Traceback" not in again.stderr
    assert "already holds" in again.stderr  # never copied twice


def test_instance_add_needs_postgres_and_makes_a_user_a_secret_and_a_config(tmp_path, postgres_url):
    from terrapin.gateway import mosquitto_conf

    assert run("gateway", "init", "--dir", str(tmp_path / "lite")).exit_code == 0
    proc = terrapin(
        "gateway", "instance", "add", "pi-2", "--api-port", "8399",
        "--config", str(tmp_path / "lite" / "gateway.toml"),
    )  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "PostgreSQL" in proc.stderr and "gateway migrate" in proc.stderr

    home = tmp_path / "gw"
    assert run("gateway", "init", "--dir", str(home), "--store", postgres_url).exit_code == 0
    result = run("gateway", "instance", "add", "pi-2", "--api-port", "8399",
                 "--config", str(home / "gateway.toml"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "share_group" in result.output  # the first instance must join the group too
    cfg = load_config(home / "gateway-pi-2.toml")
    assert cfg.mqtt.username == cfg.mqtt.client_id == "terrapin-gateway-pi-2"
    assert cfg.mqtt.share_group == "terrapin" and cfg.api.port == 8399
    assert store_location(cfg) == postgres_url
    assert (home / "gateway-pi-2.secret").stat().st_mode & 0o077 == 0
    password = cfg.mqtt_password()
    users = mosquitto_conf.read_passwd(home / "mosquitto" / "passwd")
    assert mosquitto_conf.check_password(password, users["terrapin-gateway-pi-2"])
    acl = (home / "mosquitto" / "acl").read_text()
    assert "user terrapin-gateway-pi-2\ntopic read terrapin/v1/+/reading\n" in acl
    again = terrapin("gateway", "instance", "add", "pi-2", "--api-port", "8400",
                     "--config", str(home / "gateway.toml"))  # fmt: skip
    assert again.returncode != 0 and "added before" in again.stderr
