"""`terrapin rewards` user mistakes: one line and an exit code, never a traceback."""

from __future__ import annotations

import json
import sqlite3

from terrapin.tools.cli.main import main
from terrapin.tools.cli.rewards import tokens


def test_no_database_is_a_config_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TERRAPIN_GATEWAY_CONFIG", str(tmp_path / "missing.toml"))
    assert main(["rewards", "compute", "--epoch", "1"]) == 2
    assert "no database" in capsys.readouterr().err
    assert main(["rewards", "compute", "--epoch", "1", "--db", str(tmp_path / "none.db")]) == 1
    assert "no database at" in capsys.readouterr().err


def test_unknown_rewards_key_is_named(tmp_path, capsys):
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[store]\npath = "g.db"\n[rewards]\nbugdet = 5\n')
    assert main(["rewards", "compute", "--epoch", "1", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "bugdet" in err and "budget" in err


def test_empty_gateway_database_earns_nothing(tmp_path, capsys):
    db = tmp_path / "g.db"
    sqlite3.connect(db).close()
    assert main(["rewards", "compute", "--epoch", "3", "--db", str(db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["root"] is None and out["file"] is None and out["remainder"] == str(1000 * 10**18)


def test_publish_and_claim_need_a_distribution_and_a_json_rpc_chain(tmp_path, capsys):
    db = tmp_path / "g.db"
    sqlite3.connect(db).close()
    assert main(["rewards", "publish", "--epoch", "3", "--db", str(db)]) == 1
    assert "rewards compute" in capsys.readouterr().err
    assert main(["rewards", "claim", "--owner", "0x12", "--db", str(db)]) == 1
    assert "not an address" in capsys.readouterr().err


def test_token_amounts_are_shown_exactly():
    assert tokens(0) == "0"
    assert tokens(10**18) == "1"
    assert tokens(1234 * 10**18 + 5) == "1,234.000000000000000005"


def test_publish_on_the_embedded_chain_explains_why_not(tmp_path, capsys):
    from terrapin.gateway.rewards import distribution

    db = tmp_path / "g.db"
    sqlite3.connect(db).close()
    distribution.write(
        distribution.build(3, {"0x" + "11" * 20: 5}), tmp_path / "rewards" / "epoch-3.json"
    )
    assert main(["rewards", "publish", "--epoch", "3", "--db", str(db)]) == 1
    err = capsys.readouterr().err
    assert "JSON-RPC" in err and "embedded" in err


def test_rewards_parameters_are_checked(tmp_path, capsys):
    cfg = tmp_path / "gateway.toml"
    for bad in ("budget = 1e21", 'budget = "-5"', "cap = 0", "epoch_seconds = true"):
        cfg.write_text(f'[store]\npath = "g.db"\n[rewards]\n{bad}\n')
        assert main(["rewards", "compute", "--epoch", "1", "--config", str(cfg)]) == 2, bad
        assert "[rewards]" in capsys.readouterr().err
