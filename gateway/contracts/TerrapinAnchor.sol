// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ITerrapinRegistry} from "./ITerrapinRegistry.sol";

/// @title Terrapin anchor: one Merkle root per batch of readings.
/// @notice Batch ids are strictly sequential (0, 1, 2, ...): `anchor` accepts only
/// `nextBatchId`, so a batch can never be anchored twice and a gap is impossible.
/// Leaves are OpenZeppelin StandardMerkleTree leaves of (address board, uint64 seq,
/// bytes32 digest): keccak256(bytes.concat(keccak256(abi.encode(board, seq, digest)))).
/// @dev Gas: one new storage slot per batch (the root) plus one packed slot that is
/// rewritten each time (next batch id, running reading total, last anchor time). The
/// batch's count and gateway travel in the Anchored event, which is what a verifier
/// reads from the anchoring transaction's receipt. Cost is flat in the batch size.
contract TerrapinAnchor {
    ITerrapinRegistry public immutable registry;

    /// Packed into one slot: rewritten (not created) on every anchor.
    uint64 public nextBatchId;
    uint64 public totalReadings;
    /// Time of the last anchor (the deployment time until the first one).
    uint40 public lastAnchoredAt;

    mapping(uint256 batchId => bytes32 root) private _roots;

    event Anchored(uint64 indexed batchId, bytes32 root, uint64 count, address indexed gateway);

    error NotGateway(address caller);
    error BatchIdMismatch(uint64 expected, uint64 given);
    error EmptyBatch();
    error ZeroRoot();

    constructor(ITerrapinRegistry registry_) {
        registry = registry_;
        // Make the packed slot non-zero now, so the first anchor pays the same as the rest.
        lastAnchoredAt = uint40(block.timestamp);
    }

    /// @notice Anchor the root of batch `batchId` holding `count` readings.
    function anchor(uint64 batchId, bytes32 root, uint64 count) external {
        if (!registry.isGateway(msg.sender)) revert NotGateway(msg.sender);
        uint64 expected = nextBatchId;
        if (batchId != expected) revert BatchIdMismatch(expected, batchId);
        if (root == bytes32(0)) revert ZeroRoot();
        if (count == 0) revert EmptyBatch();
        _roots[batchId] = root;
        nextBatchId = expected + 1;
        totalReadings += count;
        lastAnchoredAt = uint40(block.timestamp);
        emit Anchored(batchId, root, count, msg.sender);
    }

    /// @return the root anchored for `batchId`, or zero if none.
    function rootOf(uint64 batchId) external view returns (bytes32) {
        return _roots[batchId];
    }

    /// @return the StandardMerkleTree leaf of one reading.
    function leafHash(address board, uint64 seq, bytes32 digest) public pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(board, seq, digest))));
    }

    /// @return true if the reading (board, seq, digest) is in the anchored batch `batchId`.
    function verifyReading(
        uint64 batchId,
        address board,
        uint64 seq,
        bytes32 digest,
        bytes32[] calldata proof
    ) public view returns (bool) {
        bytes32 root = _roots[batchId];
        if (root == bytes32(0)) return false;
        return MerkleProof.verifyCalldata(proof, root, leafHash(board, seq, digest));
    }

    /// @return true if the reading is in batch `batchId` AND `board` signed `digest`:
    /// `signature` is the COSE r||s (64 bytes, low-S), `v` the recovery id (0/1 or 27/28).
    function verifyReadingSigned(
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
        return verifyReading(batchId, board, seq, digest, proof);
    }
}
