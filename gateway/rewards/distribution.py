"""The cumulative reward distribution: a Merkle tree of (owner, cumulative amount) and its file.

A leaf is the OpenZeppelin StandardMerkleTree encoding of (address owner,
uint256 cumulativeAmount): keccak256(keccak256(abi.encode(owner, amount))),
which TerrapinRewards.claim() recomputes. The tree layout (sorted leaves,
sorted pairs) is the chain stage's (gateway/chain/merkle.py), so the root
and proofs equal @openzeppelin/merkle-tree's.

The distribution file (JSON, version 1) is what an owner needs to claim and
what an auditor compares with a recomputation:

    {"version": 1, "kind": "terrapin-rewards-distribution",
     "epoch": E, "root": "0x..", "total": "<sum of cumulative amounts>",
     "leaf_encoding": ["address", "uint256"],
     "rule": {"epoch_seconds": 86400, "budget": "<base units>", "cap": 1440},
     "chain_id": 31337 | null, "contract": "0x.." | null,
     "epoch_amounts": {"0xowner": "<earned in epoch E>"},
     "claims": {"0xowner": {"amount": "<cumulative>", "proof": ["0x..", ...]}}}

Amounts are decimal strings (uint256 does not fit a JSON number everywhere).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from terrapin.gateway.chain.merkle import build_from_leaves, keccak256, process_proof
from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.rewards.rule import RewardsError, normalise_address

VERSION = 1
KIND = "terrapin-rewards-distribution"
LEAF_ENCODING = ("address", "uint256")
MAX_FILE_BYTES = 64 * 1024 * 1024
_UINT256_MAX = (1 << 256) - 1


class DistributionError(TerrapinError, ValueError):
    """A distribution that cannot be built, or a file that is not a valid distribution."""


def encode_leaf(owner: str, cumulative_amount: int) -> bytes:
    """abi.encode(address, uint256): two 32-byte words."""
    if not 0 <= cumulative_amount <= _UINT256_MAX:
        raise DistributionError(f"amount {cumulative_amount} does not fit uint256")
    try:
        raw = bytes.fromhex(normalise_address(owner)[2:])
    except RewardsError as exc:
        raise DistributionError(str(exc)) from exc
    return bytes(12) + raw + cumulative_amount.to_bytes(32, "big")


def leaf_hash(owner: str, cumulative_amount: int) -> bytes:
    return keccak256(keccak256(encode_leaf(owner, cumulative_amount)))


@dataclass
class Claim:
    amount: int  # cumulative
    proof: list[bytes]


@dataclass
class Distribution:
    epoch: int
    root: bytes
    total: int
    claims: dict[str, Claim]
    epoch_amounts: dict[str, int] = field(default_factory=dict)
    rule: dict = field(default_factory=dict)
    chain_id: int | None = None
    contract: str | None = None

    def verify(self, owner: str) -> bool:
        """The owner's proof leads to the root (what the contract checks)."""
        claim = self.claims.get(normalise_address(owner))
        if claim is None:
            return False
        return process_proof(leaf_hash(owner, claim.amount), claim.proof) == self.root

    def to_json(self) -> dict:
        return {
            "version": VERSION,
            "kind": KIND,
            "epoch": self.epoch,
            "root": "0x" + self.root.hex(),
            "total": str(self.total),
            "leaf_encoding": list(LEAF_ENCODING),
            "rule": self.rule,
            "chain_id": self.chain_id,
            "contract": self.contract,
            "epoch_amounts": {o: str(a) for o, a in sorted(self.epoch_amounts.items())},
            "claims": {
                o: {"amount": str(c.amount), "proof": ["0x" + p.hex() for p in c.proof]}
                for o, c in sorted(self.claims.items())
            },
        }


