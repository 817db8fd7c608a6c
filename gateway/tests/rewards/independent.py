"""A second implementation of an epoch's rewards, written from docs/REWARDS.md alone
(issue 19's sign-off): it shares no code with terrapin.gateway.rewards or
terrapin.tools.rewardsverify and uses only cbor2, ecdsa, eth-hash and web3 (for the chain).

`rebuild(manifest)` takes the manifest's *inputs* (rule, chain, cut-off, the batches'
anchoring facts and signed envelopes, the equivocation evidence, the bindings, the
previous cumulative amounts) and derives everything else by the document's rule: the
flags, reasons, board figures, amounts, cumulative amounts and tree. It returns the
whole manifest rebuilt, which serialises (`dump`) to the bytes whose keccak256 the chain
holds. `chain_facts` reads what the document says the chain has, for the comparison.
Loaded by path from the tests (pytest runs with --import-mode=importlib)."""

from __future__ import annotations

import hashlib
import json
import math

import cbor2
from ecdsa import SECP256k1, VerifyingKey
from ecdsa.util import sigdecode_string
from eth_hash.auto import keccak

ZERO = "0x" + "00" * 20
FLAG_NAMES = {1: "TIME_UNSYNCED", 2: "TIME_FUTURE", 4: "TIME_OLD", 8: "UNKNOWN_UNIT"}
FLAG_NAMES |= {16: "OUT_OF_RANGE", 32: "NON_FINITE", 64: "EQUIVOCATED"}


def hx(data: bytes) -> str:
    return "0x" + data.hex()


def unhex(text: str) -> bytes:
    return bytes.fromhex(text[2:])


# --- the signed reading (docs/PROTOCOL.md, DESIGN: COSE_Sign1, ES256K, kid = address) ---


def open_envelope(envelope: bytes) -> dict:
    """board, seq, time, records and digest of a COSE_Sign1; raises if the signature is
    not the board's."""
    tag = cbor2.loads(envelope)
    if not isinstance(tag, cbor2.CBORTag) or tag.tag != 18:
        raise ValueError("not a COSE_Sign1")
    protected, unprotected, payload, signature = tag.value
    if cbor2.loads(protected) != {1: -47}:
        raise ValueError("not ES256K")
    board = unprotected[4]
    digest = hashlib.sha256(cbor2.dumps(["Signature1", protected, b"", payload])).digest()
    keys = VerifyingKey.from_public_key_recovery_with_digest(
        signature, digest, SECP256k1, sigdecode=sigdecode_string
    )
    signers = {keccak(k.to_string())[12:] for k in keys}
    if board not in signers:
        raise ValueError(f"envelope not signed by {hx(board)}")
    body = cbor2.loads(payload)
    records = [(r.get(0), r.get(1), r.get(2)) for r in body[3]]
    return {
        "board": hx(board),
        "seq": body[1],
        "time": body[2],
        "records": records,
        "digest": hx(digest),
    }


# --- OpenZeppelin StandardMerkleTree, as REWARDS.md states its layout ---


def word(value: int | bytes) -> bytes:
    return value.rjust(32, b"\0") if isinstance(value, bytes) else value.to_bytes(32, "big")


def leaf(*words: bytes) -> bytes:
    return keccak(keccak(b"".join(words)))


def tree_nodes(leaves: list[bytes]) -> list[bytes]:
    """The flat array: k-th smallest leaf at 2n-2-k, inner i = keccak(sorted children)."""
    n = len(leaves)
    nodes = [b""] * (2 * n - 1)
    for k, h in enumerate(sorted(leaves)):
        nodes[2 * n - 2 - k] = h
    for i in range(n - 2, -1, -1):
        a, b = nodes[2 * i + 1], nodes[2 * i + 2]
        nodes[i] = keccak(min(a, b) + max(a, b))
    return nodes


def reading_leaf(board: str, seq: int, digest: str) -> bytes:
    return leaf(word(unhex(board)), word(seq), unhex(digest))


def owner_leaf(owner: str, amount: int) -> bytes:
    return leaf(word(unhex(owner)), word(amount))


def cumulative_tree(cumulative: dict[str, int]) -> list[bytes]:
    return tree_nodes([owner_leaf(o, a) for o, a in cumulative.items() if a > 0])


# --- the rule (REWARDS.md "The rule", "Flags") ---


