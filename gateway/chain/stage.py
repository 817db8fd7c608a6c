"""Wiring for the gateway server and the demo: the chain stages from one [chain] section.

batcher, anchorer = stages(db_path, cfg.section("chain"))
threading.Thread(target=batcher.run, args=(shutdown,)).start()
threading.Thread(target=anchorer.run, args=(shutdown,)).start()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .anchorer import Anchorer
from .batcher import Batcher
from .node import Chain, ChainConfig


def stages(db_path: str | Path, section: dict[str, Any] | None = None) -> tuple[Batcher, Anchorer]:
    """Connect (deploying on the embedded chain) and build both stages on `db_path`."""
    config = ChainConfig.from_mapping(section)
    chain = Chain.connect(config)
    batcher = Batcher(db_path, batch_size=config.batch_size, batch_seconds=config.batch_seconds)
    return batcher, Anchorer(db_path, chain)
