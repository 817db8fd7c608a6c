"""Every protocol test vector through the firmware crypto core, on CPython and
on the MicroPython unix port (heapsize ESP32_HEAP). The vectors come from
tools/cli/vectors.py, which is built on cbor2 + python-ecdsa + pycryptodome only."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from terrapin.firmware import cbor, cose, cose_check, secp256k1
from terrapin.tools.cli.vectors import load, render, vectors

VALID = load("valid")
INVALID = load("invalid")
MP_VECTORS = Path(__file__).resolve().parent / "mp_vectors.py"


def double_hex(value: float) -> str:
    return struct.pack(">d", value).hex()


def test_vector_files_are_current(tmp_path):
    """The committed files are exactly what the reference generates."""
    from click.testing import CliRunner

    result = CliRunner().invoke(vectors, ["--check"])
    assert result.exit_code == 0, result.output
    (tmp_path / "valid.json").write_text("{}")
    result = CliRunner().invoke(vectors, ["--check", "--dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "out of date" in str(result.exception)


def test_vector_counts_and_reasons():
    assert len(VALID) >= 8
    names = {v["reason"] for v in INVALID}
    assert names <= set(cose_check.REASON_NAMES[1:])
    # Every reason the envelope alone can show appears at least once.
    assert names == set(cose_check.REASON_NAMES[1:])
    assert json.loads(render()["valid.json"])["protected"] == cose.PROTECTED.hex()


@pytest.mark.parametrize("vec", VALID, ids=[v["name"] for v in VALID])
def test_valid_vector_cpython(vec):
    priv = bytes.fromhex(vec["private_key"])
    pub = secp256k1.public_key(priv)
    assert pub.hex() == vec["public_key"]
    kid = cose.address(pub)
    assert kid.hex() == vec["address"]
    records = [(r["name"], r["unit"], r["value"]) for r in vec["records"]]
    payload = cose.encode_payload(vec["seq"], vec["time"], records)
    assert payload.hex() == vec["payload"]
    assert cose.sig_structure(payload).hex() == vec["sig_structure"]
    digest = cose.digest(payload)
    assert digest.hex() == vec["digest"]
    sig, v = secp256k1.sign_recoverable(priv, digest)
    assert sig.hex() == vec["signature"]
    assert v == vec["v"]
    assert cose.sign1(priv, kid, payload).hex() == vec["envelope"]
    env = bytes.fromhex(vec["envelope"])
    assert cose_check.verify1(pub, env)
    assert cose_check.parse_sign1(env) == (cose.PROTECTED, kid, payload, sig)
    got_kid, seq, time, recs = cose_check.check_envelope(env, kid)  # key recovered from sig
    assert (got_kid, seq, time) == (kid, vec["seq"], vec["time"])
    assert [(n, u, struct.pack(">d", x)) for n, u, x in recs] == [
        (r["name"], r["unit"], struct.pack(">d", r["value_float32"])) for r in vec["records"]
    ]
    assert cbor.dumps(cbor.loads(env)) == env


@pytest.mark.parametrize("vec", INVALID, ids=[v["name"] for v in INVALID])
def test_invalid_vector_cpython(vec):
    env = bytes.fromhex(vec["envelope"])
    pub = bytes.fromhex(vec["public_key"])
    with pytest.raises(cose.COSEError) as info:
        cose_check.check_envelope(env, bytes.fromhex(vec["topic_address"]), pub)
    assert cose_check.REASON_NAMES[info.value.reason] == vec["reason"], str(info.value)
    assert not cose_check.verify1(pub, env) or vec["reason"] == "TOPIC_MISMATCH"


@pytest.mark.micropython
def test_every_vector_on_the_unix_port(run_mp, vector_line):
    vecs = VALID + INVALID
    lines = run_mp(MP_VECTORS, [vector_line(v) for v in vecs])
    results: dict[str, dict] = {}
    for line in lines:
        name, key, value = json.loads(line)
        results.setdefault(name, {})[key] = value
    assert list(results) == [v["name"] for v in vecs]
    assert all(r.get("done") for r in results.values())
    results = list(results.values())
    for vec, got in zip(vecs, results, strict=True):
        assert "error" not in got, f"{vec['name']}: {got['error']}"
        if "reason" in vec:
            assert got["reason"] == vec["reason"], f"{vec['name']}: {got}"
            continue
        for key in (
            "public_key",
            "address",
            "payload",
            "sig_structure",
            "digest",
            "signature",
            "v",
            "envelope",
        ):
            assert got[key] == vec[key], f"{vec['name']}: {key}"
        assert got["verify"] and got["verify1"], vec["name"]
        assert got["decoded"] == [
            vec["address"],
            vec["seq"],
            vec["time"],
            [[r["name"], r["unit"], double_hex(r["value_float32"])] for r in vec["records"]],
        ]
