// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ITerrapinRegistry} from "./ITerrapinRegistry.sol";

/// @title Terrapin registry: which gateways may anchor.
/// @notice The admin (DEFAULT_ADMIN_ROLE) grants and revokes GATEWAY_ROLE with
/// AccessControl's grantRole/revokeRole; every change emits RoleGranted/RoleRevoked.
/// @dev Built to be extended: board bindings (issue 7) add state and functions here or in
/// a contract that inherits this one; `isGateway` is virtual and the anchor only relies on
/// ITerrapinRegistry.
contract TerrapinRegistry is AccessControl, ITerrapinRegistry {
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
