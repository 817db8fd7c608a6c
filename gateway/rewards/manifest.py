"""The epoch manifest: everything a stranger needs to recompute one epoch's rewards.

A deterministic JSON file (kind "terrapin-rewards-manifest", version 1) per settled
epoch: the rule's version and parameters (the flag parameters too), the chain and
contracts it refers to, the cut-off block, every batch anchored in the epoch with all
its readings (the batch leaves, each with its signed envelope, flags and the reason it
was not counted), the equivocation evidence held at the cut-off, the BoardBound events
used (block, log index), per-board figures, per-owner amounts, the previous and the new
cumulative amounts and the tree. keccak256 of its bytes is published with the root
(TerrapinRewards.publishRoot). docs/REWARDS.md describes each field; `recompute.py`
derives every figure from the inputs; `to_bytes` is the one serialisation.

This module is the format only (parse, serialise, hash): strict on input, typed errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from terrapin.gateway.chain.merkle import keccak256
from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.rewards.flags import FlagParams, FlagParamsError

KIND = "terrapin-rewards-manifest"
VERSION = 1
RULE_VERSION = 2  # 2: flags recomputed from public facts (issue 19); 1: stored flags
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
REASONS = (None, "flagged", "duplicate")
_UINT256_MAX = (1 << 256) - 1
_UINT64_MAX = (1 << 64) - 1  # seq, block numbers, times, batch ids, counts


class ManifestError(TerrapinError, ValueError):
    """A manifest that is not well formed (the field named)."""


@dataclass(frozen=True)
class Rule:
    epoch_seconds: int
    budget: int
    cap: int
    flags: FlagParams = field(default_factory=FlagParams)
    version: int = RULE_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "epoch_seconds": self.epoch_seconds,
            "budget": str(self.budget),
            "cap": self.cap,
            "flags": self.flags.to_json(),
        }


@dataclass(frozen=True)
class ChainRef:
    chain_id: int
    anchor: bytes
    binding: bytes
    rewards: bytes | None
    from_block: int
    gateways: tuple[bytes, ...]


@dataclass
class Leaf:
    """One reading of a batch: the leaf (board, seq, digest), its envelope, what it counts."""

    board: bytes
    seq: int
    digest: bytes
    envelope: bytes
    flags: int = 0
    reason: str | None = None


@dataclass
class Batch:
    gateway: bytes
    id: int
    tx: bytes
    block: int
    timestamp: int
    root: bytes
    count: int
    readings: list[Leaf]


@dataclass(frozen=True)
class Evidence:
    board: bytes
    seq: int
    envelope: bytes


@dataclass(frozen=True)
class Binding:
    block: int
    log_index: int
    board: bytes
    owner: bytes
    timestamp: int


@dataclass
class BoardFigures:
    owner: bytes | None
    readings: int  # every listed reading of the board in the epoch, flagged or not
    flagged: int  # readings with flags != 0
    duplicates: int  # the same (board, seq) listed again
    counted: int  # readings - flagged - duplicates
    weight: int  # min(counted, cap)
    amount: int  # floor(budget * weight / W)


@dataclass
class Manifest:
    epoch: int
    rule: Rule
    chain: ChainRef
    cutoff_block: int
    cutoff_timestamp: int
    batches: list[Batch]
    equivocations: list[Evidence]
    bindings: list[Binding]
    # Derived (recompute.py fills them when building; a verifier compares them):
    boards: dict[bytes, BoardFigures] = field(default_factory=dict)
    epoch_amounts: dict[bytes, int] = field(default_factory=dict)
    unowned: int = 0
    remainder: int = 0
    previous_root: bytes | None = None
    previous: dict[bytes, int] = field(default_factory=dict)
    cumulative: dict[bytes, int] = field(default_factory=dict)
    total: int = 0
    root: bytes | None = None
    tree: list[bytes] = field(default_factory=list)


def _hex(b: bytes | None) -> str | None:
    return None if b is None else "0x" + bytes(b).hex()


def to_json(m: Manifest) -> dict[str, Any]:
    c = m.chain
    return {
        "kind": KIND,
        "version": VERSION,
        "epoch": m.epoch,
        "rule": m.rule.to_json(),
        "chain": {
            "chain_id": c.chain_id,
            "anchor": _hex(c.anchor),
            "binding": _hex(c.binding),
            "rewards": _hex(c.rewards),
            "from_block": c.from_block,
            "gateways": [_hex(g) for g in c.gateways],
        },
        "cutoff": {"block": m.cutoff_block, "timestamp": m.cutoff_timestamp},
        "batches": [
            {
                "gateway": _hex(b.gateway),
                "id": b.id,
                "tx": _hex(b.tx),
                "block": b.block,
                "timestamp": b.timestamp,
                "root": _hex(b.root),
                "count": b.count,
                "readings": [
                    {
                        "board": _hex(r.board),
                        "seq": r.seq,
                        "digest": _hex(r.digest),
                        "envelope": _hex(r.envelope),
                        "flags": r.flags,
                        "reason": r.reason,
                    }
                    for r in b.readings
                ],
            }
            for b in m.batches
        ],
        "equivocations": [
            {"board": _hex(e.board), "seq": e.seq, "envelope": _hex(e.envelope)}
            for e in m.equivocations
        ],
        "bindings": [
            {
                "block": b.block,
                "log_index": b.log_index,
                "board": _hex(b.board),
                "owner": _hex(b.owner),
                "timestamp": b.timestamp,
            }
            for b in m.bindings
        ],
        "boards": {
            _hex(b): {
                "owner": _hex(f.owner),
                "readings": f.readings,
                "flagged": f.flagged,
                "duplicates": f.duplicates,
                "counted": f.counted,
                "weight": f.weight,
                "amount": str(f.amount),
            }
            for b, f in sorted(m.boards.items())
        },
        "epoch_amounts": {_hex(o): str(a) for o, a in sorted(m.epoch_amounts.items())},
        "unowned": str(m.unowned),
        "remainder": str(m.remainder),
        "previous": {
            "root": _hex(m.previous_root),
            "cumulative": {_hex(o): str(a) for o, a in sorted(m.previous.items())},
        },
        "cumulative": {_hex(o): str(a) for o, a in sorted(m.cumulative.items())},
        "total": str(m.total),
        "root": _hex(m.root),
        "tree": {"leaf_encoding": ["address", "uint256"], "nodes": [_hex(n) for n in m.tree]},
    }


def to_bytes(m: Manifest) -> bytes:
    """The one serialisation: the bytes whose keccak256 goes on chain."""
    return (json.dumps(to_json(m), indent=1, ensure_ascii=True) + "\n").encode()


def manifest_hash(data: bytes) -> bytes:
    return keccak256(data)


# -- parsing -------------------------------------------------------------------------
def _obj(doc: Any, keys: set[str], where: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ManifestError(f"{where}: must be an object")
    if set(doc) != keys:
        missing, extra = sorted(keys - set(doc)), sorted(set(doc) - keys)
        raise ManifestError(f"{where}: missing {missing}, unknown {extra}")
    return doc


def _int(v: Any, where: str, lo: int = 0, hi: int = _UINT64_MAX) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ManifestError(f"{where}: must be an integer in [{lo}, {hi}]")
    return v


def _amount(v: Any, where: str) -> int:
    if not isinstance(v, str) or not v.isdigit() or (len(v) > 1 and v[0] == "0"):
        raise ManifestError(f"{where}: must be a decimal string without leading zeros")
    if int(v) > _UINT256_MAX:
        raise ManifestError(f"{where}: does not fit uint256")
    return int(v)


def _bytes(v: Any, where: str, size: int | None = None, optional: bool = False) -> Any:
    if v is None and optional:
        return None
    if not isinstance(v, str) or not v.startswith("0x") or v != v.lower():
        raise ManifestError(f"{where}: must be 0x and lowercase hex")
    try:
        raw = bytes.fromhex(v[2:])
    except ValueError:
        raise ManifestError(f"{where}: is not hex") from None
    if size is not None and len(raw) != size:
        raise ManifestError(f"{where}: must be {size} bytes")
    return raw


def _amounts(doc: Any, where: str) -> dict[bytes, int]:
    if not isinstance(doc, dict):
        raise ManifestError(f"{where}: must be an object")
    return {_bytes(o, f"{where} key", 20): _amount(a, f"{where}[{o}]") for o, a in doc.items()}


def _leaf(doc: Any, where: str) -> Leaf:
    d = _obj(doc, {"board", "seq", "digest", "envelope", "flags", "reason"}, where)
    if d["reason"] not in REASONS:
        raise ManifestError(f"{where}.reason: must be null, 'flagged' or 'duplicate'")
    return Leaf(
        _bytes(d["board"], f"{where}.board", 20),
        _int(d["seq"], f"{where}.seq"),
        _bytes(d["digest"], f"{where}.digest", 32),
        _bytes(d["envelope"], f"{where}.envelope"),
        _int(d["flags"], f"{where}.flags"),
        d["reason"],
    )


def _batch(doc: Any, where: str) -> Batch:
    keys = {"gateway", "id", "tx", "block", "timestamp", "root", "count", "readings"}
    d = _obj(doc, keys, where)
    if not isinstance(d["readings"], list):
        raise ManifestError(f"{where}.readings: must be a list")
    return Batch(
        _bytes(d["gateway"], f"{where}.gateway", 20),
        _int(d["id"], f"{where}.id"),
        _bytes(d["tx"], f"{where}.tx", 32),
        _int(d["block"], f"{where}.block"),
        _int(d["timestamp"], f"{where}.timestamp"),
        _bytes(d["root"], f"{where}.root", 32),
        _int(d["count"], f"{where}.count", 1),
        [_leaf(r, f"{where}.readings[{i}]") for i, r in enumerate(d["readings"])],
    )


def _board(doc: Any, where: str) -> BoardFigures:
    keys = {"owner", "readings", "flagged", "duplicates", "counted", "weight", "amount"}
    d = _obj(doc, keys, where)
    return BoardFigures(
        _bytes(d["owner"], f"{where}.owner", 20, optional=True),
        *(_int(d[k], f"{where}.{k}") for k in ("readings", "flagged", "duplicates")),
        _int(d["counted"], f"{where}.counted"),
        _int(d["weight"], f"{where}.weight"),
        _amount(d["amount"], f"{where}.amount"),
    )


def _list(doc: Any, where: str) -> list:
    if not isinstance(doc, list):
        raise ManifestError(f"{where}: must be a list")
    return doc


def from_json(doc: Any) -> Manifest:
    """Parse a manifest strictly (every field typed and bounded); derived values are read
    as listed, to be compared with a recomputation (recompute.compare)."""
    top = {
        "kind", "version", "epoch", "rule", "chain", "cutoff", "batches", "equivocations",
        "bindings", "boards", "epoch_amounts", "unowned", "remainder", "previous",
        "cumulative", "total", "root", "tree",
    }  # fmt: skip
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise ManifestError("not a Terrapin rewards manifest (kind)")
    if doc.get("version") != VERSION:
        raise ManifestError(f"unsupported manifest version {doc.get('version')!r}")
    d = _obj(doc, top, "manifest")
    r = _obj(d["rule"], {"version", "epoch_seconds", "budget", "cap", "flags"}, "rule")
    if r["version"] != RULE_VERSION:
        raise ManifestError(f"rule.version: this verifier knows rule {RULE_VERSION} only")
    try:
        flag_params = FlagParams.from_json(r["flags"])
    except FlagParamsError as exc:
        raise ManifestError(str(exc)) from None
    rule = Rule(
        _int(r["epoch_seconds"], "rule.epoch_seconds", 1),
        _amount(r["budget"], "rule.budget"),
        _int(r["cap"], "rule.cap", 1),
        flag_params,
    )
    keys = {"chain_id", "anchor", "binding", "rewards", "from_block", "gateways"}
    c = _obj(d["chain"], keys, "chain")
    chain = ChainRef(
        _int(c["chain_id"], "chain.chain_id", 1),
        _bytes(c["anchor"], "chain.anchor", 20),
        _bytes(c["binding"], "chain.binding", 20),
        _bytes(c["rewards"], "chain.rewards", 20, optional=True),
        _int(c["from_block"], "chain.from_block"),
        tuple(_bytes(g, "chain.gateways[]", 20) for g in _list(c["gateways"], "chain.gateways")),
    )
    cut = _obj(d["cutoff"], {"block", "timestamp"}, "cutoff")
    evidence = [
        _obj(e, {"board", "seq", "envelope"}, f"equivocations[{i}]")
        for i, e in enumerate(_list(d["equivocations"], "equivocations"))
    ]
    bindings = [
        _obj(b, {"block", "log_index", "board", "owner", "timestamp"}, f"bindings[{i}]")
        for i, b in enumerate(_list(d["bindings"], "bindings"))
    ]
    if not isinstance(d["boards"], dict):
        raise ManifestError("boards: must be an object")
    prev = _obj(d["previous"], {"root", "cumulative"}, "previous")
    tree = _obj(d["tree"], {"leaf_encoding", "nodes"}, "tree")
    if tree["leaf_encoding"] != ["address", "uint256"]:
        raise ManifestError("tree.leaf_encoding: must be [address, uint256]")
    return Manifest(
        epoch=_int(d["epoch"], "epoch"),
        rule=rule,
        chain=chain,
        cutoff_block=_int(cut["block"], "cutoff.block"),
        cutoff_timestamp=_int(cut["timestamp"], "cutoff.timestamp"),
        batches=[_batch(b, f"batches[{i}]") for i, b in enumerate(_list(d["batches"], "batches"))],
        equivocations=[
            Evidence(
                _bytes(e["board"], f"equivocations[{i}].board", 20),
                _int(e["seq"], f"equivocations[{i}].seq"),
                _bytes(e["envelope"], f"equivocations[{i}].envelope"),
            )
            for i, e in enumerate(evidence)
        ],
        bindings=[
            Binding(
                _int(b["block"], f"bindings[{i}].block"),
                _int(b["log_index"], f"bindings[{i}].log_index"),
                _bytes(b["board"], f"bindings[{i}].board", 20),
                _bytes(b["owner"], f"bindings[{i}].owner", 20),
                _int(b["timestamp"], f"bindings[{i}].timestamp"),
            )
            for i, b in enumerate(bindings)
        ],
        boards={
            _bytes(b, "boards key", 20): _board(f, f"boards[{b}]") for b, f in d["boards"].items()
        },
        epoch_amounts=_amounts(d["epoch_amounts"], "epoch_amounts"),
        unowned=_amount(d["unowned"], "unowned"),
        remainder=_amount(d["remainder"], "remainder"),
        previous_root=_bytes(prev["root"], "previous.root", 32, optional=True),
        previous=_amounts(prev["cumulative"], "previous.cumulative"),
        cumulative=_amounts(d["cumulative"], "cumulative"),
        total=_amount(d["total"], "total"),
        root=_bytes(d["root"], "root", 32, optional=True),
        tree=[_bytes(n, "tree.nodes[]", 32) for n in _list(tree["nodes"], "tree.nodes")],
    )


def loads(data: bytes) -> Manifest:
    """Parse manifest bytes (size-capped JSON)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"not JSON: {exc}") from None
    return from_json(doc)
