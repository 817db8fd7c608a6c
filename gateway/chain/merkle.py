"""OpenZeppelin StandardMerkleTree for Terrapin readings, byte for byte.

A reading's leaf is the StandardMerkleTree leaf of (address board, uint64 seq, bytes32
digest): keccak256(keccak256(abi.encode(board, seq, digest))). Inner nodes hash the
sorted pair. The layout is @openzeppelin/merkle-tree 1.0.8's (core.js makeMerkleTree):
leaves sorted by hash, the tree a flat array of 2n-1 nodes with node i's children at
2i+1 and 2i+2, root at 0, and the k-th sorted leaf at index len-1-k. A proof is the
sibling of each node on the way up, which is what OpenZeppelin's MerkleProof and the JS
library's getProof produce and accept.

Pure logic: no files, no sockets. The hash is safe-pysha3's keccak_256 (C, ~10x less
per-call set-up than pycryptodome's); `build_tree(..., keccak=pycryptodome_keccak)` is the
baseline the benchmark measures beside it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

import sha3
from Crypto.Hash import keccak as _cd_keccak

from terrapin.gateway.errors import TerrapinError

LEAF_ENCODING = ("address", "uint64", "bytes32")
HASH_SIZE = 32
_ZERO12 = bytes(12)
_ZERO24 = bytes(24)
_UINT64_MAX = (1 << 64) - 1

_LEAF_WORDS = struct.Struct(">12x20s24xQ32s")  # abi.encode(address, uint64, bytes32)

Keccak = Callable[[bytes], bytes]


class MerkleError(TerrapinError, ValueError):
    """A value, proof or stored tree that is not well formed."""


def keccak256(data: bytes) -> bytes:
    return sha3.keccak_256(data).digest()


def pycryptodome_keccak(data: bytes) -> bytes:
    """The baseline backend (pycryptodome): same result, more set-up per call."""
    return _cd_keccak.new(digest_bits=256, data=data).digest()


Reading = tuple[bytes, int, bytes]  # (board address 20 bytes, seq, digest 32 bytes)


def encode_leaf(board: bytes, seq: int, digest: bytes) -> bytes:
    """abi.encode(address, uint64, bytes32): three 32-byte words."""
    if len(board) != 20:
        raise MerkleError(f"board address must be 20 bytes, got {len(board)}")
    if not 0 <= seq <= _UINT64_MAX:
        raise MerkleError(f"seq {seq} does not fit uint64")
    if len(digest) != 32:
        raise MerkleError(f"digest must be 32 bytes, got {len(digest)}")
    return _ZERO12 + board + _ZERO24 + seq.to_bytes(8, "big") + digest


def leaf_hash(board: bytes, seq: int, digest: bytes, keccak: Keccak = keccak256) -> bytes:
    return keccak(keccak(encode_leaf(board, seq, digest)))


def node_hash(a: bytes, b: bytes, keccak: Keccak = keccak256) -> bytes:
    return keccak(a + b if a < b else b + a)


def process_proof(leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root a proof leads to from `leaf` (MerkleProof.processProof)."""
    node = leaf
    for sibling in proof:
        if len(sibling) != HASH_SIZE:
            raise MerkleError("proof elements must be 32 bytes")
        node = node_hash(node, sibling)
    return node


def verify(root: bytes, board: bytes, seq: int, digest: bytes, proof: Sequence[bytes]) -> bool:
    return process_proof(leaf_hash(board, seq, digest), proof) == root


class MerkleTree:
    """A built tree: `nodes` in OpenZeppelin's flat layout, `tree_index[i]` for value i."""

    __slots__ = ("nodes", "tree_index")

    def __init__(self, nodes: list[bytes], tree_index: list[int]):
        self.nodes = nodes
        self.tree_index = tree_index

    @property
    def root(self) -> bytes:
        return self.nodes[0]

    def __len__(self) -> int:
        return len(self.tree_index)

    def leaf(self, value_index: int) -> bytes:
        return self.nodes[self.tree_index[value_index]]

    def proof(self, value_index: int) -> list[bytes]:
        """Proof for the value given at position `value_index` to build_tree."""
        return proof_from_nodes(
            self.nodes.__getitem__, len(self.nodes), self.tree_index[value_index]
        )

    def to_blob(self) -> bytes:
        return b"".join(self.nodes)


def _check_values(values: Sequence[Reading]) -> None:
    """Reject what struct.pack would silently pad or truncate."""
    for board, seq, digest in values:
        if len(board) != 20 or len(digest) != 32 or not 0 <= seq <= _UINT64_MAX:
            encode_leaf(board, seq, digest)  # raises the precise MerkleError


def build_tree(values: Sequence[Reading], keccak: Keccak = keccak256) -> MerkleTree:
    """StandardMerkleTree.of(values, ["address", "uint64", "bytes32"]) (sortLeaves on)."""
    if not values:
        raise MerkleError("a tree needs at least one leaf")
    if keccak is keccak256:  # the hot path, inlined: ~1.5 us a leaf
        _check_values(values)
        k = sha3.keccak_256
        pack = _LEAF_WORDS.pack
        leaves = [k(k(pack(board, seq, digest)).digest()).digest() for board, seq, digest in values]
    else:
        leaves = [leaf_hash(board, seq, digest, keccak) for board, seq, digest in values]
    return build_from_leaves(leaves, keccak)


def build_from_leaves(leaves: Sequence[bytes], keccak: Keccak = keccak256) -> MerkleTree:
    """The tree over already hashed leaves, sorted by hash as the JS library does."""
    n = len(leaves)
    if n == 0:
        raise MerkleError("a tree needs at least one leaf")
    order = sorted(range(n), key=leaves.__getitem__)
    size = 2 * n - 1
    nodes: list[bytes] = [b""] * size
    tree_index = [0] * n
    for rank, value_index in enumerate(order):
        nodes[size - 1 - rank] = leaves[value_index]
        tree_index[value_index] = size - 1 - rank
    # Inner nodes are [0, n-1); a depth's nodes are contiguous and so are their children,
    # so each depth is one list comprehension, deepest first.
    k = sha3.keccak_256
    depth = (n - 1).bit_length()
    while depth >= 0:
        lo = (1 << depth) - 1
        hi = min((1 << (depth + 1)) - 1, n - 1)
        if lo < hi:
            children = nodes[2 * lo + 1 : 2 * hi + 1]
            lefts, rights = children[0::2], children[1::2]
            if keccak is keccak256:
                nodes[lo:hi] = [
                    k(a + b if a < b else b + a).digest()
                    for a, b in zip(lefts, rights, strict=True)
                ]
            else:
                nodes[lo:hi] = [
                    keccak(a + b if a < b else b + a) for a, b in zip(lefts, rights, strict=True)
                ]
        depth -= 1
    return MerkleTree(nodes, tree_index)


def proof_from_nodes(node_at: Callable[[int], bytes], size: int, index: int) -> list[bytes]:
    """Siblings from leaf `index` up to the root, reading nodes through `node_at`.

    `node_at` lets a stored tree serve a proof without loading it (see batcher)."""
    if not (size - 1) // 2 <= index < size:  # leaves are the last (size+1)//2 nodes
        raise MerkleError(f"index {index} is not a leaf of a {size}-node tree")
    proof = []
    while index > 0:
        sibling = index + 1 if index % 2 else index - 1
        proof.append(node_at(sibling))
        index = (index - 1) // 2
    return proof
