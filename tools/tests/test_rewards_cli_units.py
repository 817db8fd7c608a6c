"""`terrapin rewards compute` without an epoch number, by date, and in token units."""

from __future__ import annotations

import datetime
import json
import sqlite3
import time
from pathlib import Path

from terrapin.tools.cli.main import main
from terrapin.tools.cli.rewards import amount_text, last_closed_epoch

DAY = 86_400


def empty_db(tmp_path: Path) -> Path:
    db = tmp_path / "g.db"
    sqlite3.connect(db).close()
    return db


def test_compute_defaults_to_the_last_closed_epoch(tmp_path: Path, capsys) -> None:
    db = empty_db(tmp_path)
    before = int(time.time()) // DAY - 1
    assert main(["rewards", "compute", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert f"epoch {before} (the last closed one" in out or (
        f"epoch {before + 1} (the last closed one" in out  # midnight passed meanwhile
    )
    # The whole budget went to nobody: shown in tokens, never as 10**21 base units.
    assert "1,000 TRP" in out and "1000000000000000000000" not in out


def test_raw_shows_base_units_for_scripts(tmp_path: Path, capsys) -> None:
    db = empty_db(tmp_path)
    assert main(["rewards", "compute", "--epoch", "3", "--db", str(db), "--raw"]) == 0
    out = capsys.readouterr().out
    assert "1000000000000000000000 base units" in out and "TRP" not in out


def test_date_names_the_utc_day(tmp_path: Path, capsys) -> None:
    db = empty_db(tmp_path)
    assert main(["rewards", "compute", "--date", "2026-12-01", "--db", str(db), "--json"]) == 0
    midnight = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC).timestamp()
    assert json.loads(capsys.readouterr().out)["epoch"] == int(midnight) // DAY
    assert main(["rewards", "compute", "--date", "1.12.2026", "--db", str(db)]) == 2
    assert "%Y-%m-%d" in capsys.readouterr().err  # click names the format
    argv = ["rewards", "compute", "--date", "2026-12-01", "--epoch", "5", "--db", str(db)]
    assert main(argv) == 2
    assert "not both" in capsys.readouterr().err


def test_short_epochs_and_token_text() -> None:
    assert last_closed_epoch(10, now=1005) == 99
    assert amount_text(1500 * 10**15) == "1.5 TRP"
    assert amount_text(10**21) == "1,000 TRP"
    assert amount_text(10**21, raw=True) == "1000000000000000000000"
    assert amount_text(7, decimals=0) == "7 TRP"


def test_device_status_shows_tokens() -> None:
    from terrapin.tools.board.status import as_text

    gateway = {"allowed": True, "pubkey_known": True, "readings": 3, "highest_seq": 3}
    gateway["rejections"] = {}
    gateway["rewards"] = {
        "epoch": 7,
        "owner": "0x" + "ab" * 20,
        "owner_epoch_amount": str(250 * 10**18),
        "owner_cumulative": str(1250 * 10**18 + 5 * 10**17),
    }
    text = as_text({"address": "0x" + "01" * 20, "gateway": gateway})
    assert "owner earned 250 TRP this epoch, 1,250.5 TRP in total" in text


def test_a_node_that_is_down_is_one_line(tmp_path: Path, capsys) -> None:
    from terrapin.tools.devkit.broker import free_port

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    empty_db(tmp_path)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f'[store]\npath = "g.db"\n[chain]\nnetwork = "{dead}"\n'
        f'registry = "0x{"11" * 20}"\nanchor = "0x{"22" * 20}"\n'
        f'[rewards]\ncontract = "0x{"33" * 20}"\n'
    )
    assert main(["rewards", "compute", "--epoch", "5", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert f"the chain node at {dead} does not answer (connection refused)" in err
    assert "HTTPConnectionPool" not in err and "Traceback" not in err
    argv = ["device", "bind", "--port", str(tmp_path / "none"), "--owner", "0x" + "ab" * 20]
    argv += ["--rpc", dead, "--contract", "0x" + "cd" * 20, "--key-env", "TP_UNUSED"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"the chain node at {dead} does not answer (connection refused)" in err
    assert "HTTPConnectionPool" not in err
