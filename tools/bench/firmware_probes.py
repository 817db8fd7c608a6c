"""The scripts `terrapin bench firmware` runs inside the interpreter it measures.

Both are plain source text, written to a file and run as
`<interpreter> script.py <repo root> <args...>`; each prints one tagged line
(tools/bench/firmware_run.py parses it).

TIMING_SCRIPT runs under the MicroPython unix port and CPython alike: median
sign / verify / SHA-256-of-Sig_structure / encode_payload / sign1 / address
times, the textbook baseline signer (affine double-and-add, Fermat inverse)
and the same with the extended-Euclid inverse, and the first sign that fills
the comb table.

HEAP_SCRIPT (MicroPython only) imports what a board holds to sign, leaves
only HEADROOM bytes of heap free and signs once: the probe behind
`peak_heap()`.
"""

# -- the timing script (runs under MicroPython and CPython alike) -----------------------

TIMING_SCRIPT = r"""
import gc, json, sys, time
ROOT = sys.argv[1]
RUNS = int(sys.argv[2])
NAIVE_RUNS = int(sys.argv[3])
sys.path.insert(0, ROOT)
if sys.implementation.name == "micropython":
    now = time.ticks_us
    diff = time.ticks_diff
else:
    def now():
        return time.perf_counter_ns() // 1000
    def diff(a, b):
        return a - b
from firmware import cose, secp256k1 as S

P = S.P
N = S.N


def fermat(a, m):
    return pow(a, m - 2, m)


def naive_add(a, b, inv):
    # Textbook affine addition; None is the point at infinity.
    if a is None:
        return b
    if b is None:
        return a
    if a[0] == b[0]:
        if (a[1] + b[1]) % P == 0:
            return None
        lam = 3 * a[0] * a[0] * inv(2 * a[1] % P, P) % P
    else:
        lam = (b[1] - a[1]) * inv((b[0] - a[0]) % P, P) % P
    x = (lam * lam - a[0] - b[0]) % P
    return x, (lam * (a[0] - x) - a[1]) % P


def naive_mul(k, point, inv):
    result = None
    while k:
        if k & 1:
            result = naive_add(result, point, inv)
        point = naive_add(point, point, inv)
        k >>= 1
    return result


def naive_sign(priv, digest, inv=fermat):
    # Same RFC 6979 nonce as the firmware, textbook arithmetic everywhere else.
    d = int.from_bytes(priv, "big")
    z = int.from_bytes(digest, "big")
    for k in S._nonces(d, digest):
        r = naive_mul(k, (S.GX, S.GY), inv)[0] % N
        s = inv(k, N) * (z + r * d) % N
        if r and s:
            if s > N // 2:
                s = N - s
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] / 1000


priv = bytes(range(1, 33))
payload = cose.encode_payload(
    12345, 1767225600,
    [("temperature", "Cel", 21.5), ("humidity", "%RH", 45.2), ("pressure", "hPa", 1013.25)],
)
digest = cose.digest(payload)

t = now()
pub = S.public_key(priv)  # fills the comb table
first = diff(now(), t)
sign_us = []
for _ in range(RUNS):
    t = now()
    sig = S.sign_digest(priv, digest)
    sign_us.append(diff(now(), t))
verify_us = []
for _ in range(RUNS):
    t = now()
    ok = S.verify_digest(pub, digest, sig)
    verify_us.append(diff(now(), t))
sha_us = []
for _ in range(RUNS):
    t = now()
    for _ in range(100):
        cose.digest(payload)
    sha_us.append(diff(now(), t) / 100)
address_us = []
for _ in range(RUNS):
    t = now()
    kid = cose.address(pub)  # Keccak-256; a board does this once, at boot
    address_us.append(diff(now(), t))
encode_us = []
for _ in range(RUNS):
    t = now()
    cose.encode_payload(
        12345, 1767225600,
        [("temperature", "Cel", 21.5), ("humidity", "%RH", 45.2), ("pressure", "hPa", 1013.25)],
    )
    encode_us.append(diff(now(), t))
sign1_us = []
for _ in range(RUNS):
    t = now()
    env = cose.sign1(priv, kid, payload)
    sign1_us.append(diff(now(), t))
naive_us = []
for _ in range(NAIVE_RUNS):
    t = now()
    naive = naive_sign(priv, digest)
    naive_us.append(diff(now(), t))
euclid_us = []
for _ in range(NAIVE_RUNS):
    t = now()
    euclid = naive_sign(priv, digest, S.inverse)
    euclid_us.append(diff(now(), t))
gc.collect()
print("RESULT", json.dumps({
    "sign_ms": median(sign_us),
    "naive_sign_ms": median(naive_us),
    "naive_euclid_sign_ms": median(euclid_us),
    "verify_ms": median(verify_us),
    "sha256_ms": median(sha_us),
    "sign1_ms": median(sign1_us),
    "encode_ms": median(encode_us),
    "address_ms": median(address_us),
    "table_build_ms": first / 1000,
    "verify_ok": bool(ok),
    "naive_matches": naive == sig and euclid == sig,
    "envelope_bytes": len(env),
}))
"""

# -- the heap probe (MicroPython only) --------------------------------------------------

HEAP_SCRIPT = r"""
import gc, sys
ROOT = sys.argv[1]
HEADROOM = int(sys.argv[2])
WHAT = sys.argv[3]
sys.path.insert(0, ROOT)
gc.collect()
before = gc.mem_alloc()
import hashlib
if WHAT == "ecdsa":
    from firmware import secp256k1 as S
elif WHAT == "sign":
    # What a board holds to sign a reading: cose imports cborenc and secp256k1.
    from firmware import cose
else:  # "core": keccak resident too (a board that keeps it after boot)
    from firmware import cose, keccak
gc.collect()
resident = gc.mem_alloc() - before
# One contiguous ballast block takes the free tail of the heap, so that about
# HEADROOM bytes stay free (plus the gaps the imports left, which are real).
gc.collect()
size = gc.mem_free() - HEADROOM - 64
ballast = None
while ballast is None and size > 0:
    try:
        ballast = bytearray(size)
    except MemoryError:
        size -= 256
gc.collect()
free = gc.mem_free()
priv = bytes(range(1, 33))
if WHAT == "ecdsa":
    S.sign_digest(priv, hashlib.sha256(b"reading").digest())
else:
    payload = cose.encode_payload(
        12345, 1767225600,
        [("temperature", "Cel", 21.5), ("humidity", "%RH", 45.2), ("pressure", "hPa", 1013.25)],
    )
    cose.sign1(priv, bytes(20), payload)
print("HEAP", resident, free)
"""
