"""The dependency rule of docs/ARCHITECTURE.md, checked on the source.

Packages (a folder with __init__.py; the flat modules of gateway/ form the
package `terrapin.gateway`) depend on each other in one direction only:

    tools -> gateway -> gateway.chain, gateway.rewards -> gateway.protocol -> gateway.errors
    hil_tests -> tools, gateway          (nothing imports hil_tests)
    firmware -> firmware only            (it runs on MicroPython)

Every import of a `terrapin` module in non-test code is read with `ast`, at
any depth (imports inside functions count: they run too).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOTS = {
    "gateway": "terrapin.gateway",
    "tools": "terrapin.tools",
    "hil_tests": "terrapin.hil",
    "firmware": "terrapin.firmware",
}
TOPS = {"terrapin.gateway", "terrapin.tools"}  # folders whose flat modules are nodes
MAX_LINES = 500


def _is_test(path: Path) -> bool:
    return "tests" in path.parts[:-1] or path.name.startswith("test_") or path.name == "conftest.py"


def _source_files(top: str, *, tests: bool = False) -> list[Path]:
    files = sorted((REPO / top).rglob("*.py"))
    return [p for p in files if tests or not _is_test(p.relative_to(REPO))]


def _module(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts[1:])
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([ROOTS[rel.parts[0]], *parts])


def _imports(path: Path) -> set[str]:
    """Absolute names of the terrapin modules (or their attributes) `path` imports."""
    module = _module(path)
    here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("terrapin."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("terrapin."):
                out.update(f"{name}.{a.name}" for a in node.names)
    return out


def _known_packages() -> set[str]:
    return {
        _module(p) for top in ROOTS for p in (REPO / top).rglob("__init__.py") if not _is_test(p)
    }


def _node(name: str, packages: set[str]) -> str:
    """The node of the graph a module (or an attribute of one) belongs to.

    A subpackage (gateway.chain, tools.cli, ...) is one node; a flat module at
    the top of a folder (gateway/errors.py, gateway/server.py, tools/sim.py) is
    a node of its own, since those folders hold several layers (the error root
    at the bottom, the daemon above the chain and rewards)."""
    parts = name.split(".")
    for n in range(len(parts), 1, -1):
        candidate = ".".join(parts[:n])
        if candidate in packages:
            if candidate in TOPS and len(parts) > n:
                return f"{candidate}.{parts[n]}"
            return candidate
    return name


def package_graph() -> dict[str, set[str]]:
    packages = _known_packages()
    graph: dict[str, set[str]] = defaultdict(set)
    for top in ROOTS:
        for path in _source_files(top):
            src = _node(_module(path), packages)
            for name in _imports(path):
                dst = _node(name, packages)
                if dst != src:
                    graph[src].add(dst)
    return graph


def test_no_import_cycle_between_packages():
    graph = package_graph()
    seen: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if seen.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt]
                pytest.fail("import cycle between packages: " + " -> ".join(cycle))
            if nxt not in seen:
                visit(nxt, [*path, nxt])
        seen[node] = 2

    for start in sorted(graph):
        if start not in seen:
            visit(start, [start])


# (importer prefix, forbidden prefix, why)
RULES = [
    ("terrapin.gateway", "terrapin.tools", "the gateway a Pi runs never needs the tools"),
    ("terrapin.gateway", "terrapin.hil", "nothing imports the HIL bench"),
    ("terrapin.tools", "terrapin.hil", "nothing imports the HIL bench"),
    ("terrapin.firmware", "terrapin.gateway", "the firmware runs on MicroPython alone"),
    ("terrapin.firmware", "terrapin.tools", "the firmware runs on MicroPython alone"),
    ("terrapin.firmware", "terrapin.hil", "the firmware runs on MicroPython alone"),
    ("terrapin.gateway.protocol", "terrapin.gateway.chain", "the protocol core is the bottom"),
    ("terrapin.gateway.protocol", "terrapin.gateway.rewards", "the protocol core is the bottom"),
]


def _violations() -> list[str]:
    found = []
    for top in ROOTS:
        for path in _source_files(top):
            module = _module(path)
            for name in sorted(_imports(path)):
                for importer, forbidden, why in RULES:
                    inside = module == importer or module.startswith(importer + ".")
                    if inside and (name == forbidden or name.startswith(forbidden + ".")):
                        found.append(f"{path.relative_to(REPO)} imports {name}: {why}")
    return found


def test_dependencies_point_one_way():
    assert _violations() == []


def test_the_protocol_core_imports_only_itself_and_the_error_root():
    allowed = ("terrapin.gateway.protocol", "terrapin.gateway.errors")
    bad = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in sorted((REPO / "gateway" / "protocol").rglob("*.py"))
        for name in sorted(_imports(path))
        if not name.startswith(allowed)
    ]
    assert bad == []


def test_modules_stay_small():
    big = [
        f"{path.relative_to(REPO)}: {n} lines"
        for top in ROOTS
        for path in _source_files(top, tests=True)
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    ]
    assert big == [], f"split by responsibility (STYLE.md 8): {big}"


def test_the_rule_checker_sees_a_violation(tmp_path, monkeypatch):
    """The checks above can fail: an import that breaks the rule is reported."""
    bad = REPO / "gateway" / "_architecture_probe.py"
    bad.write_text("from terrapin.tools.cli.main import main\n")
    try:
        assert any("_architecture_probe.py" in v for v in _violations())
        graph = package_graph()
        assert "terrapin.tools.cli" in graph["terrapin.gateway._architecture_probe"]
    finally:
        bad.unlink()


def test_every_package_is_installed():
    """pyproject.toml lists packages by hand (package-dir maps the folders): a new
    subpackage left out of that list would import here but be missing from a wheel."""
    import tomllib

    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    assert _known_packages() - listed == set()
