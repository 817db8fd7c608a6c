"""ECDSA over secp256k1 in plain MicroPython (also runs on CPython).

Speed comes from doing few big-integer operations, not from C:
- points in Jacobian coordinates (X, Y, Z) ~ (X/Z^2, Y/Z^3): no inversion per
  step; one inversion at the end;
- fixed-base comb for G: 6 teeth, 43 columns, a table of the 63 non-empty
  sums of 2^(43*j)*G (affine, mixed additions). k*G costs 42 doublings and at
  most 43 additions instead of ~256 doublings and ~128 additions. The table
  is built once, lazily, on first use (a one-off of a few ms on the unix port;
  see docs/PROTOCOL.md) and then holds 63 points as 4 KB of bytes;
- modular inverse by the extended Euclidean algorithm (~5x faster than
  pow(a, p-2, p) under MicroPython);
- verification by Shamir's trick (one joint double-and-add for u1*G + u2*Q).

Signing: RFC 6979 deterministic nonce with HMAC-SHA256 (HMAC written here:
MicroPython has no hmac module), s normalised to low-S (s <= n/2), so the same
key and digest give the same 64 bytes r||s as python-ecdsa + low-S.

Not constant-time: MicroPython big integers are not. The key never leaves the
board and the board signs only its own readings; see docs/PROTOCOL.md.
The signing path lives in secp_sign.py (what a board keeps resident) and is
re-exported here: this module adds key generation, the public key,
verification (Shamir's trick) and public-key recovery, which a board needs
at boot or rarely (console, OTA), not per reading.

Pure logic: imports only hashlib (through secp_sign) and os (for the default
RNG).
"""

from .secp_sign import (  # noqa: F401 (re-exported: the full API is here)
    _TABLE,
    GX,
    GY,
    HALF_N,
    N,
    P,
    SignatureError,
    _add_affine,
    _double,
    _hmac,
    _mul_g,
    _nonces,
    _scalar,
    inverse,
    sign_digest,
    sign_recoverable,
)
from .secp_table import _build_table, _entry, _to_affine  # noqa: F401 (re-exported)


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


# -- keys and verification ---------------------------------------------------


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
