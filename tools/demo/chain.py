"""The demo's chain: contracts deployed, boards bound, batches anchored, an epoch settled.

Embedded (default): eth-tester + py-evm inside the demo process; `Chain.connect`
deploys the registry and the anchor and funds a throw-away gateway key.
`--rpc URL`: the same contracts are deployed on that node with the key in
`$VAR` (`--key-env VAR`), so every bundle can be checked there after the demo.
In both cases the reward token (TerrapinRewards) is deployed next to them, the
gateway key is the oracle, and every transaction's gas is tallied by purpose.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from terrapin.gateway.errors import TerrapinError

ANVIL_HINT = (
    "start a node first, e.g. node_modules/.bin/anvil --port 8545, and put a funded key in "
    "the variable (anvil's first account: "
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80)"
)
OWNER_GAS_MONEY = 10**17  # wei sent to the claiming owner so it pays for its own claim


@dataclass
class DemoChain:
    chain: Any  # terrapin.gateway.chain.node.Chain
    token: Any  # TerrapinRewards contract
    binding: Any  # the registry seen through its BoardBinding ABI
    rpc: str | None
    from_block: int
    section: dict[str, Any]
    gas: dict[str, int] = field(default_factory=dict)

    @property
    def w3(self) -> Web3:
        return self.chain.w3

    @property
    def label(self) -> str:
        return self.rpc or "embedded (eth-tester + py-evm, in this process)"

    def tally(self, purpose: str, receipt: Any) -> Any:
        self.gas[purpose] = self.gas.get(purpose, 0) + int(receipt["gasUsed"])
        return receipt

    def info(self) -> dict[str, Any]:
        return {
            "network": self.rpc or "embedded",
            "chain_id": self.chain.chain_id,
            "registry": self.chain.registry.address,
            "anchor": self.chain.anchor.address,
            "rewards": self.token.address,
            "gateway": self.chain.address,
        }


def start_chain(rpc: str | None, key_env: str) -> DemoChain:
    """Connect (or start the embedded chain), deploy every contract, return the handles."""
    from terrapin.gateway.chain.node import Chain, ChainConfig, deploy, grant_gateway, rpc_web3
    from terrapin.gateway.rewards import onchain as rewards_chain
    from terrapin.gateway.rewards import tables as rewards_store

    section: dict[str, Any] = {"confirmations": 1, "batch_size": 1000, "batch_seconds": 5.0}
    if rpc is None:
        chain = Chain.connect(ChainConfig.from_mapping(section))
        from_block = 0
    else:
        key = os.environ.get(key_env, "").strip()
        if not key:
            raise TerrapinError(f"--rpc needs the gateway's key in ${key_env}", hint=ANVIL_HINT)
        try:
            account = Account.from_key(key)
        except (ValueError, TypeError):
            raise TerrapinError(f"${key_env} is not a 32-byte hex private key") from None
        w3 = rpc_web3(rpc, timeout=10)
        try:
            from_block = w3.eth.block_number
        except Exception as exc:
            raise TerrapinError(
                f"cannot reach the JSON-RPC node at {rpc}: {type(exc).__name__}",
                hint=ANVIL_HINT,
            ) from None
        if w3.eth.get_balance(account.address) == 0:
            raise TerrapinError(f"the key in ${key_env} ({account.address}) has no funds on {rpc}")
        registry, anchor = deploy(w3, account)
        grant_gateway(w3, account, registry, account.address)
        section |= {
            "network": rpc,
            "key_env": key_env,
            "registry": registry.address,
            "anchor": anchor.address,
            "poll_seconds": 0.2,
        }
        chain = Chain.connect(ChainConfig.from_mapping(section))
    params = rewards_store.Params()  # the rule the demo settles with
    token = rewards_chain.deploy_rewards(
        chain.w3,
        chain.account,
        admin=Account.create().address,  # apart from the oracle; unused in the demo
        epoch_seconds=params.epoch_seconds,
        epoch_cap=params.budget,
    )
    binding = rewards_chain.binding_contract(chain.w3, chain.registry.address)
    return DemoChain(chain, token, binding, rpc, from_block, section)


def submitter(dc: DemoChain):
    """(read_nonce, submit) for tools.provision: the gateway key relays the board's
    own binding signature (anyone may; it can only bind to the owner the board signed)."""
    from terrapin.gateway.rewards import onchain as rewards_chain

    def read_nonce(addr: str) -> int:
        return dc.binding.functions.bindNonce(Web3.to_checksum_address("0x" + addr)).call()

    def submit(addr: str, binding: dict) -> dict:
        receipt = rewards_chain.bind_board(
            dc.w3,
            dc.chain.account,
            dc.binding,
            "0x" + addr,
            binding["owner"],
            bytes.fromhex(binding["signature"]),
        )
        dc.tally("bind boards", receipt)
        owner = dc.binding.functions.ownerOfBoard(Web3.to_checksum_address("0x" + addr)).call()
        if owner.lower() != binding["owner"].lower():
            raise TerrapinError(f"bindBoard was mined but board 0x{addr} is owned by {owner}")
        return {"tx": receipt["transactionHash"].to_0x_hex(), "block": receipt["blockNumber"]}

    return read_nonce, submit


def anchor_all(dc: DemoChain, db_path: Path) -> tuple[Any, Any, list[Any]]:
    """Close every waiting reading into a batch and anchor it to `confirmed`."""
    from terrapin.gateway.chain.anchorer import Anchorer
    from terrapin.gateway.chain.batcher import Batcher

    batcher = Batcher(db_path, batch_size=1000, batch_seconds=5.0)
    anchorer = Anchorer(db_path, dc.chain)
    batcher.close_due(force=True)
    batches = anchorer.anchor_pending(until="confirmed", timeout=60)
    with sqlite3.connect(db_path) as conn:
        gas = conn.execute(
            "SELECT COALESCE(SUM(gas_used), 0) FROM chain_txs WHERE gas_used IS NOT NULL "
            "AND status = 'mined'"
        ).fetchone()[0]
    dc.gas["anchor batches"] = int(gas)
    return batcher, anchorer, batches


def epoch_of_batches(dc: DemoChain, batches: list[Any], epoch_seconds: int) -> int:
    """The reward epoch of the last anchoring block (docs/REWARDS.md: block timestamps)."""
    last = max(b.block_number for b in batches if b.block_number is not None)
    return int(dc.w3.eth.get_block(last)["timestamp"]) // epoch_seconds


def settle_and_claim(
    dc: DemoChain, db_path: Path, epoch: int, out_dir: Path, claimer: LocalAccount
) -> dict[str, Any]:
    """Compute, write and publish the epoch's distribution; `claimer` claims its own
    tokens from its own key (funded for gas by the gateway key)."""
    from terrapin.gateway.chain.node import transact
    from terrapin.gateway.rewards import onchain as rewards_chain
    from terrapin.gateway.rewards import tables as rewards_store

    conn = rewards_store.connect(db_path)
    try:
        params = rewards_store.Params()
        ended = end_epoch(dc, epoch, params.epoch_seconds)
        result = rewards_store.settle_epoch(
            conn,
            dc.w3,
            dc.chain.account,
            dc.token,
            dc.binding,
            epoch,
            params,
            out_dir,
            from_block=dc.from_block,
            anchor=dc.chain.anchor.address,
        )
        manifest = verify_manifest(dc, result.manifest, epoch) if ended else None
        dist = result.distribution
        if dist is None:
            raise TerrapinError(f"epoch {epoch}: no anchored reading earned anything")
        row = conn.execute(
            "SELECT publish_tx FROM rewards_epochs WHERE epoch = ?", (epoch,)
        ).fetchone()
        dc.tally("publish epoch root", dc.w3.eth.get_transaction_receipt(bytes(row[0])))
        transact(dc.w3, dc.chain.account, {"to": claimer.address, "value": OWNER_GAS_MONEY})
        receipt = rewards_chain.claim(dc.w3, claimer, dc.token, dist, claimer.address)
        dc.tally("claim", receipt)
        owners = {
            owner: rewards_chain.owner_view(dc.token, dist, owner) for owner in sorted(dist.claims)
        }
        return {
            "epoch": epoch,
            "epoch_seconds": params.epoch_seconds,
            "root": "0x" + dist.root.hex(),
            "total": str(dist.total),
            "file": str(rewards_store.distribution_path(out_dir, epoch)),
            "manifest": str(result.manifest),
            "manifest_hash": "0x" + result.manifest_hash.hex(),
            "manifest_verified_on_chain": manifest is not None,
            "owners": owners,
            "claim": {
                "owner": claimer.address.lower(),
                "amount": owners[claimer.address.lower()]["claimed"],
                "tx": receipt["transactionHash"].to_0x_hex(),
                "ok": int(owners[claimer.address.lower()]["balance"]) > 0,
            },
            "status": rewards_store.status(conn),
        }
    finally:
        conn.close()


def end_epoch(dc: DemoChain, epoch: int, epoch_seconds: int) -> bool:
    """Move the chain's clock past the epoch's end (a block stamped after it), so the
    epoch's manifest has a cut-off no later anchor can precede (docs/REWARDS.md). The
    demo cannot wait a UTC day: the embedded chain and anvil (evm_setNextBlockTimestamp)
    skip ahead; a public chain cannot, and False says so."""
    end = (epoch + 1) * epoch_seconds
    if int(dc.w3.eth.get_block("latest")["timestamp"]) >= end:
        return True
    if dc.chain.tester is not None:
        dc.chain.tester.time_travel(end + 1)
        dc.chain.tester.mine_blocks(1)
        return True
    try:
        dc.w3.provider.make_request("evm_setNextBlockTimestamp", [end + 1])
        dc.w3.provider.make_request("evm_mine", [])
    except Exception:  # a public node: no dev methods; the epoch ends when it ends
        return False
    return int(dc.w3.eth.get_block("latest")["timestamp"]) >= end


def verify_manifest(dc: DemoChain, path: Path, epoch: int) -> dict[str, Any]:
    """`terrapin rewards verify` on the epoch's manifest, in process (the embedded chain
    lives here), against the demo's anchor; TerrapinError names the first difference."""
    from terrapin.tools.rewardsverify import run
    from terrapin.tools.verifier import Trust

    trust = Trust(anchor=bytes.fromhex(dc.chain.anchor.address[2:]))
    checks = run(path.read_bytes(), epoch, w3=dc.w3, trust=trust)
    failed = [c for c in checks.items if not c.ok]
    if failed or not checks.on_chain:
        first = failed[0] if failed else None
        raise TerrapinError(
            f"the epoch {epoch} manifest does not verify"
            + (f": {first.name}: {first.detail}" if first else "")
        )
    return {"checks": len(checks.items)}


