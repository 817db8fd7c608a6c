"""Reward token amounts as people read them: "1,000.5 TRP", never 1000500000000000000000.

The one formatter for every command, page and API field that shows an amount
(`terrapin rewards`, `terrapin device status`, `terrapin rewards verify`, the
dashboard's JSON); machine-readable output keeps base units as strings.
"""

from __future__ import annotations

DECIMALS = 18  # TerrapinRewards is an OpenZeppelin ERC-20: decimals() is 18
SYMBOL = "TRP"


def tokens(amount: int | str, decimals: int = DECIMALS, grouping: bool = True) -> str:
    """Base units as tokens, exact (no rounding), trailing zeros trimmed; `grouping`
    puts thousands separators in (off for JSON fields a page parses as a number)."""
    whole, frac = divmod(int(amount), 10**decimals)
    text = f"{whole:,}" if grouping else str(whole)
    frac_text = f"{frac:0{decimals}d}".rstrip("0") if decimals else ""
    return f"{text}.{frac_text}" if frac_text else text


def amount_text(amount: int | str, raw: bool = False, decimals: int = DECIMALS) -> str:
    """What people read: "1,000.5 TRP"; with raw, the base units for scripts."""
    return str(int(amount)) if raw else f"{tokens(amount, decimals)} {SYMBOL}"
