"""The batch and anchor stages built from the gateway config's [chain] section.

Switched on in the gateway config by name:

    [pipeline]
    stages = ["batch", "anchor"]

gateway/server.py calls `batcher(cfg)` and `anchorer(cfg)`; each returns an object
with `run(shutdown)` and `status()`. `chain_for(cfg)` gives every stage of one
process the same connection, which matters on the embedded chain: it lives in this
process, so the rewards stage must use the very chain the anchorer deployed to.

Without the server (tests, the demo): `batcher, anchorer = stages(db_path, section)`.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from terrapin.gateway.chain.anchorer import Anchorer
from terrapin.gateway.chain.batcher import Batcher
from terrapin.gateway.chain.node import Chain, ChainConfig
from terrapin.gateway.storebase import store_location

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
