"""Keccak-256 (the original Keccak padding used by Ethereum, not SHA3-256).

Plain Python over 64-bit lanes held in ints; a board uses it once, at boot,
to derive its address (cose.address imports this module only then), so RAM
beats speed here: the round constants come from the spec's LFSR and rho/pi
walk the lanes in place (as in the Keccak team's CompactFIPS202), so the
module holds no tables. Pure logic: no imports beyond compat.
"""

from .compat import const

_RATE = const(136)  # bytes: 1600 - 2*256 bits
_M64 = const(0xFFFFFFFFFFFFFFFF)


def _permute(a):
    # Keccak-f[1600] on 25 lanes, a[x + 5*y].
    c = [0] * 5
    r = 1  # LFSR state for the round constants
    for _ in range(24):
        # theta
        for x in range(5):
            c[x] = a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20]
        for x in range(5):
            c1 = c[(x + 1) % 5]
            d = c[(x + 4) % 5] ^ (((c1 << 1) | (c1 >> 63)) & _M64)
            for y in range(0, 25, 5):
                a[x + y] ^= d
        # rho and pi: along the pi cycle from lane (1, 0); rotation t(t+1)/2
        x = 1
        y = 0
        cur = a[1]
        for t in range(1, 25):
            x, y = y, (2 * x + 3 * y) % 5
            i = x + 5 * y
            n = (t * (t + 1) >> 1) & 63
            nxt = a[i]
            a[i] = ((cur << n) | (cur >> (64 - n))) & _M64
            cur = nxt
        # chi
        for y in range(0, 25, 5):
            b0 = a[y]
            b1 = a[y + 1]
            b2 = a[y + 2]
            b3 = a[y + 3]
            b4 = a[y + 4]
            a[y] = b0 ^ (~b1 & b2)
            a[y + 1] = b1 ^ (~b2 & b3)
            a[y + 2] = b2 ^ (~b3 & b4)
            a[y + 3] = b3 ^ (~b4 & b0)
            a[y + 4] = b4 ^ (~b0 & b1)
        # iota: round constant bits 2^j - 1 from the LFSR x^8+x^6+x^5+x^4+1
        for j in range(7):
            r = ((r << 1) ^ ((r >> 7) * 0x71)) & 0xFF
            if r & 2:
                a[0] ^= 1 << ((1 << j) - 1)


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
