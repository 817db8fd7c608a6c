"""Policy: which boards may send, the sequence rules, and data-quality flags.

Sequence rules (per board; `W` = replay_window, default 4096):
  - Gaps are allowed: a board skips numbers after a reboot (reserved blocks).
  - A seq that is already stored with the same digest is a DUPLICATE: it is
    acked again and never stored twice.
  - A seq that is already stored with another digest is EQUIVOCATION: the
    new envelope is rejected (kept in `rejections`), the stored reading gets
    Flag.EQUIVOCATED, and the board's equivocation counter goes up.
  - A seq not stored and >= highest stored - W is accepted, also when it is
    lower than the highest (readings from an outbox arrive out of order).
  - A seq not stored and < highest stored - W is STALE_SEQUENCE.

Content checks never reject: time and value problems become `Flag` bits
stored with the reading.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum

from terrapin.gateway.protocol.envelope import Reading
from terrapin.gateway.rewards import flags as reward_flags

# The flag rule lives with the rewards (the same functions decide rewards from the
# anchoring block's time); ingest applies it with the arrival time.
EPOCH_2020 = reward_flags.EPOCH_2020
SENML_UNITS = reward_flags.SENML_UNITS
DEFAULT_RANGES = reward_flags.DEFAULT_RANGES


class Sequence(Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    EQUIVOCATION = "equivocation"
    STALE = "stale"


def sequence_outcome(
    seq: int, digest: bytes, stored_digest: bytes | None, highest: int | None, window: int
) -> Sequence:
    """The sequence rules above, as one pure function (the store calls it in its transaction)."""
    if stored_digest is not None:
        return Sequence.DUPLICATE if stored_digest == digest else Sequence.EQUIVOCATION
    if highest is not None and seq < highest - window:
        return Sequence.STALE
    return Sequence.NEW


@dataclass
class PolicyConfig:
    replay_window: int = 4096
    max_clock_skew: float = 300.0  # seconds a reading's time may be ahead of arrival
    max_age: float = 30 * 86400.0  # seconds a reading's time may be behind arrival
    rate_per_minute: float = 0.0  # per board; 0 = no limit
    ranges: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_RANGES))


class Policy:
    """Allow-list, rate limit and flags. Holds no database handle."""

    def __init__(
        self,
        config: PolicyConfig | None = None,
        boards: Iterable[bytes] = (),
        refresh: Callable[[], Iterable[bytes]] | None = None,
    ):
        self.config = config or PolicyConfig()
        self._boards = set(boards)
        self._refresh = refresh
        self._refreshed = 0.0
        self._buckets: dict[bytes, tuple[float, float]] = {}

    def set_boards(self, boards: Iterable[bytes]) -> None:
        self._boards = set(boards)

    @property
    def boards(self) -> frozenset[bytes]:
        return frozenset(self._boards)

    def known(self, kid: bytes) -> bool:
        """On the allow-list; an unknown kid re-reads the list (at most once a second)."""
        if kid in self._boards:
            return True
        now = _time.monotonic()
        if self._refresh is not None and now - self._refreshed >= 1.0:
            self._refreshed = now
            self._boards = set(self._refresh())
        return kid in self._boards

    def rate_limited(self, kid: bytes, now: float) -> bool:
        """True when the board is over rate_per_minute (a token bucket of one minute)."""
        rate = self.config.rate_per_minute
        if rate <= 0:
            return False
        tokens, last = self._buckets.get(kid, (rate, now))
        tokens = min(rate, tokens + (now - last) * rate / 60.0)
        if tokens < 1.0:
            self._buckets[kid] = (tokens, now)
            return True
        self._buckets[kid] = (tokens - 1.0, now)
        return False

    def flags(self, reading: Reading, received_at: float | None = None) -> int:
        """The data-quality flags against the arrival time (gateway/rewards/flags.py). Rewards
        recompute them against the anchoring block's time, so this value decides no reward."""
        now = _time.time() if received_at is None else received_at
        cfg = self.config
        params = reward_flags.FlagParams(
            max_clock_skew=cfg.max_clock_skew, max_age=cfg.max_age, ranges=cfg.ranges
        )
        return reward_flags.reading_flags(reading, now, params)
