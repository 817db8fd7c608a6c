"""The host code uses paho-mqtt through its public API only.

Every module under gateway/ and tools/ is parsed; an access to a name that
paho keeps private (an underscore attribute of its client, or an underscore
name of its modules), spelled `x._name`, `getattr(x, "_name")` or
`from paho... import _name`, fails the test with its file and line. A
private of paho changes without notice between releases (2.x moved the
packet queue once already); `Client.ack()` is the public way to PUBACK."""

from __future__ import annotations

import ast
from pathlib import Path

import paho.mqtt

REPO = Path(__file__).resolve().parents[2]
HOST_PACKAGES = ("gateway", "tools")
_BY_NAME = {"getattr", "setattr", "hasattr", "delattr"}


def paho_private_names() -> set[str]:
    """Underscore names paho defines: attributes it sets on its objects, methods,
    module-level helpers (read from paho's own source, so a new one is covered)."""
    names: set[str] = set()
    for path in Path(paho.mqtt.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute):
                name = node.attr
            elif isinstance(node, ast.FunctionDef | ast.ClassDef):
                name = node.name
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                name = node.id
            else:
                continue
            if name.startswith("_") and not name.startswith("__"):
                names.add(name)
    return names


PAHO_PRIVATE = paho_private_names()


def _imports_paho(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.startswith("paho") for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("paho"):
            return True
    return False


def _receiver(node: ast.expr) -> str:
    """`client` for `client`, `self.client` or `self.ingest.client`."""
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else ""


def paho_private_uses(source: str, filename: str = "<source>") -> list[str]:
    """`file:line: what` for each use of a paho private name in `source`: in a
    module that imports paho, on any object but the class's own (`self._x`,
    `cls._x`); elsewhere, on an object named `client` (paho's name for it), so
    that other libraries' objects in modules without paho are not mistaken."""
    tree = ast.parse(source, filename)
    everywhere = _imports_paho(tree)
    found = []
    for node in ast.walk(tree):
        name = owner = None
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("paho"):
            private = [a.name for a in node.names if a.name.startswith("_")]
            if private:
                found.append((node.lineno, f"from {node.module} import {private[0]}"))
            continue
        if isinstance(node, ast.Attribute):
            owner, name = node.value, node.attr
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _BY_NAME
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            owner, name = node.args[0], node.args[1].value
        if name is None or name not in PAHO_PRIVATE:
            continue
        receiver = _receiver(owner)
        if receiver in ("self", "cls") or not (everywhere or receiver == "client"):
            continue
        found.append((node.lineno, ast.unparse(node)))
    return [f"{filename}:{line}: {what}" for line, what in sorted(found)]


def test_no_host_module_touches_a_paho_private() -> None:
    uses = []
    for package in HOST_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO)
            uses += paho_private_uses(path.read_text(encoding="utf-8"), str(rel))
    assert not uses, "paho private API used (use its public API, e.g. Client.ack):\n" + "\n".join(
        uses
    )


def test_the_check_sees_each_way_of_reaching_a_private() -> None:
    """The check itself: each spelling of the PUBACK-batching trick this project
    once used is found; public calls and a class's own underscores are not."""
    assert {"_packet_queue", "_out_packet", "_sock"} <= PAHO_PRIVATE
    in_paho_module = """
from paho.mqtt.client import _socketpair_compat
import paho.mqtt.client as mqtt
queue_packet = getattr(self.client, "_packet_queue", None)
c._out_packet.append(packet)
"""
    assert [u.split(":")[1] for u in paho_private_uses(in_paho_module)] == ["2", "4", "5"]
    elsewhere = """
self.ingest.client._sock.send(data)
getattr(client, "_out_packet")
"""
    assert [u.split(":")[1] for u in paho_private_uses(elsewhere)] == ["2", "3"]
    good = """
import paho.mqtt.client as mqtt
client.ack(mid, 1)
self._sock = socket.socket()
client.publish(topic, payload, qos=1)
"""
    assert paho_private_uses(good) == []
    not_paho = 'port = getattr(esp, "_port", None)\n'  # another library's object
    assert paho_private_uses(not_paho) == []
