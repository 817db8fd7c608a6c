"""Rewards on chain: deploy TerrapinRewards, publish epoch roots, claim, read board bindings.

Transactions go through the chain stage's `transact` (EIP-1559 fees, signed
locally by a LocalAccount): the oracle key publishes, any key may submit a
claim (tokens always go to the owner in the leaf), any key may submit a
board's binding signature. The admin key (cap, pause, root replacement, roles) is a
different key by default and is never needed to publish or claim (docs/REWARDS.md).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from eth_abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from terrapin.gateway.chain.node import ChainError, transact
from terrapin.gateway.rewards.distribution import Distribution
from terrapin.gateway.rewards.rule import DEFAULT_BUDGET, EPOCH_SECONDS, normalise_address

BUILD_DIR = Path(__file__).resolve().parent.parent / "contracts" / "build"
TOKEN_NAME, TOKEN_SYMBOL = "Terrapin Reward", "TRP"

# The BoardBinding part of the registry's ABI: what the rewards stage reads.
BINDING_ABI: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "bindBoard",
        "stateMutability": "nonpayable",
        "inputs": [
            {"name": "board", "type": "address"},
            {"name": "owner", "type": "address"},
            {"name": "signature", "type": "bytes"},
        ],
        "outputs": [],
    },
    *(
        {
            "type": "function",
            "name": name,
            "stateMutability": "view",
            "inputs": [{"name": "board", "type": "address"}],
            "outputs": [{"name": "", "type": out}],
        }
        for name, out in (("ownerOfBoard", "address"), ("bindNonce", "uint256"))
    ),
    {"type": "error", "name": "BoardIsZero", "inputs": []},
    {
        "type": "error",
        "name": "BoardSignatureInvalid",
        "inputs": [{"name": "board", "type": "address"}, {"name": "signer", "type": "address"}],
    },
    {
        "type": "event",
        "name": "BoardBound",
        "anonymous": False,
        "inputs": [
            {"name": "board", "type": "address", "indexed": True},
            {"name": "previousOwner", "type": "address", "indexed": True},
            {"name": "owner", "type": "address", "indexed": True},
            {"name": "nonce", "type": "uint256", "indexed": False},
        ],
    },
]


@cache
def rewards_artifact() -> dict[str, Any]:
    """The committed build of TerrapinRewards (gateway/contracts/build/TerrapinRewards.json)."""
    path = BUILD_DIR / "TerrapinRewards.json"
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ChainError(f"no TerrapinRewards build artifact at {path}") from exc


def rewards_contract(w3: Web3, address: str, artifact: dict | None = None) -> Contract:
    abi = (artifact or rewards_artifact())["abi"]
    return w3.eth.contract(address=Web3.to_checksum_address(address), abi=abi)


def binding_contract(w3: Web3, address: str) -> Contract:
    """The registry (or any BoardBinding) seen through the binding part of its ABI."""
    return w3.eth.contract(address=Web3.to_checksum_address(address), abi=BINDING_ABI)


def deploy_rewards(
    w3: Web3,
    deployer: LocalAccount,
    *,
    admin: str,
    oracle: str | None = None,
    epoch_seconds: int = EPOCH_SECONDS,
    epoch_cap: int = DEFAULT_BUDGET,
    shared_admin: bool = False,
    artifact: dict | None = None,
) -> Contract:
    """Deploy TerrapinRewards. `oracle` (default: the deployer) publishes roots; `admin`
    (required, a different key unless `shared_admin`) sets the per-epoch mint cap
    `epoch_cap`, pauses, replaces an unclaimed root and manages roles. `epoch_seconds`
    must be the rewards rule's, so the contract refuses epochs that have not started."""
    oracle = Web3.to_checksum_address(oracle or deployer.address)
    admin = Web3.to_checksum_address(admin)
    if admin == oracle and not shared_admin:
        raise ChainError(
            f"the rewards admin and oracle are the same key ({admin})",
            hint="keep the admin key cold and apart from the gateway's hot oracle key "
            "(docs/REWARDS.md)",
        )
    artifact = artifact or rewards_artifact()
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    data = factory.constructor(
        TOKEN_NAME, TOKEN_SYMBOL, admin, oracle, epoch_seconds, epoch_cap
    ).data_in_transaction
    receipt = transact(w3, deployer, {"data": data, "gas": 3_000_000})
    return rewards_contract(w3, receipt["contractAddress"], artifact)


