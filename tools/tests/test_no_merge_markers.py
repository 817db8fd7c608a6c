"""No merge-conflict markers in the project's tracked text files: one was merged into
docs/GATEWAY.md (the Metrics and Home Assistant sections inside a conflict) and
nothing noticed. Markers are whole lines: seven <, =, > (the first and last with a
space after), as git writes them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^(<{7} |={7}$|>{7} )", re.M)
TEXT = (".md", ".py", ".js", ".html", ".css", ".toml", ".yml", ".yaml", ".json", ".cfg", ".txt")


def tracked_text_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    return [REPO / p for p in out.split("\0") if p.endswith(TEXT) or p == "Makefile"]


def test_no_tracked_file_holds_a_merge_conflict() -> None:
    files = tracked_text_files()
    assert any(p.name == "GATEWAY.md" for p in files)
    found = []
    for path in files:
        if not path.is_file():  # deleted in the work tree, not yet committed
            continue
        text = path.read_text(errors="replace")
        for m in MARKER.finditer(text):
            found.append(f"{path.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}")
    assert not found, "merge-conflict markers: " + ", ".join(found)
