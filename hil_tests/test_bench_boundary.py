"""Nothing outside the tests imports the HIL bench (terrapin.hil): the bench uses
tools/devkit and the gateway, never the reverse (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PRODUCT = ("gateway", "tools", "firmware")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def hil_importers() -> list[str]:
    """Modules outside any tests/ folder that import terrapin.hil."""
    found = []
    for top in PRODUCT:
        for path in sorted((REPO / top).rglob("*.py")):
            if "tests" in path.relative_to(REPO).parts:
                continue
            bad = sorted(n for n in _imports(path) if n.split(".")[:2] == ["terrapin", "hil"])
            if bad:
                found.append(f"{path.relative_to(REPO)}: {', '.join(bad)}")
    return found


def test_nothing_outside_tests_imports_the_bench() -> None:
    assert hil_importers() == []


def test_the_check_sees_an_import(tmp_path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from terrapin.hil.boards import UnixBoard\n")
    assert "terrapin.hil.boards" in _imports(probe)