def revert_reason(exc: Exception, abi: list[dict[str, Any]]) -> str:
    """A failed call's custom error by name (e.g. `NothingToClaim(5, 5)`), else the message."""
    data = getattr(exc, "data", None)
    raw: bytes | None = None
    if isinstance(data, str) and data.startswith("0x"):
        raw = bytes.fromhex(data[2:])
    elif "execution reverted: b" in str(exc):  # eth-tester: the bytes' repr in the message
        try:
            raw = ast.literal_eval(str(exc).split("execution reverted: ", 1)[1])
        except (ValueError, SyntaxError):
            raw = None
    if isinstance(raw, bytes) and len(raw) >= 4:
        for entry in abi:
            if entry.get("type") != "error":
                continue
            types = [i["type"] for i in entry["inputs"]]
            if Web3.keccak(text=f"{entry['name']}({','.join(types)})")[:4] == raw[:4]:
                try:
                    args = abi_decode(types, raw[4:])
                except Exception:
                    return entry["name"]
                return f"{entry['name']}({', '.join(str(a) for a in args)})"
    return str(exc)


def _send(w3: Web3, account: LocalAccount, call: Any) -> Any:
    return transact(w3, account, {"to": call.address, "data": call._encode_transaction_data()})


def _carry_forward(w3: Web3, oracle: LocalAccount, contract: Contract, epoch: int) -> None:
    """Epochs go up by exactly one on chain, and the stage settles only epochs with
    readings: publish the latest root again (nothing new to mint) for each epoch
    skipped since, so that `epoch` is the next one."""
    if contract.functions.merkleRoot().call() == bytes(32):
        return  # the first publication may name any started epoch
    latest = int(contract.functions.epoch().call())
    if latest + 1 >= epoch:
        return
    root = bytes(contract.functions.merkleRoot().call())
    total = int(contract.functions.cumulativeTotal().call())
    for skipped in range(latest + 1, epoch):  # no manifest: nothing was anchored then
        _send(w3, oracle, contract.functions.publishRoot(skipped, root, total, bytes(32)))


def publish_root(
    w3: Web3,
    oracle: LocalAccount,
    contract: Contract,
    dist: Distribution,
    manifest_hash: bytes = bytes(32),
) -> Any:
    """Set the distribution's root for its epoch (oracle role only) with the hash of the
    epoch's manifest (manifest.manifest_hash), after carrying the latest root over any
    skipped epoch. Returns the receipt."""
    call = contract.functions.publishRoot(dist.epoch, dist.root, dist.total, manifest_hash)
    for attempt in (1, 2):
        try:
            call.call({"from": oracle.address})  # a revert reason before spending gas
            break
        except Exception as exc:
            reason = revert_reason(exc, contract.abi)
            if attempt == 2 or not reason.startswith("EpochNotNext"):
                raise ChainError(f"publishing epoch {dist.epoch} would revert: {reason}") from exc
            _carry_forward(w3, oracle, contract, dist.epoch)
    return _send(w3, oracle, call)


def claim_args(dist: Distribution, owner: str) -> tuple[str, int, list[bytes]]:
    owner = normalise_address(owner)
    entry = dist.claims.get(owner)
    if entry is None:
        raise ChainError(f"{owner} has nothing in the distribution of epoch {dist.epoch}")
    return Web3.to_checksum_address(owner), entry.amount, entry.proof


def claim(
    w3: Web3, sender: LocalAccount, contract: Contract, dist: Distribution, owner: str
) -> Any:
    """Claim `owner`'s cumulative amount (tokens go to `owner`, whoever `sender` is)."""
    call = contract.functions.claim(*claim_args(dist, owner))
    try:
        call.call({"from": sender.address})
    except Exception as exc:
        reason = revert_reason(exc, contract.abi)
        raise ChainError(f"the claim for {owner} would revert: {reason}") from exc
    return _send(w3, sender, call)


def bind_board(
    w3: Web3, sender: LocalAccount, registry: Contract, board: str, owner: str, signature: bytes
) -> Any:
    call = registry.functions.bindBoard(
        Web3.to_checksum_address(board), Web3.to_checksum_address(owner), signature
    )
    try:
        call.call({"from": sender.address})
    except Exception as exc:
        reason = revert_reason(exc, registry.abi)
        raise ChainError(f"binding board {board} would revert: {reason}") from exc
    return _send(w3, sender, call)


