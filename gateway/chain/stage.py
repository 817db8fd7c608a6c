"""The batch and anchor stages built from the gateway config's [chain] section.

Switched on in the gateway config by name:

    [pipeline]
    stages = ["batch", "anchor"]

gateway/server.py calls `batcher(cfg)` and `anchorer(cfg)`; each returns an object
with `run(shutdown)` and `status()`. `chain_for(cfg)` gives every stage of one
process the same connection, which matters on the embedded chain: it lives in this
process, so the rewards stage must use the very chain the anchorer deployed to.

A node that does not answer at start does not stop the gateway: `when_reachable`
gives a DeferredStage that builds the stage once the node answers (status: "node
unreachable since ...").

Without the server (tests, the demo): `batcher, anchorer = stages(db_path, section)`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from terrapin.gateway.chain.anchorer import _BACKOFF_MAX, _BACKOFF_MIN, Anchorer, unreachable_since
from terrapin.gateway.chain.batcher import Batcher
from terrapin.gateway.chain.node import Chain, ChainConfig
from terrapin.gateway.chain.nodeerrors import node_down, reason
from terrapin.gateway.pgsql import store_location

log = logging.getLogger(__name__)

_chains: dict[str, Chain] = {}
_lock = threading.Lock()


def _section(cfg: Any) -> dict[str, Any]:
    return dict(cfg.sections.get("chain", {}))


def chain_for(cfg: Any) -> Chain:
    """The process's one Chain for this gateway config (connected, or deployed, once)."""
    section = _section(cfg)
    key = repr(sorted(section.items()))
    with _lock:
        if key not in _chains:
            _chains[key] = Chain.connect(ChainConfig.from_mapping(section))
        return _chains[key]


def batcher(cfg: Any) -> Batcher:
    config = ChainConfig.from_mapping(_section(cfg))
    return Batcher(
        store_location(cfg), batch_size=config.batch_size, batch_seconds=config.batch_seconds
    )


def anchorer(cfg: Any) -> Anchorer:
    return Anchorer(store_location(cfg), chain_for(cfg))


def stages(db_path: str | Path, section: dict[str, Any] | None = None) -> tuple[Batcher, Anchorer]:
    """Connect (deploying on the embedded chain) and build both stages on `db_path`."""
    config = ChainConfig.from_mapping(section)
    chain = Chain.connect(config)
    batcher = Batcher(db_path, batch_size=config.batch_size, batch_seconds=config.batch_seconds)
    return batcher, Anchorer(db_path, chain)


def when_reachable(build: Callable[[Any], Any], cfg: Any, name: str) -> Any:
    """`build(cfg)`, or, when the chain node does not answer at start, a stage that
    builds it once the node answers: the gateway starts, stores and acks readings
    while the node is down, and the stage starts when it comes back."""
    try:
        return build(cfg)
    except node_down() as exc:
        log.warning(
            "%s: the chain node does not answer (%s); starting without it", name, reason(exc)
        )
        return DeferredStage(build, cfg, name, exc)


class DeferredStage:
    """A chain stage waiting for its node: retries building it (capped, jittered
    backoff), then runs it. Shows in /api/status under the stage's own name."""

    def __init__(self, build: Callable[[Any], Any], cfg: Any, name: str, exc: BaseException):
        self.build, self.cfg, self.stage_name = build, cfg, name
        self.network = _section(cfg).get("network", "")
        self.since = time.time()
        self.error = f"chain unreachable: {reason(exc)}"
        self.stage: Any = None

    def run(self, shutdown: threading.Event) -> None:
        delay = _BACKOFF_MIN
        while self.stage is None and not shutdown.wait(delay * random.uniform(0.5, 1.0)):
            try:
                self.stage = self.build(self.cfg)
            except node_down() as exc:
                self.error = f"chain unreachable: {reason(exc)}"
                delay = min(delay * 2, _BACKOFF_MAX)
        if self.stage is not None:
            log.info("%s: the chain node answers again; stage started", self.stage_name)
            self.stage.run(shutdown)

    def __getattr__(self, name: str) -> Any:
        # Once built, the stage's own methods (the API asks a rewards stage for view()).
        stage = self.__dict__.get("stage")
        if stage is None:
            raise AttributeError(name)
        return getattr(stage, name)

    def status(self) -> dict[str, object]:
        if self.stage is not None:
            return self.stage.status()
        return {"network": self.network, "node": unreachable_since(self.since), "error": self.error}