def flags_of(reading: dict, block_time: int, p: dict, evidence: dict) -> int:
    t, flags = reading["time"], 0
    if t == 0:
        flags |= 1
    elif t > block_time + p["max_clock_skew"]:
        flags |= 2
    elif t < block_time - p["max_age"] or t < p["min_time"]:
        flags |= 4
    for _name, unit, value in reading["records"]:
        known = unit in p["units"] or unit in p["ranges"]
        if not known:
            flags |= 8
        if isinstance(value, float) and not math.isfinite(value):
            flags |= 32
        elif unit in p["ranges"] and value is not None:
            lo, hi = p["ranges"][unit]
            if not lo <= value <= hi:
                flags |= 16
    if any(d != reading["digest"] for d in evidence.get((reading["board"], reading["seq"]), ())):
        flags |= 64
    return flags


def rebuild(m: dict) -> dict:
    """The manifest rebuilt from its inputs; derived fields recomputed, never copied."""
    rule, epoch = m["rule"], m["epoch"]
    end = (epoch + 1) * rule["epoch_seconds"]
    evidence: dict = {}
    for e in m["equivocations"]:
        other = open_envelope(unhex(e["envelope"]))
        if (other["board"], other["seq"]) != (e["board"], e["seq"]):
            raise ValueError(f"evidence for {e['board']} seq {e['seq']} is another reading")
        evidence.setdefault((e["board"], e["seq"]), []).append(other["digest"])

    # Readings with recomputed flags; batches rebuilt to their roots.
    batches, listings = [], []
    for b in m["batches"]:
        if b["timestamp"] // rule["epoch_seconds"] != epoch:
            raise ValueError(f"batch {b['id']} is not stamped in epoch {epoch}")
        rows = []
        for r in b["readings"]:
            opened = open_envelope(unhex(r["envelope"]))
            if (opened["board"], opened["seq"], opened["digest"]) != (
                r["board"],
                r["seq"],
                r["digest"],
            ):
                raise ValueError(f"envelope of {r['board']} seq {r['seq']} is another reading")
            flags = flags_of(opened, b["timestamp"], rule["flags"], evidence)
            row = {
                "board": r["board"],
                "seq": r["seq"],
                "digest": r["digest"],
                "envelope": r["envelope"],
                "flags": flags,
                "reason": None,
            }
            rows.append(row)
            listings.append(row)
        nodes = tree_nodes([reading_leaf(r["board"], r["seq"], r["digest"]) for r in rows])
        keep = ("gateway", "id", "tx", "block", "timestamp")
        batches.append({k: b[k] for k in keep} | {"root": hx(nodes[0]), "count": len(rows)})
        batches[-1]["readings"] = rows

    # Step 1: one listing per (board, seq) counts: lowest flags, then batch order.
    best: dict = {}
    for i, row in enumerate(listings):
        key = (row["board"], row["seq"])
        if key not in best or (row["flags"], i) < best[key]:
            best[key] = (row["flags"], i)
    for i, row in enumerate(listings):
        if best[(row["board"], row["seq"])][1] != i:
            row["reason"] = "duplicate"
        elif row["flags"]:
            row["reason"] = "flagged"

    # Step 6: owners at the epoch's end, bindings in chain order.
    owner_of: dict = {}
    for bd in m["bindings"]:
        if bd["timestamp"] < end:
            owner_of[bd["board"]] = None if bd["owner"] == ZERO else bd["owner"]
    figures: dict = {}
    for row in listings:
        f = figures.setdefault(row["board"], {"readings": 0, "flagged": 0, "duplicates": 0})
        f["readings"] += 1
        f["flagged"] += row["reason"] == "flagged"
        f["duplicates"] += row["reason"] == "duplicate"
    budget, cap = int(rule["budget"]), rule["cap"]
    for f in figures.values():
        f["counted"] = f["readings"] - f["flagged"] - f["duplicates"]
        f["weight"] = min(f["counted"], cap)
    total_weight = sum(f["weight"] for f in figures.values())
    boards, epoch_amounts, unowned, paid = {}, {}, 0, 0
    for board in sorted(figures):
        f = figures[board]
        amount = budget * f["weight"] // total_weight if total_weight else 0
        owner = owner_of.get(board)
        boards[board] = {"owner": owner} | f | {"amount": str(amount)}
        paid += amount
        if owner is None:
            unowned += amount
        elif amount:
            epoch_amounts[owner] = epoch_amounts.get(owner, 0) + amount

    previous = {o: int(a) for o, a in m["previous"]["cumulative"].items()}
    cumulative = dict(previous)
    for owner, amount in epoch_amounts.items():
        cumulative[owner] = cumulative.get(owner, 0) + amount
    cumulative = {o: a for o, a in sorted(cumulative.items()) if a > 0}
    prev_nodes = cumulative_tree(previous)
    nodes = cumulative_tree(cumulative)
    out = {k: m[k] for k in ("kind", "version", "epoch", "rule", "chain", "cutoff")}
    out |= {"batches": batches, "equivocations": m["equivocations"], "bindings": m["bindings"]}
    out |= {
        "boards": boards,
        "epoch_amounts": {o: str(a) for o, a in sorted(epoch_amounts.items())},
        "unowned": str(unowned),
        "remainder": str(budget - paid),
        "previous": {
            "root": hx(prev_nodes[0]) if prev_nodes else None,
            "cumulative": {o: str(a) for o, a in sorted(previous.items())},
        },
        "cumulative": {o: str(a) for o, a in cumulative.items()},
        "total": str(sum(cumulative.values())),
        "root": hx(nodes[0]) if nodes else None,
        "tree": {"leaf_encoding": ["address", "uint256"], "nodes": [hx(n) for n in nodes]},
    }
    return out


