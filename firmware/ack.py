# The gateway's application ACK, as the board reads it (wire protocol v1).
#
# Payload on `terrapin/v1/<addr>/ack`: a deterministic CBOR map
#
#     {1: [[lo, hi], ...], 2: [[seq, reason], ...]}
#
# key 1: sequence numbers the gateway has stored (inclusive ranges, sorted and
# merged; includes duplicates stored earlier); key 2: sequence numbers
# rejected for good, with their reason code. Either key may be absent. The
# board drops outbox entries listed in either key and logs the rejections.
#
# Pure logic: imports only the firmware CBOR codec.

from . import cbor
from .compat import const

_MAX_ITEMS = const(256)
_U64 = const(0xFFFFFFFFFFFFFFFF)

# Reason codes 1..14 (same numbers as terrapin.gateway.reasons.Reason), one
# string rather than a dict: it costs the board far less RAM.
_NAMES = (
    "MALFORMED_CBOR OVERSIZE BAD_ENVELOPE UNSUPPORTED_ALG BAD_KID TOPIC_MISMATCH "
    "BAD_SIGNATURE HIGH_S NON_CANONICAL BAD_PAYLOAD UNKNOWN_BOARD EQUIVOCATION "
    "STALE_SEQUENCE RATE_LIMITED"
)


class AckError(ValueError):
    # An ACK payload that does not follow the format above.
    pass


def reason_name(code):
    names = _NAMES.split()
    return names[code - 1] if 1 <= code <= len(names) else "REASON_%d" % code


def _uint(v):
    return type(v) is int and 0 <= v <= _U64


def decode(payload):
    # (ranges, rejections) from an ACK payload; raises AckError.
    #
    # ranges: list of (lo, hi); rejections: list of (seq, reason).
    try:
        obj = cbor.loads(payload, 3, 4096)
    except cbor.CBORError as exc:
        raise AckError("ack is not deterministic CBOR: " + str(exc))
    if not isinstance(obj, dict):
        raise AckError("ack must be a CBOR map")
    ranges = []
    rejections = []
    for key in obj:
        if type(key) is not int or key not in (1, 2):
            raise AckError("unknown ack key %r" % (key,))
        items = obj[key]
        if not isinstance(items, list) or len(items) > _MAX_ITEMS:
            raise AckError("ack key %d must be a list of pairs" % key)
        for item in items:
            if not isinstance(item, list) or len(item) != 2:
                raise AckError("ack key %d must hold pairs" % key)
            a, b = item
            if not _uint(a) or not _uint(b):
                raise AckError("ack values must be unsigned integers")
            if key == 1:
                if a > b:
                    raise AckError("ack range with lo > hi")
                ranges.append((a, b))
            else:
                rejections.append((a, b))
    return ranges, rejections


def covers(ranges, rejections, seq):
    # None if `seq` is not acknowledged; 0 if stored; else the reason code.
    for lo, hi in ranges:
        if lo <= seq <= hi:
            return 0
    for s, reason in rejections:
        if s == seq:
            return reason if reason else 255
    return None
