"""The reward rule: what each owner earns per epoch, from anchored readings only.

docs/REWARDS.md states the rule in words; this module is its one
implementation. Everything here is a pure function of its arguments (no
database, no chain, no clock), so anyone holding the proof bundles and the
chain can recompute every amount to the last base unit.

The rule, per epoch E with budget B (token base units) and cap C:

1. A reading counts for epoch E when its batch's anchoring block has
   ``timestamp // epoch_seconds == E`` (see `epoch_of`). Each (board, seq)
   counts once, in the earliest epoch it appears in.
2. A reading with ``flags != 0`` (a data-quality flag) counts for nothing.
3. ``n_b`` = a board's counted readings in E; its weight ``w_b = min(n_b, C)``.
4. ``W`` = sum of ``w_b`` over ALL boards, owned or not.
5. A board earns ``floor(B * w_b / W)``. The rounding remainder
   ``B - sum(floor(...))`` is not paid to anyone (at most one base unit per
   board), and neither is the share of a board with no owner: shares are
   never redistributed, so one board's amount never depends on whether
   another board has an owner.
6. An owner earns the sum of its boards' amounts; cumulative amounts are the
   sums over all epochs so far (the Merkle distribution carries those).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from terrapin.gateway.errors import TerrapinError

EPOCH_SECONDS = 86_400  # one UTC day
DEFAULT_CAP = 1_440  # one counted reading a minute per board per day
DEFAULT_BUDGET = 1_000 * 10**18  # 1,000 tokens (18 decimals) per epoch
ZERO_ADDRESS = "0x" + "00" * 20


class RewardsError(TerrapinError, ValueError):
    """Input the reward rule cannot accept (bad epoch, budget, cap or address)."""


@dataclass(frozen=True)
class Reading:
    """One anchored reading as the rule sees it."""

    board: str  # 0x-prefixed lowercase address
    seq: int
    flags: int
    epoch: int


@dataclass
class EpochRewards:
    """The outcome of one epoch: every number the rule computed, for audit."""

    epoch: int
    budget: int
    cap: int
    readings: dict[str, int] = field(default_factory=dict)  # counted (valid) readings per board
    flagged: dict[str, int] = field(default_factory=dict)  # flagged readings per board
    weights: dict[str, int] = field(default_factory=dict)  # min(readings, cap)
    boards: dict[str, int] = field(default_factory=dict)  # amount per board
    owners: dict[str, int] = field(default_factory=dict)  # amount per owner
    unowned: int = 0  # sum of the amounts of boards with no owner (paid to nobody)

    @property
    def paid(self) -> int:
        return sum(self.owners.values())

    @property
    def remainder(self) -> int:
        """Budget left by rounding down (paid to nobody)."""
        return self.budget - sum(self.boards.values())


def normalise_address(address: str | bytes) -> str:
    """0x + 40 lowercase hex digits, from a str (with or without 0x) or 20 bytes."""
    if isinstance(address, bytes | bytearray):
        if len(address) != 20:
            raise RewardsError(f"an address is 20 bytes, got {len(address)}")
        return "0x" + bytes(address).hex()
    text = address.lower().removeprefix("0x")
    if len(text) != 40 or any(c not in "0123456789abcdef" for c in text):
        raise RewardsError(f"not an address: {address!r}")
    return "0x" + text


def epoch_of(timestamp: int, epoch_seconds: int = EPOCH_SECONDS) -> int:
    """The epoch of an anchoring block's timestamp (Unix seconds, UTC)."""
    if epoch_seconds <= 0:
        raise RewardsError("epoch_seconds must be positive")
    if timestamp < 0:
        raise RewardsError("a block timestamp cannot be negative")
    return timestamp // epoch_seconds


def _check(epoch: int, budget: int, cap: int) -> None:
    if epoch < 0:
        raise RewardsError(f"epoch must be >= 0, got {epoch}")
    if budget < 0:
        raise RewardsError(f"budget must be >= 0, got {budget}")
    if cap < 1:
        raise RewardsError(f"cap must be >= 1, got {cap}")