def binding_events(
    w3: Web3, registry: Contract, from_block: int = 0
) -> list[tuple[int, int, bytes, bytes, int]]:
    """Every BoardBound event as (block, log index, board, owner, timestamp), in chain order."""
    contract = binding_contract(w3, registry.address)
    logs = contract.events.BoardBound().get_logs(from_block=from_block)
    times: dict[int, int] = {}
    out = []
    for log in sorted(logs, key=lambda entry: (entry["blockNumber"], entry["logIndex"])):
        number = log["blockNumber"]
        if number not in times:
            times[number] = int(w3.eth.get_block(number)["timestamp"])
        board = bytes.fromhex(log["args"]["board"][2:])
        owner = bytes.fromhex(log["args"]["owner"][2:])
        out.append((number, int(log["logIndex"]), board, owner, times[number]))
    return out


def bindings(w3: Web3, registry: Contract, from_block: int = 0) -> list[tuple[str, str, int]]:
    """Every BoardBound event as (board, owner, block timestamp): input of rewards.owners_at."""
    return [
        ("0x" + board.hex(), "0x" + owner.hex(), ts)
        for _n, _i, board, owner, ts in binding_events(w3, registry, from_block)
    ]


def owner_view(contract: Contract, dist: Distribution | None, owner: str) -> dict[str, Any]:
    """One owner's rewards for the status API: earned, claimed, claimable, and the proof."""
    owner = normalise_address(owner)
    checksum = Web3.to_checksum_address(owner)
    claimed = int(contract.functions.claimed(checksum).call())
    view: dict[str, Any] = {
        "owner": owner,
        "balance": str(contract.functions.balanceOf(checksum).call()),
        "claimed": str(claimed),
        "published_epoch": None,
        "cumulative": "0",
        "epoch_amount": "0",
        "claimable": "0",
        "proof": [],
    }
    if contract.functions.merkleRoot().call() != b"\0" * 32:
        view["published_epoch"] = int(contract.functions.epoch().call())
    if dist is not None and owner in dist.claims:
        entry = dist.claims[owner]
        view |= {
            "epoch": dist.epoch,
            "cumulative": str(entry.amount),
            "epoch_amount": str(dist.epoch_amounts.get(owner, 0)),
            "proof": ["0x" + p.hex() for p in entry.proof],
        }
        if view["published_epoch"] == dist.epoch:
            view["claimable"] = str(max(entry.amount - claimed, 0))
    return view


def gas_used(receipts: Iterable[Any]) -> list[int]:
    return [int(r["gasUsed"]) for r in receipts]


def gas_figures(owners: int = 1000) -> dict[str, int]:
    """Gas of publishing an epoch root and of claims, measured on a fresh embedded chain.

    The distribution has `owners` leaves (the claim's proof has ~log2(owners) hashes).
    gas_per_epoch_root is a later epoch's publication (the first one writes fresh
    storage slots and costs more: gas_first_epoch_root; so does the second, whose
    previous total and supply snapshot become non-zero: gas_second_epoch_root);
    gas_per_claim is an owner's
    first claim (fresh balance and claimed slots), gas_per_repeat_claim a later one.
    """
    from eth_account import Account
    from eth_tester import EthereumTester, PyEVMBackend
    from web3 import EthereumTesterProvider

    from terrapin.gateway.rewards import distribution

    w3 = Web3(EthereumTesterProvider(EthereumTester(PyEVMBackend())))
    oracle = Account.create()
    tx = w3.eth.send_transaction(
        {"from": w3.eth.accounts[0], "to": oracle.address, "value": 10**21}
    )
    w3.eth.wait_for_transaction_receipt(tx)
    contract = deploy_rewards(w3, oracle, admin=Account.create().address)
    addresses = ["0x" + (i + 1).to_bytes(20, "big").hex() for i in range(max(owners, 1))]
    first = distribution.build(1, {a: 10**18 for a in addresses})
    second = distribution.build(2, {a: 2 * 10**18 for a in addresses})
    manifest = bytes(range(1, 33))  # a manifest hash: 32 non-zero bytes, as in practice
    root1 = publish_root(w3, oracle, contract, first, manifest)
    claim1 = claim(w3, oracle, contract, first, addresses[0])
    root2 = publish_root(w3, oracle, contract, second, manifest)
    claim2 = claim(w3, oracle, contract, second, addresses[0])
    third = distribution.build(3, {a: 3 * 10**18 for a in addresses})
    root3 = publish_root(w3, oracle, contract, third, manifest)
    return {
        "gas_per_epoch_root": int(root3["gasUsed"]),
        "gas_second_epoch_root": int(root2["gasUsed"]),
        "gas_first_epoch_root": int(root1["gasUsed"]),
        "gas_per_claim": int(claim1["gasUsed"]),
        "gas_per_repeat_claim": int(claim2["gasUsed"]),
        "claim_proof_hashes": len(first.claims[addresses[0]].proof),
        "owners": len(addresses),
    }
