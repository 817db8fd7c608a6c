"""ECDSA signing over secp256k1: what a board runs for every reading.

The signing half of secp256k1.py (see its docstring for the method): field
and group arithmetic, the fixed-base comb table for k*G, RFC 6979 nonces
(HMAC-SHA256) and low-S signatures. Verification, public-key recovery, the
joint multiplication they use and key generation are in secp256k1.py, which
re-exports everything here, so `secp256k1.sign_digest` is this function:
hosts, tests, the console and OTA import secp256k1; a board's signing path
(cose) imports only this module and keeps ~3 KB less resident.

Not constant-time: MicroPython big integers are not. The key never leaves the
board and the board signs only its own readings; see docs/PROTOCOL.md.
Pure logic: imports only hashlib.
"""

import hashlib

from .compat import const, micropython, unload

P = const(0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F)
N = const(0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141)
HALF_N = const(0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0)
GX = const(0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798)
GY = const(0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8)

_TEETH = const(6)
_COLS = const(43)  # ceil(256 / 6)
_COLMASK = const(0x7FFFFFFFFFF)  # 43 bits

# Comb table (built lazily): 64 slots of 64 bytes; slot i holds x||y (big
# endian) of the affine sum of 2^(43*j)*G over the bits j of i (slot 0 unused).
# Kept as bytes (4 KB) rather than 126 int objects (~9 KB on the unix port);
# turning an entry back into ints costs well under 1 us. The buffer is
# allocated at import, while the heap is still unfragmented; it is filled on
# first use.
_TABLE = bytearray(64 << _TEETH)
_table_ready = False


class SignatureError(ValueError):
    """A key, digest or signature has the wrong length or range."""


# -- field and group arithmetic ---------------------------------------------


@micropython.native
def inverse(a, m):
    """a^-1 mod m by the extended Euclidean algorithm (m prime, a != 0 mod m)."""
    a %= m
    if a == 0:
        raise ZeroDivisionError("no inverse")
    lm = 1
    hm = 0
    low = a
    high = m
    while low > 1:
        q = high // low
        lm, hm = hm - lm * q, lm
        low, high = high - low * q, low
    return lm % m


@micropython.native
def _double(X, Y, Z):
    # a = 0 curve doubling, dbl-2009-l style (Jacobian).
    if Z == 0 or Y == 0:
        return 0, 1, 0
    p = P
    YY = Y * Y % p
    S = 4 * X * YY % p
    M = 3 * X * X % p
    X3 = (M * M - 2 * S) % p
    return X3, (M * (S - X3) - 8 * YY * YY) % p, 2 * Y * Z % p


@micropython.native
def _add_affine(X1, Y1, Z1, x2, y2):
    # Jacobian + affine (mixed addition, madd-2004-hmv style).
    if Z1 == 0:
        return x2, y2, 1
    p = P
    Z1Z1 = Z1 * Z1 % p
    H = (x2 * Z1Z1 - X1) % p
    R = (y2 * Z1 * Z1Z1 - Y1) % p
    if H == 0:
        if R == 0:
            return _double(X1, Y1, Z1)
        return 0, 1, 0
    HH = H * H % p
    HHH = H * HH % p
    V = X1 * HH % p
    X3 = (R * R - HHH - 2 * V) % p
    return X3, (R * (V - X3) - Y1 * HHH) % p, Z1 * H % p


def _fill_table():
    # First use only: the fill code is in secp_table.py, loaded for it and
    # unloaded after (a board fills the table once, at boot).
    from . import secp_table

    secp_table._build_table()
    unload(secp_table.__name__)


def _mul_g(k):
    """k*G (Jacobian) with the fixed-base comb; 0 < k < 2^258."""
    if not _table_ready:
        _fill_table()
    table = memoryview(_TABLE)
    k0 = k & _COLMASK
    k1 = (k >> 43) & _COLMASK
    k2 = (k >> 86) & _COLMASK
    k3 = (k >> 129) & _COLMASK
    k4 = (k >> 172) & _COLMASK
    k5 = k >> 215
    X = 0
    Y = 1
    Z = 0
    for i in range(_COLS - 1, -1, -1):
        if Z:
            X, Y, Z = _double(X, Y, Z)
        idx = (
            ((k0 >> i) & 1)
            | (((k1 >> i) & 1) << 1)
            | (((k2 >> i) & 1) << 2)
            | (((k3 >> i) & 1) << 3)
            | (((k4 >> i) & 1) << 4)
            | (((k5 >> i) & 1) << 5)
        )
        if idx:
            off = idx << 6
            X, Y, Z = _add_affine(
                X,
                Y,
                Z,
                int.from_bytes(table[off : off + 32], "big"),
                int.from_bytes(table[off + 32 : off + 64], "big"),
            )
    return X, Y, Z


# -- RFC 6979 ----------------------------------------------------------------


def _hmac(key, msg):
    # HMAC-SHA256 with a 32-byte key (RFC 2104; key shorter than the block).
    ipad = bytearray(64)
    opad = bytearray(64)
    for i in range(len(key)):
        ipad[i] = key[i]
        opad[i] = key[i]
    for i in range(64):
        ipad[i] ^= 0x36
        opad[i] ^= 0x5C
    inner = hashlib.sha256(ipad)
    inner.update(msg)
    outer = hashlib.sha256(opad)
    outer.update(inner.digest())
    return outer.digest()


def _nonces(d, digest):
    """RFC 6979 section 3.2 candidates k for key d and a 32-byte digest."""
    x = d.to_bytes(32, "big")
    h = (int.from_bytes(digest, "big") % N).to_bytes(32, "big")
    v = b"\x01" * 32
    k = b"\x00" * 32
    k = _hmac(k, v + b"\x00" + x + h)
    v = _hmac(k, v)
    k = _hmac(k, v + b"\x01" + x + h)
    v = _hmac(k, v)
    while True:
        v = _hmac(k, v)
        cand = int.from_bytes(v, "big")
        if 1 <= cand < N:
            yield cand
        k = _hmac(k, v + b"\x00")
        v = _hmac(k, v)


# -- public API --------------------------------------------------------------


def _scalar(priv):
    if len(priv) != 32:
        raise SignatureError("private key must be 32 bytes")
    d = int.from_bytes(priv, "big")
    if not 1 <= d < N:
        raise SignatureError("private key out of range")
    return d


def sign_recoverable(priv, digest):
    """(r||s 64 bytes, v) for a 32-byte digest: RFC 6979 nonce, low-S.

    v is the parity of R.y after low-S normalisation (0 or 1; Ethereum's
    ecrecover takes 27 + v). v would get +2 if R.x >= n, which has
    probability about 2^-127."""
    if not _table_ready:
        _fill_table()  # first use: before the nonce state exists (lower peak)
    d = _scalar(priv)
    if len(digest) != 32:
        raise SignatureError("digest must be 32 bytes")
    z = int.from_bytes(digest, "big")
    for k in _nonces(d, digest):
        X, Y, Z = _mul_g(k)
        zi = inverse(Z, P)
        zi2 = zi * zi % P
        x = X * zi2 % P
        r = x % N
        if r == 0:
            continue
        s = inverse(k, N) * (z + r * d) % N
        if s == 0:
            continue
        y = Y * zi2 * zi % P
        v = y & 1
        if x >= N:
            v |= 2
        if s > HALF_N:
            s = N - s
            v ^= 1
        return r.to_bytes(32, "big") + s.to_bytes(32, "big"), v


def sign_digest(priv, digest):
    """64-byte r||s signature of a 32-byte digest (RFC 6979, low-S)."""
    return sign_recoverable(priv, digest)[0]
