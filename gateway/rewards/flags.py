"""Data-quality flags as pure functions of public facts (docs/REWARDS.md, "Flags").

A flag that affects rewards depends only on (1) the signed reading (its payload's
time and records), (2) a reference time and (3) parameters published with the
epoch (`FlagParams`, carried in every epoch manifest). For rewards the reference
time is the timestamp of the block that anchored the reading's batch, which every
observer reads from the chain; the gateway's ingest (gateway/policy.py) uses the
same functions with the arrival time, for its own counters and the board's ACK,
and that stored value never decides a reward.

EQUIVOCATED is set for rewards only from evidence: another envelope signed by the
same board for the same seq with a different digest (`equivocation_evidence`),
as held when the epoch was settled (its cut-off), so a later equivocation never
changes an epoch already published.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.protocol.envelope import (
    EnvelopeError,
    Reading,
    decode_envelope,
    decode_payload,
)
from terrapin.gateway.protocol.reasons import Flag
from terrapin.gateway.protocol.signature import recover_signer

EPOCH_2020 = 1577836800  # a reading stamped before 2020 is TIME_OLD

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
DEFAULT_MAX_CLOCK_SKEW = 300  # s a reading's time may be ahead of the reference time
DEFAULT_MAX_AGE = 30 * 86_400  # s a reading's time may be behind the reference time


class FlagParamsError(TerrapinError, ValueError):
    """Flag parameters that are not well formed (a manifest's `rule.flags`)."""


@dataclass(frozen=True)
class FlagParams:
    """The flag rule's parameters, published with every epoch (manifest `rule.flags`)."""

    max_clock_skew: int = DEFAULT_MAX_CLOCK_SKEW
    max_age: int = DEFAULT_MAX_AGE
    min_time: int = EPOCH_2020
    units: frozenset[str] = SENML_UNITS
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_RANGES))

    def to_json(self) -> dict[str, Any]:
        return {
            "max_clock_skew": self.max_clock_skew,
            "max_age": self.max_age,
            "min_time": self.min_time,
            "units": sorted(self.units),
            "ranges": {u: [float(lo), float(hi)] for u, (lo, hi) in sorted(self.ranges.items())},
        }

    @classmethod
    def from_json(cls, doc: object) -> FlagParams:
        if not isinstance(doc, dict) or set(doc) != {
            "max_clock_skew",
            "max_age",
            "min_time",
            "units",
            "ranges",
        }:
            raise FlagParamsError(
                "rule.flags must hold max_clock_skew, max_age, min_time, units, ranges"
            )
        ints = [doc["max_clock_skew"], doc["max_age"], doc["min_time"]]
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in ints):
            raise FlagParamsError("max_clock_skew, max_age and min_time must be integers >= 0")
        units, ranges = doc["units"], doc["ranges"]
        if not isinstance(units, list) or not all(isinstance(u, str) for u in units):
            raise FlagParamsError("rule.flags.units must be a list of strings")
        if not isinstance(ranges, dict):
            raise FlagParamsError("rule.flags.ranges must be an object")
        parsed: dict[str, tuple[float, float]] = {}
        for unit, pair in ranges.items():
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in pair)
            ):
                raise FlagParamsError(f"rule.flags.ranges[{unit!r}] must be [low, high]")
            parsed[unit] = (float(pair[0]), float(pair[1]))
        return cls(ints[0], ints[1], ints[2], frozenset(units), parsed)


DEFAULT_PARAMS = FlagParams()


def time_flags(time: int, reference: float, params: FlagParams = DEFAULT_PARAMS) -> int:
    """TIME_UNSYNCED, TIME_FUTURE or TIME_OLD of a reading's own time against `reference`."""
    if time == 0:
        return int(Flag.TIME_UNSYNCED)
    if time > reference + params.max_clock_skew:
        return int(Flag.TIME_FUTURE)
    if time < reference - params.max_age or time < params.min_time:
        return int(Flag.TIME_OLD)
    return 0


def value_flags(records, params: FlagParams = DEFAULT_PARAMS) -> int:
    """UNKNOWN_UNIT, NON_FINITE, OUT_OF_RANGE of the records (name, unit, value)."""
    flags = 0
    for _name, unit, value in records:
        if unit not in params.units and unit not in params.ranges:
            flags |= Flag.UNKNOWN_UNIT
        if not math.isfinite(value):
            flags |= Flag.NON_FINITE
            continue
        bounds = params.ranges.get(unit)
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            flags |= Flag.OUT_OF_RANGE
    return int(flags)


def reading_flags(reading: Reading, reference: float, params: FlagParams = DEFAULT_PARAMS) -> int:
    """Every flag but EQUIVOCATED: the time flags and the value flags."""
    return time_flags(reading.time, reference, params) | value_flags(reading.records, params)


def equivocation_evidence(board: bytes, seq: int, digest: bytes, other: bytes) -> str | None:
    """None if `other` (an envelope) proves that `board` signed another reading with the
    same `seq`, else why it does not: it must decode, name `board`, carry `seq`, hash to a
    digest other than `digest`, and its signature must recover to `board`."""
    try:
        env = decode_envelope(other)
        reading = decode_payload(env.payload)
    except EnvelopeError as exc:
        return f"does not decode ({exc})"
    if env.kid != board:
        return f"names board 0x{env.kid.hex()}"
    if reading.seq != seq:
        return f"carries seq {reading.seq}"
    if env.digest == digest:
        return "is the same reading (same digest)"
    try:
        signer = recover_signer(env.digest, env.signature, board)
    except Exception:  # a signature that is not two curve scalars
        signer = None
    if signer is None:
        return "is not signed by the board"
    return None
