// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @notice What other Terrapin contracts ask the registry. Kept as an interface so the
/// registry can grow (board bindings, rewards roles) without redeploying its users.
interface ITerrapinRegistry {
    /// @return true if `account` may anchor batches.
    function isGateway(address account) external view returns (bool);
}
