# The board's signing key: made on the board, kept on its flash, never shown.
#
# First boot: 32 bytes from the hardware RNG (`os.urandom`) through
# `secp256k1.generate_private_key` (rejection sampling), written atomically
# to `<root>/key.bin` as b"TPK1" | key | crc32 (40 bytes). A plain 32-byte
# file (written by older tools) is accepted too. Only the public key and the
# address are ever printed or published; nothing here returns the key in a
# printable form.
#
# Files through `open`/`os` only (no machine, network or sockets).

import os
import struct
from binascii import crc32

from . import cose, secp256k1
from .seqstore import read_atomic, write_atomic

KEY_FILE = "key.bin"
_MAGIC = b"TPK1"


class KeyStoreError(Exception):
    # The key file exists but is damaged (refusing to make a new identity).
    pass


def _check(data):
    if len(data) == 32:
        return bytes(data)
    if len(data) == 40 and data[:4] == _MAGIC:
        if struct.unpack("<I", data[36:40])[0] == crc32(data[:36]) & 0xFFFFFFFF:
            return bytes(data[4:36])
    return None


def _path(root):
    return root + "/" + KEY_FILE


def load_key(root):
    # The private key stored under `root`, or None when there is none.
    try:
        return read_atomic(_path(root), _check)
    except Exception as exc:
        raise KeyStoreError(
            "key file " + _path(root) + " is damaged; not replacing it: " + str(exc)
        )


def create_key(root, rng=None):
    # Make a new key from the RNG and store it (replaces any old key).
    priv = secp256k1.generate_private_key(rng or os.urandom)
    body = _MAGIC + priv
    write_atomic(_path(root), body + struct.pack("<I", crc32(body) & 0xFFFFFFFF))
    return priv


def ensure_key(root, rng=None):
    # The stored key, made on first boot.
    priv = load_key(root)
    if priv is None:
        priv = create_key(root, rng)
    return priv


def identity(root, rng=None):
    # (priv, pub, addr, created) for the board whose flash is `root`.
    created = load_key(root) is None
    priv = ensure_key(root, rng)
    pub = secp256k1.public_key(priv)
    return priv, pub, cose.address(pub), created
