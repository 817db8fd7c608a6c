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

import math
import time as _time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum

from terrapin.gateway.protocol.envelope import Reading
from terrapin.gateway.protocol.reasons import Flag

EPOCH_2020 = 1577836800

# SenML units (RFC 8428 + RFC 8798 secondary units) the gateway knows.
SENML_UNITS = frozenset(
    """m kg g s A K cd mol Hz rad sr N Pa J W C V F Ohm S Wb T H Cel lm lx Bq Gy Sv kat
    m2 m3 l m/s m/s2 m3/s l/s W/m2 cd/m2 bit bit/s lat lon pH dB dBW Bspl count / % %RH
    %EL EL 1/s 1/min beat/min beats S/m B VA VAs var vars J/m kg/m3 deg NTU ms min h MHz
    kW kVA kvar Ah Wh kWh varh kvarh kVAh Wh/km KiB GB Mbit/s B/s MB/s mV mA dBm ug/m3
    mm/h m/h ppm /100 /1000 hPa mm cm km km/h""".split()  # noqa: SIM905
)

# Plausible ranges of values per unit (inclusive); outside -> Flag.OUT_OF_RANGE.
DEFAULT_RANGES: dict[str, tuple[float, float]] = {
    "Cel": (-90.0, 150.0),
    "K": (180.0, 430.0),
    "%RH": (0.0, 100.0),
    "%": (0.0, 100.0),
    "Pa": (30000.0, 110000.0),
    "hPa": (300.0, 1100.0),
    "ppm": (0.0, 100000.0),
    "ug/m3": (0.0, 10000.0),
    "lx": (0.0, 200000.0),
    "V": (0.0, 60.0),
    "mV": (0.0, 60000.0),
    "dB": (-20.0, 200.0),
    "m/s": (0.0, 120.0),
    "mm/h": (0.0, 2000.0),
    "pH": (0.0, 14.0),
}


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
        now = _time.time() if received_at is None else received_at
        cfg = self.config
        flags = 0
        t = reading.time
        if t == 0:
            flags |= Flag.TIME_UNSYNCED
        elif t > now + cfg.max_clock_skew:
            flags |= Flag.TIME_FUTURE
        elif t < now - cfg.max_age or t < EPOCH_2020:
            flags |= Flag.TIME_OLD
        ranges = cfg.ranges
        for _name, unit, value in reading.records:
            if unit not in SENML_UNITS and unit not in ranges:
                flags |= Flag.UNKNOWN_UNIT
            if not math.isfinite(value):
                flags |= Flag.NON_FINITE
                continue
            bounds = ranges.get(unit)
            if bounds is not None and not bounds[0] <= value <= bounds[1]:
                flags |= Flag.OUT_OF_RANGE
        return int(flags)
