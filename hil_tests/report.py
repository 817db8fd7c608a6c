"""The summary table of a bench run: one row per scenario and target.

Printed at the end of pytest (rich), written as Markdown (summary.md) and JSON
(results.json) in --terrapin-hil-report; the same figures go into the JUnit XML as
properties of each test case.
"""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table

COLUMNS = (
    ("scenario", "scenario"),
    ("target", "target"),
    ("boards", "boards"),
    ("sent", "readings sent"),
    ("stored", "stored"),
    ("duplicates", "duplicates"),
    ("lost", "lost"),
    ("dropped", "dropped (policy)"),
    ("unanchored", "not anchored"),
    ("redelivered", "redelivered"),
    ("seconds", "time s"),
)


def _cells(row: dict) -> list[str]:
    return [str(row[key]) for key, _ in COLUMNS] + ["ok" if row["ok"] else "FAIL"]


def markdown_table(rows: list[dict]) -> str:
    head = [title for _, title in COLUMNS] + ["result"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    failures = [p for r in rows for p in r["problems"]]
    if failures:
        lines += ["", "Failures:", ""] + [f"- {p}" for p in failures]
    return "\n".join(lines) + "\n"


def rich_table(rows: list[dict]) -> str:
    table = Table(*(title for _, title in COLUMNS), "result")
    for r in rows:
        cells = _cells(r)
        cells[-1] = "[green]ok[/]" if r["ok"] else "[red]FAIL[/]"
        table.add_row(*cells)
    buf = io.StringIO()
    console = Console(file=buf, width=160, force_terminal=False)
    console.print(table)
    for r in rows:
        for p in r["problems"]:
            console.print(f"[red]FAIL[/] {p}")
    return buf.getvalue()
