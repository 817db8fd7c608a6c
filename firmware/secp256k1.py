"""ECDSA over secp256k1 in plain MicroPython (also runs on CPython): key
generation, the public key, signing, verification and public-key recovery.

Speed comes from doing few big-integer operations, not from C:
- points in Jacobian coordinates (X, Y, Z) ~ (X/Z^2, Y/Z^3): no inversion per
  step; one inversion at the end;
- fixed-base comb for G: 4 teeth, 64 columns, a table of the 15 non-empty
  sums of 2^(64*j)*G (affine, mixed additions). k*G costs 63 doublings and at
  most 64 additions instead of ~256 doublings and ~128 additions. The table
  is built once, lazily, on first use (a one-off of a few ms on the unix port;
  see docs/PROTOCOL.md) and then holds 15 points as 1 KB of bytes (6 teeth:
  a third fewer point operations for 3 KB more of the board's resident heap);
- modular inverse by the extended Euclidean algorithm (~5x faster than
  pow(a, p-2, p) under MicroPython);
- verification by Shamir's trick (one joint double-and-add for u1*G + u2*Q).

Signing: RFC 6979 deterministic nonce with HMAC-SHA256 (HMAC written here:
MicroPython has no hmac module), s normalised to low-S (s <= n/2), so the same
key and digest give the same 64 bytes r||s as python-ecdsa + low-S.

Not constant-time: MicroPython big integers are not. The key never leaves the
board and the board signs only its own readings; see docs/PROTOCOL.md.
Pure logic: imports only hashlib and os (for the default RNG).
"""

import hashlib

from .compat import const, micropython

P = const(0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F)
N = const(0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141)
HALF_N = const(0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0)
GX = const(0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798)
GY = const(0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8)

_TEETH = const(4)
_COLS = const(64)  # 256 / 4
_COLMASK = const(0xFFFFFFFFFFFFFFFF)  # 64 bits

# Comb table (built lazily): 16 slots of 64 bytes; slot i holds x||y (big
# endian) of the affine sum of 2^(64*j)*G over the bits j of i (slot 0 unused).
# Kept as bytes (1 KB) rather than 30 int objects;
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


# -- the comb table ------------------------------------------------------------

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
    """Fill the comb table. Level j: B = 2^(64*j)*G (64 Jacobian doublings of
    the previous B, one inversion), then entry low+i = entry i + B for every
    entry i below level j, added in affine coordinates. The additions' x
    differences are inverted _CHUNK at a time with one inversion (Montgomery's
    trick); the points themselves are read back from the table, so the fill
    holds only _CHUNK partial products at a time."""
    global _table_ready
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
    _table_ready = True


def _mul_g(k):
    """k*G (Jacobian) with the fixed-base comb; 0 < k < 2^256."""
    if not _table_ready:
        _build_table()
    table = memoryview(_TABLE)
    k0 = k & _COLMASK
    k1 = (k >> 64) & _COLMASK
    k2 = (k >> 128) & _COLMASK
    k3 = k >> 192
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


# -- signing -----------------------------------------------------------------


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
        _build_table()  # first use: before the nonce state exists (lower peak)
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


# -- verification --------------------------------------------------------------


def _mul_double(u1, u2, qx, qy):
    """u1*G + u2*Q (Jacobian) by Shamir's trick with G+Q precomputed."""
    if qx == GX:
        # Q = G or Q = -G: u1*G + u2*Q = (u1 +- u2)*G.
        k = (u1 + u2 if qy == GY else u1 - u2) % N
        return _mul_g(k) if k else (0, 1, 0)
    sx, sy = _to_affine(*_add_affine(GX, GY, 1, qx, qy))
    X = 0
    Y = 1
    Z = 0
    for i in range(255, -1, -1):
        if Z:
            X, Y, Z = _double(X, Y, Z)
        b1 = (u1 >> i) & 1
        b2 = (u2 >> i) & 1
        if b1:
            if b2:
                X, Y, Z = _add_affine(X, Y, Z, sx, sy)
            else:
                X, Y, Z = _add_affine(X, Y, Z, GX, GY)
        elif b2:
            X, Y, Z = _add_affine(X, Y, Z, qx, qy)
    return X, Y, Z


# -- keys, verification, recovery ---------------------------------------------


def generate_private_key(rng=None):
    """A fresh 32-byte private key: rejection sampling from `rng(32)`
    (os.urandom by default; on an ESP32 that is the hardware RNG)."""
    if rng is None:
        import os

        rng = os.urandom
    while True:
        candidate = bytes(rng(32))
        d = int.from_bytes(candidate, "big")
        if 1 <= d < N:
            return candidate


def public_key(priv):
    """The 65-byte uncompressed public key 0x04 || X || Y."""
    x, y = _to_affine(*_mul_g(_scalar(priv)))
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


def _point(pub):
    if len(pub) != 65 or pub[0] != 4:
        raise SignatureError("public key must be 65 bytes 0x04||X||Y")
    x = int.from_bytes(pub[1:33], "big")
    y = int.from_bytes(pub[33:65], "big")
    if x >= P or y >= P or (y * y - x * x * x - 7) % P:
        raise SignatureError("public key not on the curve")
    return x, y


def verify_digest(pub, digest, sig):
    """True if the 64-byte r||s signature is valid ECDSA for `pub` and the
    32-byte digest. Accepts high-S like plain ECDSA; the envelope rules
    (cose) reject high-S separately."""
    try:
        qx, qy = _point(pub)
    except SignatureError:
        return False
    if len(sig) != 64 or len(digest) != 32:
        return False
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    if not (1 <= r < N and 1 <= s < N):
        return False
    z = int.from_bytes(digest, "big")
    w = inverse(s, N)
    X, Y, Z = _mul_double(z * w % N, r * w % N, qx, qy)
    if Z == 0:
        return False
    zz = Z * Z % P
    # x(R) mod n == r, checked without inverting Z: X == x*Z^2 for x in {r, r+n}.
    if (r * zz - X) % P == 0:
        return True
    return r + N < P and ((r + N) * zz - X) % P == 0


def recover_public_key(digest, sig, v):
    """The 65-byte public key that made `sig` over `digest` with recovery id v."""
    if len(sig) != 64 or len(digest) != 32 or v not in (0, 1, 2, 3):
        raise SignatureError("bad recovery input")
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    if not (1 <= r < N and 1 <= s < N):
        raise SignatureError("r or s out of range")
    x = r + N if v & 2 else r
    if x >= P:
        raise SignatureError("no such point")
    y = pow((x * x * x + 7) % P, (P + 1) // 4, P)
    if (y * y - x * x * x - 7) % P:
        raise SignatureError("no such point")
    if (y & 1) != (v & 1):
        y = P - y
    z = int.from_bytes(digest, "big")
    ri = inverse(r, N)
    # Q = r^-1 (s*R - z*G) = (-z/r)*G + (s/r)*R
    X, Y, Z = _mul_double((-z * ri) % N, s * ri % N, x, y)
    qx, qy = _to_affine(X, Y, Z)
    return b"\x04" + qx.to_bytes(32, "big") + qy.to_bytes(32, "big")
