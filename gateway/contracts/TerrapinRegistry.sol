// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {BoardBinding} from "./BoardBinding.sol";
import {ITerrapinRegistry} from "./ITerrapinRegistry.sol";

/// @title Terrapin registry: which gateways may anchor, and which owner each board is bound to.
/// @notice The admin (DEFAULT_ADMIN_ROLE) grants and revokes GATEWAY_ROLE with
/// AccessControl's grantRole/revokeRole; every change emits RoleGranted/RoleRevoked.
/// Boards are bound to owners by proof of possession (BoardBinding: the board's own
/// EIP-712 signature, domain-separated by chain id and this contract's address).
/// @dev `isGateway` is virtual and the anchor only relies on ITerrapinRegistry.
contract TerrapinRegistry is AccessControl, BoardBinding, ITerrapinRegistry {
    bytes32 public constant GATEWAY_ROLE = keccak256("GATEWAY_ROLE");

    error ZeroAdmin();

    constructor(address admin) {
        if (admin == address(0)) revert ZeroAdmin();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @inheritdoc ITerrapinRegistry
    function isGateway(address account) public view virtual returns (bool) {
        return hasRole(GATEWAY_ROLE, account);
    }
}
