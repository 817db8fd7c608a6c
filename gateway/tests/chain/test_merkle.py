"""merkle.py against @openzeppelin/merkle-tree (node) and against itself."""

from __future__ import annotations

import os
import random

import pytest

from terrapin.gateway.chain import merkle
from terrapin.tools.devkit.chainkit import run_node

SIZES = [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 100, 257, 1000, 10_000]


def _values(rng: random.Random, n: int) -> list[merkle.Reading]:
    return [
        (rng.randbytes(20), rng.choice([0, 1, rng.getrandbits(32), 2**64 - 1]), rng.randbytes(32))
        for _ in range(n)
    ]


def _js_values(values):
    return [["0x" + b.hex(), str(s), "0x" + d.hex()] for b, s, d in values]


def test_roots_and_proofs_match_openzeppelin_merkle_tree(rng: random.Random, node_exe: str) -> None:
    cases, trees = [], []
    for n in SIZES + [rng.randint(1, 10_000) for _ in range(3)]:
        values = _values(rng, n)
        indices = list(range(n)) if n <= 1000 else sorted(rng.sample(range(n), 200))
        cases.append({"values": _js_values(values), "proofs": indices})
        trees.append((values, indices, merkle.build_tree(values)))
    results = run_node("merkle-check.mjs", {"cases": cases}, node_exe)["results"]
    for (values, indices, tree), js in zip(trees, results, strict=True):
        n = len(values)
        assert "0x" + tree.root.hex() == js["root"], f"root differs for {n} leaves"
        for i in indices:
            proof = ["0x" + p.hex() for p in tree.proof(i)]
            assert proof == js["proofs"][str(i)], f"proof of value {i} of {n} differs"
            assert "0x" + tree.leaf(i).hex() == js["leaves"][str(i)], f"leaf {i} of {n}"
            assert tree.tree_index[i] == js["treeIndex"][str(i)], f"tree index {i} of {n}"


def test_baseline_backend_builds_the_same_tree(rng: random.Random) -> None:
    values = _values(rng, 333)
    fast, slow = merkle.build_tree(values), merkle.build_tree(values, merkle.pycryptodome_keccak)
    assert fast.nodes == slow.nodes
    assert fast.tree_index == slow.tree_index


def test_every_proof_verifies_and_a_wrong_value_does_not(rng: random.Random) -> None:
    values = _values(rng, 129)
    tree = merkle.build_tree(values)
    for i, (board, seq, digest) in enumerate(values):
        proof = tree.proof(i)
        assert merkle.verify(tree.root, board, seq, digest, proof)
        assert not merkle.verify(tree.root, board, seq + 1 if seq < 2**64 - 1 else 0, digest, proof)
        assert not merkle.verify(tree.root, board, seq, bytes(32), proof)


def test_stored_tree_serves_the_same_proofs(rng: random.Random) -> None:
    values = _values(rng, 50)
    tree = merkle.build_tree(values)
    blob = tree.to_blob()
    size = len(blob) // 32
    for i in range(50):
        stored = merkle.proof_from_nodes(
            lambda k: blob[k * 32 : k * 32 + 32], size, tree.tree_index[i]
        )
        assert stored == tree.proof(i)


@pytest.mark.parametrize(
    ("board", "seq", "digest"),
    [
        (bytes(19), 1, bytes(32)),
        (bytes(20), -1, bytes(32)),
        (bytes(20), 2**64, bytes(32)),
        (bytes(20), 1, bytes(31)),
    ],
)
def test_bad_values_raise_typed_errors(board: bytes, seq: int, digest: bytes) -> None:
    with pytest.raises(merkle.MerkleError):
        merkle.build_tree([(os.urandom(20), 1, os.urandom(32)), (board, seq, digest)])


def test_empty_tree_and_non_leaf_index_are_rejected() -> None:
    with pytest.raises(merkle.MerkleError):
        merkle.build_tree([])
    tree = merkle.build_tree([(bytes(20), i, bytes(32)) for i in range(4)])
    with pytest.raises(merkle.MerkleError):
        merkle.proof_from_nodes(tree.nodes.__getitem__, len(tree.nodes), 0)
