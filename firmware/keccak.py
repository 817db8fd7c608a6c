"""Keccak-256 (the original Keccak padding used by Ethereum, not SHA3-256).

Plain Python over 64-bit lanes held in ints; used once per key to derive the
board address, so clarity beats speed here. Pure logic: no imports beyond
compat.
"""

from .compat import const

_RATE = const(136)  # bytes: 1600 - 2*256 bits
_M64 = const(0xFFFFFFFFFFFFFFFF)

_RC = (
    0x0000000000000001, 0x0000000000008082, 0x800000000000808A, 0x8000000080008000,
    0x000000000000808B, 0x0000000080000001, 0x8000000080008081, 0x8000000000008009,
    0x000000000000008A, 0x0000000000000088, 0x0000000080008009, 0x000000008000000A,
    0x000000008000808B, 0x800000000000008B, 0x8000000000008089, 0x8000000000008003,
    0x8000000000008002, 0x8000000000000080, 0x000000000000800A, 0x800000008000000A,
    0x8000000080008081, 0x8000000000008080, 0x0000000080000001, 0x8000000080008008,
)  # fmt: skip

# rho rotation and pi destination for lane i = x + 5*y, in pi order.
_ROT = (
    0, 1, 62, 28, 27, 36, 44, 6, 55, 20, 3, 10, 43, 25, 39, 41, 45, 15, 21, 8, 18, 2, 61, 56, 14,
)  # fmt: skip
_PI = (
    0, 10, 20, 5, 15, 16, 1, 11, 21, 6, 7, 17, 2, 12, 22, 23, 8, 18, 3, 13, 14, 24, 9, 19, 4,
)  # fmt: skip


def _permute(a):
    b = [0] * 25
    c = [0] * 5
    rot = _ROT
    pi = _PI
    for rc in _RC:
        for x in range(5):
            c[x] = a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20]
        for x in range(5):
            c1 = c[(x + 1) % 5]
            d = c[(x + 4) % 5] ^ (((c1 << 1) | (c1 >> 63)) & _M64)
            for y in range(0, 25, 5):
                a[x + y] ^= d
        for i in range(25):
            v = a[i]
            r = rot[i]
            b[pi[i]] = ((v << r) | (v >> (64 - r))) & _M64 if r else v
        for y in range(0, 25, 5):
            b0 = b[y]
            b1 = b[y + 1]
            b2 = b[y + 2]
            b3 = b[y + 3]
            b4 = b[y + 4]
            a[y] = b0 ^ (~b1 & b2)
            a[y + 1] = b1 ^ (~b2 & b3)
            a[y + 2] = b2 ^ (~b3 & b4)
            a[y + 3] = b3 ^ (~b4 & b0)
            a[y + 4] = b4 ^ (~b0 & b1)
        a[0] ^= rc


def keccak256(data):
    """The 32-byte Keccak-256 digest of `data` (bytes-like)."""
    padded = bytearray(data)
    padded.append(0x01)
    while len(padded) % _RATE:
        padded.append(0)
    padded[-1] |= 0x80
    a = [0] * 25
    for off in range(0, len(padded), _RATE):
        for i in range(_RATE // 8):
            start = off + 8 * i
            a[i] ^= int.from_bytes(padded[start : start + 8], "little")
        _permute(a)
    out = bytearray()
    for i in range(4):
        out.extend(a[i].to_bytes(8, "little"))
    return bytes(out)