def dump(manifest: dict) -> bytes:
    """REWARDS.md: JSON, one-space indentation, keys in the table's order, ASCII, final
    newline (separators ", " / ": ", numbers as JSON integers, range bounds as decimals)."""
    return (json.dumps(manifest, indent=1, ensure_ascii=True) + "\n").encode()


def manifest_hash(data: bytes) -> str:
    return hx(keccak(data))


# --- what the chain says (event signatures from the contracts' sources) ---

ANCHORED = "Anchored(uint64,bytes32,uint64,address)"
ROOT_PUBLISHED = "RootPublished(uint64,bytes32,uint256,bytes32)"
BOARD_BOUND = "BoardBound(address,address,address,uint256)"


def topic(signature: str) -> str:
    return hx(keccak(signature.encode()))


def logs(w3, address: str, signature: str, first: int = 0, last: int | str = "latest"):
    return w3.eth.get_logs(
        {
            "address": w3.to_checksum_address(address),
            "fromBlock": first,
            "toBlock": last,
            "topics": [topic(signature)],
        }
    )


def chain_facts(w3, m: dict) -> dict:
    """The chain's side of an epoch, read with plain eth_getLogs and eth_getBlock: its
    RootPublished (root, total, manifest hash), the Anchored events of the listed gateways
    stamped in the epoch, and the binding contract's BoardBound events before its end."""
    c, seconds, epoch = m["chain"], m["rule"]["epoch_seconds"], m["epoch"]
    gateways = set(c["gateways"])
    published = None
    for log in logs(w3, c["rewards"], ROOT_PUBLISHED):
        if int.from_bytes(log["topics"][1], "big") == epoch:
            data = bytes(log["data"])
            published = {
                "root": hx(data[:32]),
                "total": str(int.from_bytes(data[32:64], "big")),
                "manifest_hash": hx(data[64:96]),
            }
    stamp: dict = {}

    def time_of(block: int) -> int:
        if block not in stamp:
            stamp[block] = w3.eth.get_block(block)["timestamp"]
        return stamp[block]

    anchored = []
    for log in logs(w3, c["anchor"], ANCHORED):
        gateway = hx(bytes(log["topics"][2])[12:])
        if gateway in gateways and time_of(log["blockNumber"]) // seconds == epoch:
            data = bytes(log["data"])
            anchored.append(
                {
                    "gateway": gateway,
                    "id": int.from_bytes(log["topics"][1], "big"),
                    "block": log["blockNumber"],
                    "root": hx(data[:32]),
                    "count": int.from_bytes(data[32:64], "big"),
                }
            )
    bindings = []
    for log in logs(w3, c["binding"], BOARD_BOUND, c["from_block"]):
        ts = time_of(log["blockNumber"])
        if ts < (epoch + 1) * seconds:
            bindings.append(
                {
                    "block": log["blockNumber"],
                    "log_index": log["logIndex"],
                    "board": hx(bytes(log["topics"][1])[12:]),
                    "owner": hx(bytes(log["topics"][3])[12:]) if len(log["topics"]) > 3 else None,
                    "timestamp": ts,
                    "data": bytes(log["data"]),
                }
            )
    return {"published": published, "anchored": anchored, "bindings": bindings}
