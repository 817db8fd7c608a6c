"""Reward token amounts as people read them (the rule: gateway/rewards/units.py)."""

from __future__ import annotations

from terrapin.gateway.rewards.units import DECIMALS, SYMBOL, amount_text, tokens

__all__ = ["DECIMALS", "SYMBOL", "amount_text", "tokens"]
