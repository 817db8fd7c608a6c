"""Reward token amounts as people read them: "1,000.5 TRP", never 1000500000000000000000.

One formatter for every command that shows an amount (`terrapin rewards`,
`terrapin device status`); JSON output keeps base units as strings for scripts.
"""

from __future__ import annotations

DECIMALS = 18  # TerrapinRewards is an OpenZeppelin ERC-20: decimals() is 18
SYMBOL = "TRP"


def tokens(amount: int | str, decimals: int = DECIMALS) -> str:
    """Base units as tokens, exact (no rounding), trailing zeros trimmed."""
    whole, frac = divmod(int(amount), 10**decimals)
    text = f"{whole:,}"
    frac_text = f"{frac:0{decimals}d}".rstrip("0") if decimals else ""
    return f"{text}.{frac_text}" if frac_text else text


def amount_text(amount: int | str, raw: bool = False, decimals: int = DECIMALS) -> str:
    """What people read: "1,000.5 TRP"; with raw, the base units for scripts."""
    return str(int(amount)) if raw else f"{tokens(amount, decimals)} {SYMBOL}"
