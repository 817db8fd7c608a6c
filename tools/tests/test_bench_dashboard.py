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
    figures = json.loads(capsys.readouterr().out)
    names = [r["endpoint"] for r in figures["rows"]]
    assert "/api/boards" in names and "/api/readings/<addr>/<seq>/proof" in names
    assert any(n.startswith("page: board") for n in names), names  # chromium ran
    assert all(r["p50_ms"] > 0 and r["n"] >= 3 for r in figures["rows"])
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 60
    anchored = conn.execute("SELECT COUNT(*) FROM batches WHERE status = 'confirmed'")
    assert anchored.fetchone()[0] == 9  # 10 batches of 6, the newest left pending
    conn.close()