class RewardsView:
    """The rewards part of /api/status while the demo keeps running: the latest epoch,
    every board's owner and every owner's amounts (docs/REWARDS.md, status API); and,
    as `view`, /api/rewards with what each owner has claimed on chain (the same
    answer the gateway's rewards stage gives, gateway/rewards/stage.py)."""

    def __init__(self, db_path: Path, token: Any = None):
        self.conn = sqlite3.connect(str(db_path), timeout=10, check_same_thread=False)
        self.db_path = db_path
        self.token = token

    def close(self) -> None:
        self.conn.close()

    def status(self) -> dict[str, Any]:
        from terrapin.gateway.rewards import tables as rewards_store

        try:
            return rewards_store.status(self.conn)
        except (sqlite3.Error, ValueError) as exc:
            return {"error": str(exc)}

    def view(self, owner: str | None = None) -> dict[str, Any]:
        from terrapin.gateway.rewards import onchain as rewards_chain
        from terrapin.gateway.rewards import tables as rewards_store

        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            base = rewards_store.status(conn, owner) if owner else rewards_store.overview(conn)
            dist = rewards_store.latest_distribution(conn)
        finally:
            conn.close()
        if self.token is None:
            return base | {"chain": False}
        base["contract"] = self.token.address
        keys = ("balance", "claimed", "claimable", "published_epoch")
        owners = [base["owner"]] if owner is not None else list(base["owners"])
        chain = {o: rewards_chain.owner_view(self.token, dist, o) for o in owners}
        if owner is not None:
            return base | {k: chain[base["owner"]][k] for k in keys}
        for o, entry in base["owners"].items():
            entry.update({k: chain[o][k] for k in keys})
        return base
