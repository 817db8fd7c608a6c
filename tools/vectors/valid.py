"""The valid wire protocol v1 test vectors (docs/vectors/valid.json).

Each case names a fixed key, a sequence number, a time and its records; the
reference (tools/vectors/reference.py) turns it into the payload, the
Sig_structure, its digest, the signature and the envelope that every
implementation must produce byte for byte and accept.
"""

from __future__ import annotations

import hashlib
from typing import Any

from terrapin.tools.vectors.reference import (
    PROTECTED,
    address,
    envelope,
    fixed_key,
    float32,
    payload_bytes,
    public_key,
    sig_structure,
    sign,
)

VALID: list[dict[str, Any]] = [
    {
        "name": "basic",
        "description": "two records; 21.5 is exact in half precision, 45.2 needs single",
        "key": "board-a",
        "seq": 1,
        "time": 1767225600,
        "records": [("temperature", "Cel", 21.5), ("humidity", "%RH", 45.2)],
    },
    {
        "name": "unsynced-clock",
        "description": "time 0 (board clock not set); value 1013.25 exact in single",
        "key": "board-a",
        "seq": 2,
        "time": 0,
        "records": [("pressure", "hPa", 1013.25)],
    },
    {
        "name": "rounded-to-float32",
        "description": "0.1 is rounded to float32 (0.100000001490116...) before encoding",
        "key": "board-b",
        "seq": 7,
        "time": 1767225660,
        "records": [("voltage", "V", 0.1), ("ratio", "/", 1 / 3)],
    },
    {
        "name": "negative-and-zero",
        "description": "negative values, +0.0 and -0.0 (both half precision)",
        "key": "board-b",
        "seq": 8,
        "time": 1767225720,
        "records": [
            ("outside", "Cel", -12.75),
            ("freezer", "Cel", -40.0),
            ("offset", "Cel", 0.0),
            ("offset-neg", "Cel", -0.0),
        ],
    },
    {
        "name": "half-boundaries",
        "description": "65504 (largest half), 65536 (single), 2^-24 (smallest half subnormal), "
        "6.103515625e-05 (smallest half normal)",
        "key": "board-c",
        "seq": 100,
        "time": 1767225780,
        "records": [
            ("a", "count", 65504.0),
            ("b", "count", 65536.0),
            ("c", "/", 5.960464477539063e-08),
            ("d", "/", 6.103515625e-05),
        ],
    },
    {
        "name": "large-and-tiny",
        "description": "largest float32, 1e10 (exact in single), 1e-30 (single), 1e39 is not "
        "allowed (beyond float32) so it is absent",
        "key": "board-c",
        "seq": 101,
        "time": 1767225840,
        "records": [
            ("max", "/", 3.4028234663852886e38),
            ("big", "/", 1e10),
            ("tiny", "/", 1e-30),
        ],
    },
    {
        "name": "sixteen-records",
        "description": "the maximum of 16 records",
        "key": "board-d",
        "seq": 4294967296,
        "time": 1767225900,
        "records": [(f"t{i}", "Cel", 20.0 + i / 4) for i in range(16)],
    },
    {
        "name": "long-names-unicode",
        "description": "a 32-byte name, a 16-byte unit, a non-ASCII name (UTF-8 bytes count)",
        "key": "board-d",
        "seq": 4294967297,
        "time": 1767225960,
        "records": [
            ("n" * 32, "u" * 16, 120.5),
            ("température", "Cel", 19.0),
            ("é" * 16, "count", 3.0),
        ],
    },
    {
        "name": "max-seq",
        "description": "largest allowed seq and time (2^63-1)",
        "key": "board-e",
        "seq": 2**63 - 1,
        "time": 2**63 - 1,
        "records": [("co2", "ppm", 412.0)],
    },
]


def build_valid() -> list[dict[str, Any]]:
    out = []
    for case in VALID:
        priv = fixed_key(case["key"])
        pub = public_key(priv)
        addr = address(pub)
        payload = payload_bytes(case["seq"], case["time"], case["records"])
        sig_struct = sig_structure(payload)
        digest = hashlib.sha256(sig_struct).digest()
        signature, v = sign(priv, digest)
        env = envelope(PROTECTED, {4: addr}, payload, signature)
        out.append(
            {
                "name": case["name"],
                "description": case["description"],
                "private_key": priv.hex(),
                "public_key": pub.hex(),
                "address": addr.hex(),
                "seq": case["seq"],
                "time": case["time"],
                "records": [
                    {"name": n, "unit": u, "value": v_, "value_float32": float32(float(v_))}
                    for n, u, v_ in case["records"]
                ],
                "payload": payload.hex(),
                "sig_structure": sig_struct.hex(),
                "digest": digest.hex(),
                "signature": signature.hex(),
                "v": v,
                "envelope": env.hex(),
            }
        )
    return out
