"""The firmware is cut into modules by responsibility, not by load time (issue 18),
checked on the source with `ast`:

- no module is unloaded at run time: no call of an `unload` helper, no
  `sys.modules` entry popped or deleted, no `delattr` on a package (except
  ota.boot() switching to an OTA slot: NOT_FOR_MEMORY);
- no function or module global is deleted at run time (`del` of a global);
- no module name is built by slicing or concatenating `__name__`;
- secp256k1 is one module, and no firmware module writes another module's
  attributes (the split secp256k1 set `secp_sign._table_ready` from secp_table).

main.py is the boot script (its OTA step runs before the app is imported and
is owned with the boot work); checkout.py runs in a child interpreter.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parents[1]
NOT_APP = {"main.py", "checkout.py"}
# Modules forgotten for a reason other than memory: ota.boot() drops the
# factory image's modules once an OTA slot is on sys.path, or they would
# shadow the slot's newer code.
NOT_FOR_MEMORY = {"ota.py"}


def _modules() -> list[Path]:
    files = sorted(FIRMWARE.rglob("*.py"))
    return [p for p in files if "tests" not in p.parts and p.name not in NOT_APP]


def _rel(path: Path) -> str:
    return str(path.relative_to(FIRMWARE))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _is_sys_modules(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "modules"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def unloading(path: Path) -> list[str]:
    """Where `path` unloads a module: `unload(...)`, `sys.modules.pop(...)`,
    `del sys.modules[...]`, `delattr(...)`."""
    found = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Call):
            name = _called_name(node)
            if name == "unload":
                found.append(f"{_rel(path)}:{node.lineno} unload(...)")
            elif name == "delattr":
                found.append(f"{_rel(path)}:{node.lineno} delattr(...)")
            elif name == "pop" and _is_sys_modules(node.func.value):  # type: ignore[attr-defined]
                found.append(f"{_rel(path)}:{node.lineno} sys.modules.pop(...)")
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                if path.name in NOT_FOR_MEMORY:
                    continue
                if isinstance(target, ast.Subscript) and _is_sys_modules(target.value):
                    found.append(f"{_rel(path)}:{node.lineno} del sys.modules[...]")
    return found


def deleted_globals(path: Path) -> list[str]:
    """`del` of a module global: at module level, or in a function that
    declares the name `global`."""
    tree = _tree(path)
    found = []
    for node in tree.body:
        if isinstance(node, ast.Delete):
            found.append(f"{_rel(path)}:{node.lineno} del at module level")
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        declared = {n for g in ast.walk(func) if isinstance(g, ast.Global) for n in g.names}
        for node in ast.walk(func):
            if isinstance(node, ast.Delete):
                names = {t.id for t in node.targets if isinstance(t, ast.Name)}
                if names & declared:
                    found.append(f"{_rel(path)}:{node.lineno} del global {sorted(names)}")
    return found


def name_building(path: Path) -> list[str]:
    """`__name__` sliced, split or concatenated into another module's name."""
    found = []
    for node in ast.walk(_tree(path)):
        uses_name = False
        if isinstance(node, ast.Subscript):
            uses_name = isinstance(node.value, ast.Name) and node.value.id == "__name__"
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            uses_name = any(
                isinstance(side, ast.Name) and side.id == "__name__"
                for side in (node.left, node.right)
            )
        elif isinstance(node, ast.Attribute) and node.attr in ("rsplit", "split", "rpartition"):
            uses_name = isinstance(node.value, ast.Name) and node.value.id == "__name__"
        if uses_name:
            found.append(f"{_rel(path)}:{node.lineno} builds a name from __name__")
    return found


def foreign_writes(path: Path) -> list[str]:
    """Assignments to an attribute of an imported firmware module (`mod.x = ...`)."""
    tree = _tree(path)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            imported.update(a.asname or a.name for a in node.names)
    found = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for t in targets:
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name):
                if t.value.id in imported and t.value.id[:1].islower():
                    found.append(f"{_rel(path)}:{node.lineno} writes {t.value.id}.{t.attr}")
    return found


@pytest.mark.parametrize(
    "check", [unloading, deleted_globals, name_building, foreign_writes], ids=lambda f: f.__name__
)
def test_the_firmware_has_no_load_time_cuts(check):
    found = [hit for path in _modules() for hit in check(path)]
    assert not found, "\n".join(found)


def test_secp256k1_is_one_module():
    names = {p.name for p in FIRMWARE.glob("*.py")}
    assert "secp256k1.py" in names
    assert not sorted(n for n in names if n.startswith("secp") and n != "secp256k1.py")
    tree = _tree(FIRMWARE / "secp256k1.py")
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    want = {"generate_private_key", "public_key", "sign_digest", "sign_recoverable"}
    assert want | {"verify_digest", "recover_public_key", "_build_table", "_mul_g"} <= defined
    relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    assert [n.module for n in relative] == ["compat"]  # nothing of its own elsewhere


def test_the_checks_catch_what_they_look_for(tmp_path):
    """Each check finds the pattern the old layout had (so a pass means something)."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import sys\n"
        "from . import secp_sign\n"
        "from .compat import unload\n"
        "_PACKAGE = __name__.rsplit('.', 1)[0]\n"
        "def boot():\n"
        "    pass\n"
        "def forget():\n"
        "    global boot\n"
        "    del boot\n"
        "def fill():\n"
        "    secp_sign._table_ready = True\n"
        "    unload(__name__ + '_scan')\n"
        "    sys.modules.pop('x', None)\n"
    )
    global FIRMWARE
    saved, FIRMWARE = FIRMWARE, tmp_path
    try:
        assert len(unloading(sample)) == 2
        assert len(deleted_globals(sample)) == 1
        assert len(name_building(sample)) == 2
        assert foreign_writes(sample) == ["sample.py:11 writes secp_sign._table_ready"]
    finally:
        FIRMWARE = saved


def test_compat_has_no_unload_helper():
    """Nothing unloads modules for memory any more, so compat offers no helper for it."""
    compat = _tree(FIRMWARE / "compat.py")
    assert not any(isinstance(n, ast.FunctionDef) and n.name == "unload" for n in compat.body)
