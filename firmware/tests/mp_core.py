# Run under the MicroPython unix port by test_micropython.py. Reads commands on
# stdin, one per line, and prints one result line each:
#   keccak <hex>           -> keccak256 hex
#   sign <priv> <digest>   -> r||s hex, v, verify
#   cbor <hex>             -> re-encoded hex, or "error <Class>"
#   float <double hex>     -> cbor.dumps(float) hex
#   payload <double hex>   -> cose.encode_payload(1, 2, [("v", "V", x)]) hex
# Not a pytest file.
import binascii
import struct
import sys

sys.path.insert(0, ".")

from firmware import cbor, cose, keccak, secp256k1  # noqa: E402


def h(b):
    return binascii.hexlify(b).decode()


def u(s):
    return binascii.unhexlify(s)


while True:
    line = sys.stdin.readline()
    if not line:
        break
    parts = line.split()
    if not parts:
        continue
    cmd = parts[0]
    arg = parts[1] if len(parts) > 1 else ""
    if cmd == "keccak":
        print(h(keccak.keccak256(u(arg))))
    elif cmd == "sign":
        priv = u(arg)
        digest = u(parts[2])
        sig, v = secp256k1.sign_recoverable(priv, digest)
        ok = secp256k1.verify_digest(secp256k1.public_key(priv), digest, sig)
        print(h(sig), v, int(ok))
    elif cmd == "cbor":
        try:
            print(h(cbor.dumps(cbor.loads(u(arg)))))
        except cbor.CBORError as exc:
            print("error", type(exc).__name__)
    elif cmd == "float":
        print(h(cbor.dumps(struct.unpack(">d", u(arg))[0])))
    elif cmd == "payload":
        x = struct.unpack(">d", u(arg))[0]
        try:
            print(h(cose.encode_payload(1, 2, [("v", "V", x)])))
        except ValueError:
            print("error ValueError")
    else:
        print("unknown", cmd)
