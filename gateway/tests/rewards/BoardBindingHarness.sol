// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {BoardBinding} from "../../contracts/BoardBinding.sol";

/// Test-only concrete BoardBinding (the registry inherits the real one).
contract BoardBindingHarness is BoardBinding {}
