"""The secp256k1 comb table fill and affine conversion (see secp256k1.py).

Used once per boot (the first k*G fills the 4 KB table in secp_sign) and by
the verify/recover side for affine results; secp_sign loads this module for
the fill and unloads it after, so a board does not keep it resident.
Pure logic.
"""

from . import secp_sign
from .compat import const
from .secp_sign import _TABLE, GX, GY, P, SignatureError, _double, inverse

_TEETH = const(6)
_COLS = const(43)  # ceil(256 / 6)
# Table additions sharing one inversion during the fill. The fill keeps only
# these partial products (points are read back from the table), so 8 costs
# the heap about 0.5 KB; 16 was measured 0.4 KB worse for no gain in time.
_CHUNK = const(8)


def _to_affine(X, Y, Z):
    if Z == 0:
        raise SignatureError("point at infinity")
    zi = inverse(Z, P)
    zi2 = zi * zi % P
    return X * zi2 % P, Y * zi2 * zi % P


def _entry(table, i):
    off = i << 6
    return int.from_bytes(table[off : off + 32], "big"), int.from_bytes(
        table[off + 32 : off + 64], "big"
    )


def _build_table():
    """Fill the comb table. Level j: B = 2^(43*j)*G (43 Jacobian doublings of
    the previous B, one inversion), then entry low+i = entry i + B for every
    entry i below level j, added in affine coordinates. The additions' x
    differences are inverted _CHUNK at a time with one inversion (Montgomery's
    trick); the points themselves are read back from the table, so the fill
    holds only _CHUNK partial products at a time."""
    table = _TABLE
    p = P
    bx = GX
    by = GY
    for j in range(_TEETH):
        low = 1 << j
        if j:
            X, Y, Z = bx, by, 1
            for _ in range(_COLS):
                X, Y, Z = _double(X, Y, Z)
            bx, by = _to_affine(X, Y, Z)
            X = Y = Z = None
        off = low << 6
        table[off : off + 32] = bx.to_bytes(32, "big")
        table[off + 32 : off + 64] = by.to_bytes(32, "big")
        for first in range(1, low, _CHUNK):
            end = min(first + _CHUNK, low)
            prefix = []
            acc = 1
            for i in range(first, end):
                acc = acc * (int.from_bytes(table[i << 6 : (i << 6) + 32], "big") - bx) % p
                prefix.append(acc)
            inv = inverse(acc, p)
            for i in range(end - 1, first - 1, -1):
                ex, ey = _entry(table, i)
                di = inv * prefix[i - first - 1] % p if i > first else inv
                inv = inv * (ex - bx) % p
                lam = (ey - by) * di % p
                x3 = (lam * lam - ex - bx) % p
                off = (low + i) << 6
                table[off : off + 32] = x3.to_bytes(32, "big")
                table[off + 32 : off + 64] = ((lam * (ex - x3) - ey) % p).to_bytes(32, "big")
            prefix = None
    secp_sign._table_ready = True
