// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ITerrapinRegistry} from "./ITerrapinRegistry.sol";

/// @title Terrapin anchor: one Merkle root per (gateway, batch) of readings.
/// @notice Every sender anchors into its own namespace: the root of batch `batchId` sent
/// by gateway G is stored under (G, batchId) and nothing another sender does can read
/// as G's, consume G's batch ids or make G's next anchor fail. A (gateway, batchId) is
/// anchored once; a second anchor of it reverts. The contract does not ask the registry
/// on each anchor: whether the sender was an authorised gateway is checked by verifiers
/// at verification time, against `registry` at the anchoring block (docs/CHAIN.md).
/// Leaves are OpenZeppelin StandardMerkleTree leaves of (address board, uint64 seq,
/// bytes32 digest): keccak256(bytes.concat(keccak256(abi.encode(board, seq, digest)))).
/// @dev Gas: exactly one storage slot per anchor, created (the root), and one event; no
/// other storage is read or written, so every anchor costs the same (the first, the
/// 100th) whatever the batch size. The batch's count and gateway travel in the
/// Anchored event. There is no running counter or total: each would cost a further
/// cold slot per anchor (>= 2,100 gas), and a shared one is what let one gateway
/// consume or overflow another's.
contract TerrapinAnchor {
    /// Where verifiers check that an anchor's sender was a gateway. Never read by anchor().
    ITerrapinRegistry public immutable registry;

    mapping(address gateway => mapping(uint256 batchId => bytes32 root)) private _roots;

    event Anchored(uint64 indexed batchId, bytes32 root, uint64 count, address indexed gateway);

    error AlreadyAnchored(address gateway, uint64 batchId);
    error EmptyBatch();
    error ZeroRoot();

    constructor(ITerrapinRegistry registry_) {
        registry = registry_;
    }

    /// @notice Anchor the root of the sender's batch `batchId` holding `count` readings.
    function anchor(uint64 batchId, bytes32 root, uint64 count) external {
        if (root == bytes32(0)) revert ZeroRoot();
        if (count == 0) revert EmptyBatch();
        mapping(uint256 => bytes32) storage roots = _roots[msg.sender];
        if (roots[batchId] != bytes32(0)) revert AlreadyAnchored(msg.sender, batchId);
        roots[batchId] = root;
        emit Anchored(batchId, root, count, msg.sender);
    }

    /// @return the root `gateway` anchored for its batch `batchId`, or zero if none.
    function rootOf(address gateway, uint64 batchId) external view returns (bytes32) {
        return _roots[gateway][batchId];
    }

    /// @return the StandardMerkleTree leaf of one reading.
    function leafHash(address board, uint64 seq, bytes32 digest) public pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(board, seq, digest))));
    }

    /// @return true if the reading (board, seq, digest) is in `gateway`'s anchored batch `batchId`.
    function verifyReading(
        address gateway,
        uint64 batchId,
        address board,
        uint64 seq,
        bytes32 digest,
        bytes32[] calldata proof
    ) public view returns (bool) {
        bytes32 root = _roots[gateway][batchId];
        if (root == bytes32(0)) return false;
        return MerkleProof.verifyCalldata(proof, root, leafHash(board, seq, digest));
    }

    /// @return true if the reading is in `gateway`'s batch `batchId` AND `board` signed
    /// `digest`: `signature` is the COSE r||s (64 bytes, low-S), `v` the recovery id (0/1 or 27/28).
    function verifyReadingSigned(
        address gateway,
        uint64 batchId,
        address board,
        uint64 seq,
        bytes32 digest,
        bytes32[] calldata proof,
        bytes calldata signature,
        uint8 v
    ) external view returns (bool) {
        if (signature.length != 64) return false;
        if (v < 27) v += 27;
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        (address signer, ECDSA.RecoverError err, ) = ECDSA.tryRecover(digest, v, r, s);
        if (err != ECDSA.RecoverError.NoError || signer != board) return false;
        return verifyReading(gateway, batchId, board, seq, digest, proof);
    }
}
