"""`terrapin bench dashboard` on a small database: every endpoint and page answers and
gets a figure (the figures themselves are for the docs, not asserted)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from terrapin.tools.cli.main import main


def test_bench_dashboard_small(tmp_path: Path, capsys) -> None:
    db = tmp_path / "bench.db"
    code = main(
        ["bench", "dashboard", "--boards", "3", "--readings", "60", "--requests", "3",
         "--db", str(db), "--json"]
    )  # fmt: skip
    assert code in (0, None)
    out = capsys.readouterr()
    figures = json.loads(out.out)
    # What was measured on, and how busy the machine was; progress as log lines.
    assert (figures["boards"], figures["readings"]) == (3, 60)
    assert len(figures["load_average"]) == 3
    assert "\r" not in out.err and "  filled 60/60 readings" in out.err.splitlines()
    names = [r["endpoint"] for r in figures["rows"]]
    assert "/api/boards" in names and "/api/readings/<addr>/<seq>/proof" in names
    assert any(n.startswith("page: board") for n in names), names  # chromium ran
    assert all(r["p50_ms"] > 0 and r["n"] >= 3 for r in figures["rows"])
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 60
    anchored = conn.execute("SELECT COUNT(*) FROM batches WHERE status = 'confirmed'")
    assert anchored.fetchone()[0] == 9  # 10 batches of 6, the newest left pending
    conn.close()


def test_a_reused_database_reports_its_own_size(tmp_path: Path, capsys) -> None:
    db = tmp_path / "bench.db"
    args = ["bench", "dashboard", "--boards", "2", "--readings", "20", "--requests", "1"]
    assert main([*args, "--db", str(db), "--json"]) in (0, None)
    capsys.readouterr()
    # Asked for 100 boards and 1M readings, but --db is reused: the figures say 2 and 20.
    reuse = ["bench", "dashboard", "--requests", "1", "--db", str(db)]
    assert main(reuse) in (0, None)
    text = capsys.readouterr().out
    assert text.startswith("database: 2 boards, 20 readings; load average "), text