def build(
    epoch: int,
    cumulative: Mapping[str, int],
    *,
    epoch_amounts: Mapping[str, int] | None = None,
    rule: dict | None = None,
    chain_id: int | None = None,
    contract: str | None = None,
) -> Distribution:
    """The tree over every owner with a cumulative amount > 0."""
    owners = {normalise_address(o): int(a) for o, a in cumulative.items() if a > 0}
    if not owners:
        raise DistributionError(f"nobody has earned anything through epoch {epoch}")
    order = sorted(owners)
    tree = build_from_leaves([leaf_hash(o, owners[o]) for o in order])
    claims = {o: Claim(owners[o], tree.proof(i)) for i, o in enumerate(order)}
    return Distribution(
        epoch=epoch,
        root=tree.root,
        total=sum(owners.values()),
        claims=claims,
        epoch_amounts={normalise_address(o): a for o, a in (epoch_amounts or {}).items()},
        rule=dict(rule or {}),
        chain_id=chain_id,
        contract=None if contract is None else normalise_address(contract),
    )


def write(distribution: Distribution, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(distribution.to_json(), indent=2) + "\n")
    tmp.replace(path)
    return path


def _hex32(text: object, what: str) -> bytes:
    if not isinstance(text, str) or not text.startswith("0x") or len(text) != 66:
        raise DistributionError(f"{what} must be 0x and 64 hex digits")
    try:
        return bytes.fromhex(text[2:])
    except ValueError as exc:
        raise DistributionError(f"{what} is not hex") from exc


def _amount(text: object, what: str) -> int:
    if not isinstance(text, str) or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        raise DistributionError(f"{what} must be a decimal string without leading zeros")
    value = int(text)
    if value > _UINT256_MAX:
        raise DistributionError(f"{what} does not fit uint256")
    return value


def from_json(doc: object) -> Distribution:
    """Parse and check a distribution: version, fields, every proof against the root, the total."""
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise DistributionError("not a Terrapin rewards distribution")
    if doc.get("version") != VERSION:
        raise DistributionError(f"unsupported distribution version {doc.get('version')!r}")
    if doc.get("leaf_encoding") != list(LEAF_ENCODING):
        raise DistributionError("leaf encoding must be [address, uint256]")
    epoch = doc.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise DistributionError("epoch must be an integer >= 0")
    claims_doc = doc.get("claims")
    if not isinstance(claims_doc, dict) or not claims_doc:
        raise DistributionError("claims must be a non-empty object")
    try:
        claims = {}
        for owner, c in claims_doc.items():
            if not isinstance(c, dict) or not isinstance(c.get("proof"), list):
                raise DistributionError(f"claim of {owner} must have amount and proof")
            claims[normalise_address(owner)] = Claim(
                _amount(c.get("amount"), f"amount of {owner}"),
                [_hex32(p, f"proof element of {owner}") for p in c["proof"]],
            )
        amounts = doc.get("epoch_amounts", {})
        if not isinstance(amounts, dict):
            raise DistributionError("epoch_amounts must be an object")
        epoch_amounts = {
            normalise_address(o): _amount(a, f"epoch amount of {o}") for o, a in amounts.items()
        }
        contract = doc.get("contract")
        dist = Distribution(
            epoch=epoch,
            root=_hex32(doc.get("root"), "root"),
            total=_amount(doc.get("total"), "total"),
            claims=claims,
            epoch_amounts=epoch_amounts,
            rule=doc.get("rule") or {},
            chain_id=doc.get("chain_id"),
            contract=None if contract is None else normalise_address(contract),
        )
    except RewardsError as exc:
        raise DistributionError(str(exc)) from exc
    if dist.total != sum(c.amount for c in claims.values()):
        raise DistributionError("total is not the sum of the cumulative amounts")
    for owner in claims:
        if not dist.verify(owner):
            raise DistributionError(f"proof of {owner} does not lead to the root")
    return dist


def load(path: Path) -> Distribution:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise DistributionError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise DistributionError(f"cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise DistributionError(f"{path} is not JSON: {exc}") from exc
    return from_json(doc)
