"""Why a node or service did not answer, in words a person can act on: the one
rule lives in gateway/chain/nodeerrors.py (the gateway and the commands say the same)."""

from __future__ import annotations

from terrapin.gateway.chain.nodeerrors import reason

__all__ = ["reason"]