def first_epochs(readings: Iterable[tuple]) -> dict[tuple[str, int], tuple[int, int]]:
    """Deduplicate: (board, seq) -> (flags, epoch) of its earliest appearance.

    Accepts `Reading`s or plain (board, seq, flags, epoch) tuples. A reading
    anchored twice (a re-anchored batch, a gateway bug) counts once, in its
    earliest epoch; at equal epochs the lowest flags value is kept, so the
    outcome never depends on input order.
    """
    seen: dict[tuple[str, int], tuple[int, int]] = {}
    for board, seq, flags, epoch in readings:
        if seq < 0 or flags < 0 or epoch < 0:
            raise RewardsError(f"bad reading {board} seq={seq} flags={flags} epoch={epoch}")
        key = (normalise_address(board), int(seq))
        flags, epoch = int(flags), int(epoch)
        old = seen.get(key)
        if old is None or (epoch, flags) < (old[1], old[0]):
            seen[key] = (flags, epoch)
    return seen


def epoch_rewards(
    readings: Iterable[tuple],
    owners: Mapping[str, str],
    epoch: int,
    budget: int = DEFAULT_BUDGET,
    cap: int = DEFAULT_CAP,
) -> EpochRewards:
    """Apply the rule to one epoch.

    `readings` may hold readings of any epoch: only those whose earliest
    epoch is `epoch` count. `owners` maps board -> owner address (missing or
    the zero address: no owner).
    """
    _check(epoch, budget, cap)
    result = EpochRewards(epoch=epoch, budget=budget, cap=cap)
    for (board, _seq), (flags, first) in first_epochs(readings).items():
        if first != epoch:
            continue
        bucket = result.flagged if flags else result.readings
        bucket[board] = bucket.get(board, 0) + 1
    result.weights = {b: min(n, cap) for b, n in sorted(result.readings.items())}
    total_weight = sum(result.weights.values())
    owner_of = {normalise_address(b): normalise_address(o) for b, o in owners.items()}
    for board, weight in result.weights.items():
        amount = budget * weight // total_weight
        result.boards[board] = amount
        owner = owner_of.get(board, ZERO_ADDRESS)
        if owner == ZERO_ADDRESS:
            result.unowned += amount
        elif amount:
            result.owners[owner] = result.owners.get(owner, 0) + amount
    result.owners = dict(sorted(result.owners.items()))
    return result


def cumulative_rewards(
    readings: Iterable[tuple],
    owners_for: Callable[[int], Mapping[str, str]] | Mapping[str, str],
    through_epoch: int,
    budget: int = DEFAULT_BUDGET,
    cap: int = DEFAULT_CAP,
    first_epoch: int = 0,
) -> tuple[dict[str, int], list[EpochRewards]]:
    """Cumulative amount per owner over epochs first_epoch..through_epoch.

    `owners_for(epoch)` gives the owner map in force for that epoch (the
    bindings at the epoch's end); a plain mapping applies to every epoch.
    Epochs with no counted reading pay nothing and produce no entry.
    """
    _check(through_epoch, budget, cap)
    deduped = [(b, s, f, e) for (b, s), (f, e) in first_epochs(readings).items()]
    by_epoch: dict[int, list[tuple]] = {}
    for reading in deduped:
        if first_epoch <= reading[3] <= through_epoch:
            by_epoch.setdefault(reading[3], []).append(reading)
    totals: dict[str, int] = {}
    epochs: list[EpochRewards] = []
    for epoch in sorted(by_epoch):
        owners = owners_for(epoch) if callable(owners_for) else owners_for
        result = epoch_rewards(by_epoch[epoch], owners, epoch, budget, cap)
        epochs.append(result)
        for owner, amount in result.owners.items():
            totals[owner] = totals.get(owner, 0) + amount
    return dict(sorted(totals.items())), epochs


def owners_at(
    bindings: Iterable[tuple[str, str, int]], epoch: int, epoch_seconds: int = EPOCH_SECONDS
) -> dict[str, str]:
    """Board -> owner in force for `epoch`: the last binding made before the epoch ended.

    `bindings` are (board, owner, block timestamp) in chain order (BoardBound
    events). A binding to the zero address unbinds the board. Owner changes
    inside an epoch therefore pay the whole epoch to the owner at its end.
    """
    end = (epoch + 1) * epoch_seconds
    owners: dict[str, str] = {}
    for board, owner, timestamp in bindings:
        if timestamp < end:
            owners[normalise_address(board)] = normalise_address(owner)
    return {b: o for b, o in owners.items() if o != ZERO_ADDRESS}
