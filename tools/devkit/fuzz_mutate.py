"""Input mutators for `terrapin fuzz`: bytes, CBOR trees, JSON trees and text lines.

Every function takes a `random.Random` and returns a new input; nothing here
knows a parser. Byte mutations (bit flips, truncation, insertion, splicing,
boundary values) find what a decoder does with damaged frames; tree mutations
(decode a valid input, change one node, encode again) reach the schema checks
behind a well-formed decode, which random bytes almost never do.
"""

from __future__ import annotations

import json
import math
import random

import cbor2

# Values that sit on a boundary somewhere: type confusions, sizes, signs, floats.
_INTS = (0, 1, -1, 23, 24, 255, 256, 65535, 65536, 2**31 - 1, 2**32, 2**63 - 1, 2**63, 2**64)
_INTS += (-(2**63), -(2**64) - 1, 2**70, 10**30)
_FLOATS = (0.0, -0.0, 0.5, 1.5, 1e-45, 3.4e38, 3.5e38, 1e308, math.inf, -math.inf, math.nan)
_TEXTS = ("", "a", "x" * 33, "é" * 17, "\u0000", "\ud800", "\U0001f422", "..", "/etc", "0x")
_BYTES = (b"", b"\x00", b"\xff" * 20, b"\x00" * 64, b"\x80" * 33)
_CBOR_HEADS = (b"\x1f", b"\x5f", b"\x7f", b"\x9f", b"\xbf", b"\xff", b"\x1c", b"\xf8\x00", b"\xc0")


def boundary_value(rng: random.Random, depth: int = 0):
    """A value chosen to break a type or range check."""
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return rng.choice(_INTS)
    if kind == 1:
        return rng.choice(_FLOATS)
    if kind == 2:
        return rng.choice(_TEXTS)
    if kind == 3:
        return rng.choice(_BYTES)
    if kind == 4:
        return rng.choice((None, True, False))
    if kind == 5:
        return rng.randrange(-(2**40), 2**40)
    if kind == 6:
        return [boundary_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 7:
        return {boundary_value(rng, 3): boundary_value(rng, depth + 1) for _ in range(3)}
    return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(1, 40)))


# -- bytes -------------------------------------------------------------------


def mutate_bytes(rng: random.Random, data: bytes, pool: list[bytes] = ()) -> bytes:
    """One to four byte-level edits of `data` (splices take from `pool`)."""
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 4))):
        op = rng.randrange(10)
        n = len(buf)
        pos = rng.randrange(n + 1)
        if op == 0 and n:  # flip one bit
            i = rng.randrange(n)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # set one byte
            value = rng.choice((0, 0xFF, 0x7F, 0x80, 0x17, 0x18, rng.randrange(256)))
            buf[rng.randrange(n)] = value
        elif op == 2:  # truncate
            del buf[pos:]
        elif op == 3:  # insert random bytes
            buf[pos:pos] = rng.randbytes(rng.choice((1, 1, 2, 4, 9)))
        elif op == 4 and n:  # delete a run
            del buf[pos : pos + rng.choice((1, 1, 2, 4, 16))]
        elif op == 5 and n:  # duplicate a run
            end = min(n, pos + rng.randrange(1, 32))
            buf[pos:pos] = buf[pos:end]
        elif op == 6 and pool:  # splice another input in
            other = rng.choice(pool)
            cut = rng.randrange(len(other) + 1)
            buf[pos:] = other[cut:]
        elif op == 7:  # a CBOR head that changes the structure around it
            buf[pos:pos] = rng.choice(_CBOR_HEADS)
        elif op == 8 and n:  # add or subtract a small number from one byte
            i = rng.randrange(n)
            buf[i] = (buf[i] + rng.choice((-2, -1, 1, 2, 32, -32))) & 0xFF
        elif op == 9 and n >= 2:  # swap two bytes
            i, j = rng.randrange(n), rng.randrange(n)
            buf[i], buf[j] = buf[j], buf[i]
    return bytes(buf)


def random_bytes(rng: random.Random, max_size: int = 200) -> bytes:
    return rng.randbytes(rng.randrange(max_size + 1))


# -- trees (CBOR and JSON share the walk) --------------------------------------


def _nodes(obj, path=()):
    """(path, value) for every node of a tree of lists/tuples/dicts."""
    yield path, obj
    if isinstance(obj, list | tuple):
        for i, x in enumerate(obj):
            yield from _nodes(x, (*path, i))
    elif isinstance(obj, dict):
        for k, x in obj.items():
            yield from _nodes(x, (*path, k))


