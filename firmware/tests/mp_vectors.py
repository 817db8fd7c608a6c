# Run under the MicroPython unix port by test_vectors.py: reads one JSON line
# per test vector on stdin, runs it through the firmware crypto core, prints
# one JSON line [name, field, value] per result field (small lines keep the
# 100k heap unfragmented). Not a pytest file.
import binascii
import gc
import json
import struct
import sys

sys.path.insert(0, ".")

from firmware import cose, cose_check, secp256k1  # noqa: E402


def h(b):
    return binascii.hexlify(b).decode()


def valid(v):
    priv = bytes.fromhex(v["priv"])
    records = []
    for name, unit, bits in v["records"]:
        records.append((name, unit, struct.unpack(">d", bytes.fromhex(bits))[0]))
    pub = secp256k1.public_key(priv)
    kid = cose.address(pub)
    payload = cose.encode_payload(v["seq"], v["time"], records)
    digest = cose.digest(payload)
    sig, rec_id = secp256k1.sign_recoverable(priv, digest)
    env = cose.sign1(priv, kid, payload)
    given = bytes.fromhex(v["envelope"])
    kid2, seq, time, recs = cose_check.check_envelope(given, kid, pub)
    return {
        "public_key": h(pub),
        "address": h(kid),
        "payload": h(payload),
        "sig_structure": h(cose.sig_structure(payload)),
        "digest": h(digest),
        "signature": h(sig),
        "v": rec_id,
        "envelope": h(env),
        "verify": secp256k1.verify_digest(pub, digest, sig),
        "verify1": cose_check.verify1(pub, given),
        "decoded": [h(kid2), seq, time, [[n, u, h(struct.pack(">d", x))] for n, u, x in recs]],
    }


def invalid(v):
    env = bytes.fromhex(v["envelope"])
    try:
        cose_check.check_envelope(env, bytes.fromhex(v["topic"]), bytes.fromhex(v["pub"]))
    except cose.COSEError as exc:
        return {"reason": cose_check.REASON_NAMES[exc.reason], "detail": str(exc)}
    return {"reason": None}


while True:
    line = sys.stdin.readline()
    if not line:
        break
    vec = json.loads(line)
    try:
        result = valid(vec) if vec["kind"] == "valid" else invalid(vec)
    except Exception as exc:  # report, keep going: pytest shows which vector
        result = {"error": "%s: %s" % (type(exc).__name__, exc)}
    name = vec["name"]
    vec = None
    for key in result:
        print(json.dumps([name, key, result[key]]))
    print(json.dumps([name, "done", True]))
    result = None
    gc.collect()
