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
# The decoder here reads only this subset of CBOR, as strictly as cbor.loads
# (which a board does not keep loaded: ACKs are frequent and the full codec
# costs ~6 KB of RAM): shortest (canonical) heads only, no indefinite
# lengths, keys 1 then 2 in order, every value an unsigned integer, at most
# 256 pairs per key and 4096 bytes, no trailing bytes. Anything else is an
# AckError.
#
# Pure logic: no imports beyond compat.

from .compat import const

_MAX_ITEMS = const(256)
_MAX_SIZE = const(4096)

# Reason codes 1..14 (same numbers as terrapin.gateway.protocol.reasons.Reason), one
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


def _head(data, i):
    # (major type, argument, next index) of the CBOR head at data[i]; only
    # the shortest encoding of the argument (and no indefinite length) is
    # accepted.
    n = len(data)
    if i < n:
        ib = data[i]
        ai = ib & 0x1F
        if ai < 24:
            return ib >> 5, ai, i + 1
        if ai < 28:
            k = 1 << (ai - 24)  # 1, 2, 4 or 8 argument bytes
            if i + 1 + k <= n:
                v = int.from_bytes(data[i + 1 : i + 1 + k], "big")
                if v >= (24 if k == 1 else 1 << (4 * k)):
                    return ib >> 5, v, i + 1 + k
    raise AckError("ack is not deterministic CBOR (truncated, indefinite or non-minimal head)")


def decode(payload):
    # (ranges, rejections) from an ACK payload; raises AckError.
    #
    # ranges: list of (lo, hi); rejections: list of (seq, reason).
    data = bytes(payload)
    major, n, i = _head(data, 0)
    if major != 5 or len(data) > _MAX_SIZE:
        raise AckError("ack must be a CBOR map of at most 4096 bytes")
    ranges = []
    rejections = []
    prev = 0
    for _ in range(n):
        major, key, i = _head(data, i)
        if major or key <= prev or key > 2:
            raise AckError("ack keys must be 1 and/or 2, in that order")
        prev = key
        major, count, i = _head(data, i)
        if major != 4 or count > _MAX_ITEMS:
            raise AckError("ack key %d must be a list of pairs" % key)
        for _ in range(count):
            major, two, i = _head(data, i)
            if major != 4 or two != 2:
                raise AckError("ack key %d must be a list of pairs" % key)
            major, a, i = _head(data, i)
            major2, b, i = _head(data, i)
            if major or major2 or (key == 1 and a > b):
                raise AckError("ack pairs must be unsigned integers (lo <= hi in key 1)")
            (ranges if key == 1 else rejections).append((a, b))
    if i != len(data):
        raise AckError("ack has trailing bytes")
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