def _thaw(obj):
    """Mutable copy: tuples -> lists, frozendict -> dict, CBOR tags kept."""
    if isinstance(obj, list | tuple):
        return [_thaw(x) for x in obj]
    if isinstance(obj, dict) or type(obj).__name__ == "frozendict":
        return {k: _thaw(v) for k, v in obj.items()}
    if isinstance(obj, cbor2.CBORTag):
        return cbor2.CBORTag(obj.tag, _thaw(obj.value))
    return obj


def _get(obj, path):
    for p in path:
        obj = obj.value if isinstance(obj, cbor2.CBORTag) else obj
        obj = obj[p]
    return obj


def mutate_tree(rng: random.Random, tree, key_pool=(0, 1, 2, 3, 4)):
    """A copy of `tree` with one node replaced, removed, duplicated or wrapped."""
    tree = _thaw(tree)
    nodes = list(_nodes(tree))
    path, node = rng.choice(nodes)
    op = rng.randrange(7)
    if not path:
        return boundary_value(rng) if op == 0 else [tree] if op == 1 else tree
    parent = _get(tree, path[:-1])
    key = path[-1]
    if op <= 2:  # replace with a boundary value
        parent[key] = boundary_value(rng)
    elif op == 3:  # remove
        del parent[key]
    elif op == 4:  # add a sibling
        if isinstance(parent, list):
            parent.insert(rng.randrange(len(parent) + 1), rng.choice((node, boundary_value(rng))))
        else:
            parent[rng.choice((*key_pool, boundary_value(rng, 3)))] = node
    elif op == 5:  # wrap in a container
        parent[key] = rng.choice(([node], {rng.choice(key_pool): node}, [node] * 17))
    else:  # same node, nearby value
        if type(node) is int:
            parent[key] = node + rng.choice((-1, 1, 2**32, -(2**63)))
        elif isinstance(node, str | bytes):
            parent[key] = node[: rng.randrange(len(node) + 1)] + node * rng.randrange(3)
        elif isinstance(node, float):
            parent[key] = rng.choice((node * 1e30, -node, math.nextafter(node, 1e400)))
        else:
            parent[key] = boundary_value(rng)
    return tree


def cbor_encode(rng: random.Random, obj) -> bytes:
    """cbor2 encoding, canonical most of the time (what a well-behaved sender writes)."""
    try:
        return cbor2.dumps(obj, canonical=rng.random() < 0.8)
    except Exception:  # a mutated tree cbor2 cannot encode (unhashable key, ...)
        return b"\xa0"


def mutate_cbor(rng: random.Random, data: bytes) -> bytes:
    """Decode `data`, change one node, encode again."""
    try:
        tree = cbor2.loads(data)
    except Exception:
        return mutate_bytes(rng, data)
    return cbor_encode(rng, mutate_tree(rng, tree))


def deep_nesting(rng: random.Random, opener: str, closer: str = "") -> str:
    depth = rng.choice((50, 500, 5000, 100_000))
    return opener * depth + closer * (depth if rng.random() < 0.5 else 0)


def json_encode(rng: random.Random, obj) -> str:
    try:
        return json.dumps(obj, ensure_ascii=rng.random() < 0.5)
    except (TypeError, ValueError, RecursionError):
        return "{}"


def _jsonable(obj):
    """Bytes become hex text and non-text keys text, so json.dumps takes any mutated tree."""
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, list | tuple):
        return [_jsonable(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, str) else k: _jsonable(v) for k, v in obj.items()}
    return obj


def mutate_json_text(rng: random.Random, text: str) -> str:
    """A JSON document changed in its tree (most of the time) or in its characters."""
    r = rng.random()
    if r < 0.6 and text.count("[") + text.count("{") < 200:  # never parse our own deep nests
        try:
            tree = json.loads(text)
        except (ValueError, RecursionError):
            tree = {}
        return json_encode(rng, _jsonable(mutate_tree(rng, tree, ("version", "files", "x"))))
    if r < 0.65:
        pos = rng.randrange(len(text) + 1)
        return text[:pos] + deep_nesting(rng, rng.choice("[{"), "") + text[pos:]
    return mutate_text(rng, text)


def mutate_text(rng: random.Random, text: str) -> str:
    """Character edits: bytes mutated, then decoded leniently (lone surrogates kept)."""
    raw = mutate_bytes(rng, text.encode("utf-8", "surrogatepass"))
    return raw.decode("utf-8", "surrogateescape" if rng.random() < 0.9 else "replace")
