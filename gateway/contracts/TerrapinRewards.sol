// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title TerrapinRewards: the reward token and its cumulative Merkle distributor.
/// @notice Once per epoch the oracle publishes the root of a tree whose leaves are
/// (address owner, uint256 cumulativeAmount) in OpenZeppelin StandardMerkleTree
/// encoding: keccak256(bytes.concat(keccak256(abi.encode(owner, cumulativeAmount)))).
/// claim() mints the difference between the owner's cumulative amount and what the
/// owner already claimed, to the owner only, whoever sends the transaction.
/// Only the latest root is claimable: an owner with an older proof simply claims
/// the larger cumulative amount from the latest distribution file.
/// Supply can never exceed the latest published cumulative total.
contract TerrapinRewards is ERC20, AccessControl {
    bytes32 public constant ORACLE_ROLE = keccak256("ORACLE_ROLE");

    bytes32 public merkleRoot; // zero until the first publication
    uint64 public epoch; // epoch of merkleRoot
    uint192 public cumulativeTotal; // sum of all cumulative amounts in merkleRoot's tree
    mapping(address owner => uint256 amount) public claimed;

    event RootPublished(uint64 indexed epoch, bytes32 root, uint256 cumulativeTotal);
    event Claimed(address indexed owner, uint256 amount, uint256 cumulativeAmount);

    error ZeroRoot();
    error EpochNotIncreasing(uint64 epoch, uint64 latest);
    error TotalDecreased(uint256 total, uint256 latest);
    error InvalidProof();
    error NothingToClaim(uint256 cumulativeAmount, uint256 alreadyClaimed);
    error ExceedsPublishedTotal();

    constructor(string memory name_, string memory symbol_, address admin, address oracle) ERC20(name_, symbol_) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(ORACLE_ROLE, oracle);
    }

    /// @notice Publish the cumulative distribution root of `newEpoch` (epochs strictly
    /// increasing; totals never decreasing, since amounts are cumulative).
    function publishRoot(uint64 newEpoch, bytes32 root, uint192 total) external onlyRole(ORACLE_ROLE) {
        if (root == bytes32(0)) revert ZeroRoot();
        if (merkleRoot != bytes32(0)) {
            if (newEpoch <= epoch) revert EpochNotIncreasing(newEpoch, epoch);
            if (total < cumulativeTotal) revert TotalDecreased(total, cumulativeTotal);
        }
        merkleRoot = root;
        epoch = newEpoch;
        cumulativeTotal = total;
        emit RootPublished(newEpoch, root, total);
    }

    /// @notice Pay `owner` what it has earned and not yet claimed. Anyone may call;
    /// tokens go to `owner` only.
    function claim(address owner, uint256 cumulativeAmount, bytes32[] calldata proof) external {
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
