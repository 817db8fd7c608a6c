// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title TerrapinRewards: the reward token and its cumulative Merkle distributor.
/// @notice Once per epoch the oracle publishes the root of a tree whose leaves are
/// (address owner, uint256 cumulativeAmount) in OpenZeppelin StandardMerkleTree
/// encoding: keccak256(bytes.concat(keccak256(abi.encode(owner, cumulativeAmount)))),
/// with the tree's cumulative total. claim() mints the difference between the owner's
/// cumulative amount and what the owner already claimed, to the owner only, whoever
/// sends the transaction. Only the latest root is claimable. Supply can never exceed
/// the latest published cumulative total. Each publication also commits to the epoch's
/// manifest (keccak256 of its bytes, docs/REWARDS.md): it is emitted with the root, not
/// stored, so anyone can fetch the manifest, hash it and recompute the root from it.
///
/// What a leaked oracle key can do is bounded: epochs go up by exactly one, never to
/// an epoch that has not started yet (`epochSeconds`, block time), so publishing can
/// never be frozen and there is at most one publication per started epoch; each
/// publication may add at most `epochCap` to the cumulative total. The admin (a separate, cold key) sets the
/// cap, pauses publishing and claims, replaces the latest root while nobody has
/// claimed against it, and grants or revokes ORACLE_ROLE.
contract TerrapinRewards is ERC20, AccessControl, Pausable {
    bytes32 public constant ORACLE_ROLE = keccak256("ORACLE_ROLE");

    /// Epoch E is [E * epochSeconds, (E + 1) * epochSeconds) in block time.
    uint256 public immutable epochSeconds;

    bytes32 public merkleRoot; // zero until the first publication
    uint64 public epoch; // epoch of merkleRoot
    uint192 public cumulativeTotal; // sum of all cumulative amounts in merkleRoot's tree
    uint192 public previousTotal; // cumulativeTotal before merkleRoot was published
    uint192 public epochCap; // the most one publication may add to cumulativeTotal
    uint256 public supplyAtPublication; // totalSupply when merkleRoot was set: no claim since
    mapping(address owner => uint256 amount) public claimed;

    event RootPublished(uint64 indexed epoch, bytes32 root, uint256 cumulativeTotal, bytes32 manifestHash);
    event RootReplaced(
        uint64 indexed epoch, bytes32 oldRoot, bytes32 root, uint256 cumulativeTotal, bytes32 manifestHash
    );
    event EpochCapSet(uint256 cap);
    event Claimed(address indexed owner, uint256 amount, uint256 cumulativeAmount);

    error ZeroAddress();
    error ZeroEpochSeconds();
    error ZeroRoot();
    error EpochNotNext(uint64 epoch, uint64 expected);
    error EpochNotStarted(uint64 epoch, uint256 startsAt);
    error TotalDecreased(uint256 total, uint256 latest);
    error OverEpochCap(uint256 added, uint256 cap);
    error NothingPublished();
    error AlreadyClaimedAgainst(uint64 epoch);
    error InvalidProof();
    error NothingToClaim(uint256 cumulativeAmount, uint256 alreadyClaimed);
    error ExceedsPublishedTotal();

    constructor(
        string memory name_,
        string memory symbol_,
        address admin,
        address oracle,
        uint256 epochSeconds_,
        uint192 epochCap_
    ) ERC20(name_, symbol_) {
        if (admin == address(0) || oracle == address(0)) revert ZeroAddress();
        if (epochSeconds_ == 0) revert ZeroEpochSeconds();
        epochSeconds = epochSeconds_;
        epochCap = epochCap_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(ORACLE_ROLE, oracle);
        emit EpochCapSet(epochCap_);
    }

    /// @notice Publish the cumulative distribution root of `newEpoch` and its tree's
    /// cumulative `total`, committing to its manifest by `manifestHash` (zero: no manifest,
    /// e.g. a root carried over an epoch without readings). The first publication may name
    /// any started epoch; every later one exactly the next. `total` may not shrink, nor
    /// grow by more than `epochCap`.
    function publishRoot(uint64 newEpoch, bytes32 root, uint192 total, bytes32 manifestHash)
        external
        onlyRole(ORACLE_ROLE)
        whenNotPaused
    {
        if (root == bytes32(0)) revert ZeroRoot();
        if (merkleRoot != bytes32(0) && newEpoch != epoch + 1) revert EpochNotNext(newEpoch, epoch + 1);
        uint256 startsAt = uint256(newEpoch) * epochSeconds;
        if (startsAt > block.timestamp) revert EpochNotStarted(newEpoch, startsAt);
        uint192 before = cumulativeTotal;
        _checkTotal(total, before);
        previousTotal = before;
        _setRoot(root, total);
        epoch = newEpoch;
        emit RootPublished(newEpoch, root, total, manifestHash);
    }

    /// @notice Replace the latest epoch's root (e.g. one a leaked oracle key published)
    /// while nobody has claimed against it. The same bounds hold, from the total
    /// before that epoch; `manifestHash` commits to the replacing manifest.
    function replaceRoot(bytes32 root, uint192 total, bytes32 manifestHash) external onlyRole(DEFAULT_ADMIN_ROLE) {
        bytes32 old = merkleRoot;
        if (old == bytes32(0)) revert NothingPublished();
        if (root == bytes32(0)) revert ZeroRoot();
        if (totalSupply() != supplyAtPublication) revert AlreadyClaimedAgainst(epoch);
        _checkTotal(total, previousTotal);
        _setRoot(root, total);
        emit RootReplaced(epoch, old, root, total, manifestHash);
    }

    /// @notice The most one publication may add to the cumulative total.
    function setEpochCap(uint192 cap) external onlyRole(DEFAULT_ADMIN_ROLE) {
        epochCap = cap;
        emit EpochCapSet(cap);
    }

    /// @notice Stop publications and claims until unpause().
    function pause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _pause();
    }

    function unpause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _unpause();
    }

    function _checkTotal(uint192 total, uint192 before) private view {
        if (total < before) revert TotalDecreased(total, before);
        if (total - before > epochCap) revert OverEpochCap(total - before, epochCap);
    }

    function _setRoot(bytes32 root, uint192 total) private {
        merkleRoot = root;
        cumulativeTotal = total;
        supplyAtPublication = totalSupply();
    }

    /// @notice Pay `owner` what it has earned and not yet claimed. Anyone may call;
    /// tokens go to `owner` only.
    function claim(address owner, uint256 cumulativeAmount, bytes32[] calldata proof) external whenNotPaused {
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(owner, cumulativeAmount))));
        if (!MerkleProof.verifyCalldata(proof, merkleRoot, leaf)) revert InvalidProof();
        uint256 already = claimed[owner];
        if (cumulativeAmount <= already) revert NothingToClaim(cumulativeAmount, already);
        uint256 amount = cumulativeAmount - already;
        if (totalSupply() + amount > cumulativeTotal) revert ExceedsPublishedTotal();
        claimed[owner] = cumulativeAmount;
        _mint(owner, amount);
        emit Claimed(owner, amount, cumulativeAmount);
    }

    /// @notice What claim(owner, cumulativeAmount, proof) would pay now (0 if nothing or invalid).
    function claimable(address owner, uint256 cumulativeAmount, bytes32[] calldata proof)
        external
        view
        returns (uint256)
    {
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(owner, cumulativeAmount))));
        if (!MerkleProof.verifyCalldata(proof, merkleRoot, leaf)) return 0;
        uint256 already = claimed[owner];
        return cumulativeAmount > already ? cumulativeAmount - already : 0;
    }
}
