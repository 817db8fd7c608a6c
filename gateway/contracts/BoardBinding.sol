// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";

/// @title BoardBinding: a board is bound to an owner by the board's own signature.
/// @notice The board's key signs the EIP-712 message BindBoard(owner, nonce) in the
/// domain {name: "Terrapin", version: "1", chainId, verifyingContract}. The domain
/// makes a signature valid on exactly one chain and one contract; the per-board
/// nonce makes it valid exactly once, so a board is re-bound only by a NEW
/// signature from the same board, and an old signature cannot roll an owner back.
/// Anyone may submit the signature (the gateway, the owner, a relayer): it binds
/// the board to the owner the board signed for and to nobody else.
/// Binding to the zero address unbinds the board (it then earns for nobody).
abstract contract BoardBinding is EIP712 {
    bytes32 public constant BIND_TYPEHASH = keccak256("BindBoard(address owner,uint256 nonce)");

    mapping(address board => address owner) private _ownerOfBoard;
    mapping(address board => uint256 nonce) private _bindNonce;

    /// @notice Every change of a board's owner, including the first binding and unbinding.
    event BoardBound(address indexed board, address indexed previousOwner, address indexed owner, uint256 nonce);

    error BoardIsZero();
    error BoardSignatureInvalid(address board, address signer);

    constructor() EIP712("Terrapin", "1") {}

    /// @notice The owner a board is bound to (zero: none).
    function ownerOfBoard(address board) public view returns (address) {
        return _ownerOfBoard[board];
    }

    /// @notice The nonce the board's next binding signature must carry.
    function bindNonce(address board) public view returns (uint256) {
        return _bindNonce[board];
    }

    /// @notice The 32-byte EIP-712 digest a board signs to bind itself to `owner`.
    function bindDigest(address owner, uint256 nonce) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(BIND_TYPEHASH, owner, nonce)));
    }

    /// @notice Bind `board` to `owner` with the board's 65-byte signature (r, s, v)
    /// over bindDigest(owner, bindNonce(board)). High-s signatures are rejected.
    function bindBoard(address board, address owner, bytes calldata signature) external {
        if (board == address(0)) revert BoardIsZero();
        _authorizeBind(board, owner);
        uint256 nonce = _bindNonce[board];
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(bindDigest(owner, nonce), signature);
        if (err != ECDSA.RecoverError.NoError || signer != board) revert BoardSignatureInvalid(board, signer);
        _bindNonce[board] = nonce + 1;
        address previous = _ownerOfBoard[board];
        _ownerOfBoard[board] = owner;
        emit BoardBound(board, previous, owner, nonce);
    }

    /// @dev Hook for the inheriting contract (e.g. only allow-listed boards). Reverts to refuse.
    function _authorizeBind(address board, address owner) internal virtual {}
}
