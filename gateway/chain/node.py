"""Chain connection: config, the gateway's key, the two contracts, deployment.

`network = "embedded"` runs eth-tester + py-evm in this process (automine) and deploys
the contracts at start; any other value is a JSON-RPC URL (anvil, a testnet, an L2).
The key comes from a keystore file (password from an environment variable) or from an
environment variable holding the hex key: never from the command line, never logged.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from terrapin.gateway.errors import ConfigError, TerrapinError

log = logging.getLogger(__name__)

BUILD_DIR = Path(__file__).resolve().parent.parent / "contracts" / "build"
EMBEDDED = "embedded"
GWEI = 10**9


class ChainError(TerrapinError):
    """The chain did not answer or answered something we cannot use."""


@dataclass
class ChainConfig:
    """The `[chain]` section of the gateway config (all keys optional)."""

    network: str = EMBEDDED  # "embedded" or a JSON-RPC URL
    keystore: str | None = None  # path to an encrypted JSON keystore
    password_env: str = "TERRAPIN_KEYSTORE_PASSWORD"  # env var with its password
    key_env: str = "TERRAPIN_CHAIN_KEY"  # env var with a hex private key (if no keystore)
    registry: str | None = None  # deployed addresses; None on embedded: deploy at start
    anchor: str | None = None
    batch_size: int = 1000  # close a batch at this many readings ...
    batch_seconds: float = 60.0  # ... or when its oldest reading is this old
    confirmations: int = 1  # blocks on top of (and including) the anchoring block
    stuck_after: float = 90.0  # seconds before an unmined tx is replaced
    fee_bump: float = 1.125  # replacement fee factor (>= 1.10: nodes require 10%)
    priority_fee_gwei: float = 1.0  # used when the node has no eth_maxPriorityFeePerGas
    max_fee_gwei: float = 500.0  # never offer more than this per gas
    gas_limit: int = 120_000  # an anchor uses ~47k
    poll_seconds: float = 2.0
    rpc_timeout: float = 10.0
    poa: bool = False  # inject the extraData middleware (PoA chains, some L2s)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None) -> ChainConfig:
        data = dict(data or {})
        known = {f.name: f for f in fields(cls) if f.name != "extra"}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown [chain] key(s): {', '.join(unknown)}",
                hint=f"known keys: {', '.join(sorted(known))}",
            )
        config = cls(**data)
        config.validate()
        return config

    def validate(self) -> None:
        if self.network != EMBEDDED and not self.network.startswith(
            ("http://", "https://", "ws://", "wss://")
        ):
            raise ConfigError(
                f"chain network {self.network!r} is neither 'embedded' nor a JSON-RPC URL"
            )
        if self.batch_size < 1:
            raise ConfigError("chain batch_size must be at least 1")
        if self.batch_seconds <= 0:
            raise ConfigError("chain batch_seconds must be positive")
        if self.confirmations < 1:
            raise ConfigError("chain confirmations must be at least 1 (the anchoring block)")
        if self.fee_bump < 1.10:
            raise ConfigError(
                "chain fee_bump must be >= 1.10: nodes refuse replacements under +10%"
            )
        if self.network != EMBEDDED and not (self.registry and self.anchor):
            raise ConfigError(
                "chain registry and anchor addresses are needed for a JSON-RPC network",
                hint="deploy once (docs/CHAIN.md) and put the addresses in [chain]",
            )


@cache
def artifact(name: str) -> dict[str, Any]:
    """A committed build artifact (gateway/contracts/build/<name>.json)."""
    return json.loads((BUILD_DIR / f"{name}.json").read_text())


def load_account(config: ChainConfig) -> LocalAccount | None:
    """The gateway key from the keystore or the env var; None if neither is set."""
    if config.keystore:
        path = Path(config.keystore).expanduser()
        try:
            keystore = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read keystore {path}: {exc}") from None
        password = os.environ.get(config.password_env)
        if password is None:
            raise ConfigError(
                f"keystore {path} needs its password in ${config.password_env}",
                hint="export it in the service environment, never on the command line",
            )
        try:
            return Account.from_key(Account.decrypt(keystore, password))
        except ValueError:
            raise ConfigError(f"wrong password for keystore {path}") from None
    key = os.environ.get(config.key_env)
    if key:
        try:
            return Account.from_key(key.strip())
        except (ValueError, TypeError):
            raise ConfigError(f"${config.key_env} is not a 32-byte hex private key") from None
    return None


class Chain:
    """A connected chain: web3, the gateway account, the registry and anchor contracts."""

    def __init__(
        self,
        w3: Web3,
        account: LocalAccount,
        registry: Contract,
        anchor: Contract,
        config: ChainConfig,
        tester: Any = None,
    ):
        self.w3 = w3
        self.account = account
        self.registry = registry
        self.anchor = anchor
        self.config = config
        self.tester = tester  # the EthereumTester on the embedded chain, else None
        self.chain_id = w3.eth.chain_id

    @property
    def address(self) -> str:
        return self.account.address

    @classmethod
    def connect(cls, config: ChainConfig | None = None) -> Chain:
        config = config or ChainConfig()
        account = load_account(config)
        if config.network == EMBEDDED:
            return cls._embedded(config, account)
        w3 = rpc_web3(config.network, timeout=config.rpc_timeout, poa=config.poa)
        if account is None:
            raise ConfigError(
                "no gateway key: set [chain] keystore (and its password env var) "
                f"or ${config.key_env}"
            )
        registry = w3.eth.contract(
            address=Web3.to_checksum_address(config.registry),
            abi=artifact("TerrapinRegistry")["abi"],
        )
        anchor = w3.eth.contract(
            address=Web3.to_checksum_address(config.anchor), abi=artifact("TerrapinAnchor")["abi"]
        )
        if not w3.eth.get_code(anchor.address):
            raise ChainError(f"no contract at anchor address {anchor.address} on {config.network}")
        return cls(w3, account, registry, anchor, config)

    @classmethod
    def _embedded(cls, config: ChainConfig, account: LocalAccount | None) -> Chain:
        from eth_tester import EthereumTester, PyEVMBackend
        from web3 import EthereumTesterProvider

        tester = EthereumTester(PyEVMBackend())
        w3 = Web3(EthereumTesterProvider(tester))
        account = account or Account.create()
        funder = w3.eth.accounts[0]
        tx = w3.eth.send_transaction({"from": funder, "to": account.address, "value": 10**21})
        w3.eth.wait_for_transaction_receipt(tx)
        registry, anchor = deploy(w3, account)
        grant_gateway(w3, account, registry, account.address)
        log.info("embedded chain: registry %s anchor %s", registry.address, anchor.address)
        return cls(w3, account, registry, anchor, config, tester=tester)


def rpc_web3(url: str, *, timeout: float = 10.0, poa: bool = False) -> Web3:
    if url.startswith(("ws://", "wss://")):
        raise ConfigError("use an http(s) JSON-RPC URL (websockets need the async API)")
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": timeout}))
    if poa:
        from web3.middleware import ExtraDataToPOAMiddleware

        w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    return w3


def fees(w3: Web3, config: ChainConfig | None = None) -> tuple[int, int]:
    """(maxFeePerGas, maxPriorityFeePerGas) for a new EIP-1559 transaction."""
    config = config or ChainConfig()
    base = w3.eth.get_block("latest").get("baseFeePerGas")
    if base is None:
        raise ChainError("the chain has no base fee (pre-London): EIP-1559 is required")
    try:
        priority = int(w3.eth.max_priority_fee)
    except Exception:  # node without eth_maxPriorityFeePerGas
        priority = int(config.priority_fee_gwei * GWEI)
    priority = max(priority, 1)
    max_fee = min(2 * base + priority, int(config.max_fee_gwei * GWEI))
    return max(max_fee, priority), priority


def transact(w3: Web3, account: LocalAccount, tx: dict[str, Any]) -> Any:
    """Sign, send and wait for a set-up transaction (deploy, grant): not for anchors."""
    max_fee, priority = fees(w3)
    tx = {
        "from": account.address,
        "chainId": w3.eth.chain_id,
        "nonce": w3.eth.get_transaction_count(account.address, "pending"),
        "maxFeePerGas": max_fee,
        "maxPriorityFeePerGas": priority,
        **tx,
    }
    if "gas" not in tx:
        tx["gas"] = int(w3.eth.estimate_gas(tx) * 1.2) + 10_000
    signed = account.sign_transaction(tx)
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(signed.raw_transaction), timeout=120
    )
    if receipt["status"] != 1:
        raise ChainError(f"transaction {receipt['transactionHash'].to_0x_hex()} reverted")
    return receipt


def deploy(w3: Web3, account: LocalAccount, admin: str | None = None) -> tuple[Contract, Contract]:
    """Deploy TerrapinRegistry (admin: `admin` or the deployer) and TerrapinAnchor."""
    reg_art, anc_art = artifact("TerrapinRegistry"), artifact("TerrapinAnchor")
    factory = w3.eth.contract(abi=reg_art["abi"], bytecode=reg_art["bytecode"])
    data = factory.constructor(admin or account.address).data_in_transaction
    registry_addr = transact(w3, account, {"data": data, "gas": 2_000_000})["contractAddress"]
    registry = w3.eth.contract(address=registry_addr, abi=reg_art["abi"])
    factory = w3.eth.contract(abi=anc_art["abi"], bytecode=anc_art["bytecode"])
    data = factory.constructor(registry_addr).data_in_transaction
    anchor_addr = transact(w3, account, {"data": data, "gas": 2_000_000})["contractAddress"]
    anchor = w3.eth.contract(address=anchor_addr, abi=anc_art["abi"])
    return registry, anchor


def grant_gateway(w3: Web3, admin: LocalAccount, registry: Contract, gateway: str) -> None:
    role = registry.functions.GATEWAY_ROLE().call()
    data = registry.functions.grantRole(role, gateway)._encode_transaction_data()
    transact(w3, admin, {"to": registry.address, "data": data})


def deploy_contracts(
    rpc: str, config: ChainConfig, *, admin: str | None = None, gateways: tuple[str, ...] = ()
) -> dict[str, str]:
    """Deploy registry + anchor on the JSON-RPC chain `rpc` with the configured key.

    The deployer is the registry admin (or `admin`); when it is, it grants GATEWAY_ROLE
    to `gateways` (default: itself). Returns the gateway's [chain] addresses."""
    account = load_account(config)
    if account is None:
        raise TerrapinError(
            "no deployer key", hint=f"use --keystore or set ${config.key_env} in the environment"
        )
    w3 = rpc_web3(rpc, timeout=config.rpc_timeout, poa=config.poa)
    registry, anchor = deploy(w3, account, admin)
    if admin is None or Web3.to_checksum_address(admin) == account.address:
        for gateway in gateways or (account.address,):
            grant_gateway(w3, account, registry, Web3.to_checksum_address(gateway))
    return {"network": rpc, "registry": registry.address, "anchor": anchor.address}
