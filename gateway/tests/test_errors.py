"""One error root: every error class of the gateway and the tools derives from
TerrapinError, so `terrapin`'s main() turns each into a message, a hint and an exit code.

The protocol core (gateway/protocol) keeps its own decode errors: it is shared with
code that must not depend on the rest of the gateway."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from terrapin.gateway.errors import TerrapinError

PACKAGES = [
    "terrapin.gateway",
    "terrapin.tools.cli",
    "terrapin.tools.board",
    "terrapin.tools.demo",
]
SKIP = ("terrapin.gateway.protocol", "terrapin.gateway.tests", "terrapin.gateway.contracts")
# bundle.py belongs to the proof-bundle work of issue 13, done in parallel; its
# BundleError joins the root there.
PENDING = {"terrapin.gateway.chain.bundle.BundleError"}


def modules() -> list[str]:
    names = []
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        for info in pkgutil.walk_packages(pkg.__path__, package + "."):
            if not info.name.startswith(SKIP):
                names.append(info.name)
    return names


def error_classes() -> dict[str, type]:
    found = {}
    for name in modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
            ):
                found[f"{name}.{attr}"] = value
    return found


def test_every_error_class_derives_from_terrapin_error():
    classes = error_classes()
    for expected in ("ChainError", "RewardsError", "DistributionError", "PortError", "BoardError"):
        assert any(n.endswith("." + expected) for n in classes), expected
    outside = sorted(n for n, c in classes.items() if not issubclass(c, TerrapinError))
    assert [n for n in outside if n not in PENDING] == []


@pytest.mark.parametrize(
    "module, name, base",
    [
        ("terrapin.gateway.rewards.rule", "RewardsError", ValueError),
        ("terrapin.gateway.rewards.distribution", "DistributionError", ValueError),
        ("terrapin.gateway.api", "UnknownOwner", LookupError),
        ("terrapin.gateway.worker", "WorkerDied", RuntimeError),
    ],
)
def test_errors_keep_their_builtin_kind(module, name, base):
    """Callers that catch ValueError (and the like) still catch them."""
    cls = getattr(importlib.import_module(module), name)
    err = cls("what went wrong")
    assert isinstance(err, base) and isinstance(err, TerrapinError)
    assert str(err) == "what went wrong" and err.exit_code == 1 and err.hint is None
