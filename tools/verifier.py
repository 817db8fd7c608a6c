"""The bundle verifier: check a proof bundle without the gateway (the library behind
`terrapin verify BUNDLE [--rpc URL --anchor ADDRESS | --network FILE]`, whose command
is tools/cli/verify.py).

Offline: the envelope parses as COSE_Sign1/ES256K, the public key is the board's
address and the envelope's kid, the payload's sequence number is the bundle's, the
digest is SHA-256 of the Sig_structure, the signature verifies (low-S), the leaf is the
StandardMerkleTree leaf of (board, seq, digest), and the proof leads to the root.
With --rpc, on that chain, against a pinned `Trust` (the anchor, and optionally the
chain id and registry, the verifier was told to trust; never the bundle's word): the
chain id, the bundle's contract is the pinned anchor, the anchoring transaction
(succeeded, sent to the contract, in the stated block), its Anchored event (batch,
root, gateway = the transaction's sender), the sender was a registered gateway in the
anchor's registry AT THAT BLOCK, and the contract's own views (rootOf, verifyReading,
verifyReadingSigned, all for that gateway).

Each check records a pass and its detail, or the reason it failed. The envelope is
decoded, hashed and checked by the protocol core (terrapin.gateway.protocol).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from web3 import Web3

from terrapin.gateway.chain import bundle, merkle
from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.homeassistant import shortest
from terrapin.gateway.protocol.envelope import EnvelopeError, Reading, decode_payload
from terrapin.gateway.protocol.errors import PublicKeyError
from terrapin.gateway.protocol.reasons import Reason
from terrapin.gateway.protocol.signature import address, recover_signer, verify_digest


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


class TrustError(TerrapinError):
    """A trust statement (--anchor, --network FILE) that cannot be read or used."""

    exit_code = 2


@dataclass(frozen=True)
class Trust:
    """What the verifier trusts, from the command line or the network's published file:
    the anchor contract, and optionally the chain id and the registry."""

    anchor: bytes
    chain_id: int | None = None
    registry: bytes | None = None

    @staticmethod
    def address(value: Any, field: str) -> bytes:
        if not isinstance(value, str) or not value.startswith("0x") or len(value) != 42:
            raise TrustError(f"{field}: must be a 0x-prefixed 20-byte address, got {value!r}")
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            raise TrustError(f"{field}: {value!r} is not hex") from None

    @classmethod
    def from_network_file(cls, path: str | Path) -> Trust:
        """A network file: {"chain_id": N, "anchor": "0x..", "registry": "0x.."}, as the
        network publishes it (docs/CHAIN.md). All three keys are required."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise TrustError(f"cannot read network file {path}: {exc}") from None
        if not isinstance(data, dict):
            raise TrustError(f"network file {path}: must be a JSON object")
        missing = [k for k in ("chain_id", "anchor", "registry") if k not in data]
        if missing:
            raise TrustError(f"network file {path}: missing {', '.join(missing)}")
        chain_id = data["chain_id"]
        if isinstance(chain_id, bool) or not isinstance(chain_id, int) or chain_id < 1:
            raise TrustError(f"network file {path}: chain_id must be a positive integer")
        return cls(
            anchor=cls.address(data["anchor"], "anchor"),
            chain_id=chain_id,
            registry=cls.address(data["registry"], "registry"),
        )


class Checks:
    def __init__(self) -> None:
        self.items: list[Check] = []
        self.on_chain = False  # every on-chain check ran (and the node answered)
        self.unreachable: str | None = None  # why the node could not be asked
        self.reading: Reading | None = None  # the signed reading, once it decoded
        self.bundle: bundle.Bundle | None = None
        self.anchor_time: int | None = None  # the anchoring block's timestamp, from the chain

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.items.append(Check(name, ok, detail))
        return ok

    def run(self, name: str, fn: Callable[[], str]) -> bool:
        """Run `fn`: its return value is the detail; a CheckFailed is the reason."""
        try:
            return self.add(name, True, fn())
        except CheckFailed as exc:
            return self.add(name, False, str(exc))

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.items)


class CheckFailed(Exception):
    pass


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise CheckFailed(reason)


def _require_signature(pubkey: bytes, digest: bytes, signature: bytes) -> None:
    """CheckFailed with the reason unless `pubkey` made `signature` (low-S) over `digest`."""
    try:
        verify_digest(pubkey, digest, signature)
    except EnvelopeError as exc:
        if exc.reason == Reason.HIGH_S:
            raise CheckFailed("high-S signature (malleable)") from None
        raise CheckFailed("signature does not verify for this public key") from None
    except PublicKeyError as exc:
        raise CheckFailed(f"signature does not parse ({exc})") from None


def check_offline(data: object, checks: Checks) -> bundle.Bundle | None:
    try:
        b = bundle.load(data)
    except bundle.BundleError as exc:
        checks.add("bundle format", False, str(exc))
        return None
    checks.add("bundle format", True, f"version {bundle.VERSION}, batch {b.batch}")
    try:
        env = bundle.parse_envelope(b.envelope)
    except bundle.BundleError as exc:
        checks.add("envelope", False, str(exc))
        return b
    checks.add("envelope", True, f"COSE_Sign1 ES256K, {len(b.envelope)} bytes")

    def board() -> str:
        try:
            from_key = address(b.pubkey)
        except PublicKeyError:
            raise CheckFailed("pubkey: must be 65 bytes 04||X||Y") from None
        _require(from_key == b.device, f"pubkey is address 0x{from_key.hex()}, not the device")
        _require(env.kid == b.device, f"envelope kid 0x{env.kid.hex()} is not the device")
        return f"0x{b.device.hex()} (pubkey, kid)"

    def sequence() -> str:
        try:
            checks.reading = decode_payload(env.payload)
            seq = checks.reading.seq
        except EnvelopeError as exc:
            raise CheckFailed(f"payload does not parse: {exc}") from None
        _require(seq == b.seq, f"payload says seq {seq}, bundle says {b.seq}")
        return str(seq)

    def digest() -> str:
        _require(env.digest == b.digest, f"Sig_structure hashes to 0x{env.digest.hex()}")
        return "SHA-256 of the Sig_structure"

    def signature() -> str:
        _require_signature(b.pubkey, env.digest, env.signature)
        return "secp256k1, low-S"

    def leaf() -> str:
        expected = merkle.leaf_hash(b.device, b.seq, b.digest)
        _require(expected == b.leaf, f"(board, seq, digest) hash to 0x{expected.hex()}")
        return "keccak256(keccak256(abi.encode(board, seq, digest)))"

    def root() -> str:
        got = merkle.process_proof(b.leaf, b.proof)
        _require(got == b.root, f"proof leads to 0x{got.hex()}, not the root")
        n = len(b.proof)
        return f"{n} sibling hash{'' if n == 1 else 'es'} up to 0x{b.root.hex()[:16]}…"

    checks.run("board address", board)
    checks.run("sequence", sequence)
    checks.run("digest", digest)
    checks.run("signature", signature)
    checks.run("leaf", leaf)
    checks.run("proof -> root", root)
    return b


def check_trusted(b: bundle.Bundle, trust: Trust, checks: Checks) -> bool:
    """The bundle names the pinned anchor (and chain id): checked without a node."""
    ok = checks.add(
        "trusted anchor",
        b.contract == trust.anchor,
        f"0x{b.contract.hex()}"
        if b.contract == trust.anchor
        else f"the bundle names contract 0x{b.contract.hex()}, you trust 0x{trust.anchor.hex()}",
    )
    if trust.chain_id is not None:
        same = b.chain_id == trust.chain_id
        ok = (
            checks.add(
                "trusted chain id",
                same,
                f"{b.chain_id}"
                if same
                else f"the bundle says {b.chain_id}, you trust {trust.chain_id}",
            )
            and ok
        )
    return ok


def _ask(checks: Checks, fn: Callable[[], Any]) -> Any:
    """A node call; an unreachable node is recorded (exit 2 in the command), not a failure
    of the bundle."""
    from web3.exceptions import ProviderConnectionError

    try:
        return fn()
    except (OSError, TimeoutError, ProviderConnectionError) as exc:
        checks.unreachable = f"{type(exc).__name__}: {exc}"
        raise CheckFailed(f"cannot reach the node: {exc}") from None


def check_chain(b: bundle.Bundle, w3: Web3, trust: Trust, checks: Checks) -> None:
    """The on-chain checks through `w3` (a JSON-RPC node, or the embedded chain's web3),
    against the pinned anchor: the bundle's own `contract` is trusted for nothing."""
    from web3.exceptions import TransactionNotFound

    from terrapin.gateway.chain.node import artifact

    if not check_trusted(b, trust, checks):
        return
    try:
        chain_id = _ask(checks, lambda: w3.eth.chain_id)
    except CheckFailed as exc:
        checks.add("chain id", False, str(exc))
        return
    if not checks.add(
        "chain id",
        chain_id == b.chain_id,
        f"{chain_id}"
        if chain_id == b.chain_id
        else f"node is chain {chain_id}, bundle says {b.chain_id}",
    ):
        return
    contract = w3.eth.contract(
        address=Web3.to_checksum_address(trust.anchor), abi=artifact("TerrapinAnchor")["abi"]
    )
    found: dict[str, Any] = {}

    def transaction() -> str:
        try:
            receipt = _ask(checks, lambda: w3.eth.get_transaction_receipt(b.tx))
        except TransactionNotFound:
            raise CheckFailed(f"no transaction 0x{b.tx.hex()} on this chain") from None
        _require(receipt["status"] == 1, "the transaction reverted")
        to = bytes.fromhex((receipt["to"] or "0x")[2:])
        _require(to == trust.anchor, f"the transaction went to {receipt['to']}, not the anchor")
        _require(
            receipt["blockNumber"] == b.block,
            f"mined in block {receipt['blockNumber']}, bundle says {b.block}",
        )
        block = _ask(checks, lambda: w3.eth.get_block(b.block))
        _require(bytes(block["hash"]) == bytes(receipt["blockHash"]), "its block is not canonical")
        checks.anchor_time = int(block["timestamp"])
        events = contract.events.Anchored().process_receipt(receipt)
        _require(len(events) == 1, f"{len(events)} Anchored events in the transaction")
        args = events[0]["args"]
        _require(args["batchId"] == b.batch, f"it anchored batch {args['batchId']}")
        _require(bytes(args["root"]) == b.root, f"it anchored root 0x{bytes(args['root']).hex()}")
        _require(args["gateway"] == receipt["from"], "its Anchored event names another sender")
        found["gateway"] = receipt["from"]
        depth = _ask(checks, lambda: w3.eth.block_number) - b.block + 1
        return (
            f"block {b.block}, {depth} confirmation(s), batch {b.batch} of {args['count']}, "
            f"gateway {receipt['from']}"
        )

    def registered() -> str:
        anchors_registry = bytes.fromhex(_ask(checks, contract.functions.registry().call)[2:])
        if trust.registry is not None:
            _require(
                anchors_registry == trust.registry,
                f"the anchor's registry is 0x{anchors_registry.hex()}, "
                f"you trust 0x{trust.registry.hex()}",
            )
        registry = w3.eth.contract(
            address=Web3.to_checksum_address(anchors_registry),
            abi=artifact("TerrapinRegistry")["abi"],
        )
        gateway = found["gateway"]
        call = registry.functions.isGateway(gateway)
        ok = _ask(checks, lambda: call.call(block_identifier=b.block))
        _require(ok, f"{gateway} was not a registered gateway at block {b.block}")
        return f"{gateway} at block {b.block} (registry 0x{anchors_registry.hex()})"

    def state() -> str:
        gateway = found["gateway"]
        views = contract.functions
        on_chain = bytes(_ask(checks, views.rootOf(gateway, b.batch).call))
        _require(
            on_chain == b.root,
            f"the contract holds root 0x{on_chain.hex()} for {gateway}'s batch {b.batch}",
        )
        board = Web3.to_checksum_address(b.device)
        ok = _ask(
            checks, views.verifyReading(gateway, b.batch, board, b.seq, b.digest, b.proof).call
        )
        _require(ok, "verifyReading says no")
        env = bundle.parse_envelope(b.envelope)
        recovered = recover_signer(b.digest, env.signature, b.device)
        if recovered is None:
            raise CheckFailed("the signature does not recover to the device")
        signed = _ask(
            checks,
            views.verifyReadingSigned(
                gateway, b.batch, board, b.seq, b.digest, b.proof, env.signature, recovered[1]
            ).call,
        )
        _require(signed, "verifyReadingSigned says no")
        return "rootOf, verifyReading, verifyReadingSigned agree"

    if (
        checks.run("anchoring transaction", transaction)
        and checks.run("registered gateway", registered)
        and checks.run("contract views", state)
    ):
        checks.on_chain = True


def run_checks(
    data: object,
    rpc: str | None = None,
    w3: Web3 | None = None,
    trust: Trust | None = None,
) -> Checks:
    """All checks of a bundle (parsed JSON). On chain too if `rpc` (a URL) or `w3` is
    given, which needs `trust`: without one nothing on chain is checked (TrustError)."""
    if (rpc or w3 is not None) and trust is None:
        raise TrustError(
            "refusing to check on chain without a trust statement: the bundle names its "
            "own contract, and anyone can deploy a contract that agrees with it",
            hint="pass --anchor ADDRESS (the network's anchor) or --network FILE",
        )
    checks = Checks()
    b = checks.bundle = check_offline(data, checks)
    if b is None or not checks.ok:
        return checks
    if rpc and w3 is None:
        w3 = Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": 15}))
    if w3 is not None and trust is not None:
        check_chain(b, w3, trust, checks)
    elif trust is not None:
        check_trusted(b, trust, checks)
    return checks


def utc(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def describe(checks: Checks) -> list[str]:
    """What the bundle says, in words: board, seq, time, each record, the anchor. Only
    what the checks passed vouches for it; the caller says how far that went."""
    b, reading = checks.bundle, checks.reading
    if b is None or reading is None:
        return []
    when = utc(reading.time) if reading.time else "not set (the board's clock was not set)"
    lines = [
        f"board     0x{b.device.hex()}",
        f"seq       {reading.seq}",
        f"time      {when}",
    ]
    width = max(len(name) for name, _unit, _value in reading.records)
    for name, unit, value in reading.records:
        lines.append(f"  {name:<{width}}  {number_text(value)} {unit}".rstrip())
    anchored = f"batch {b.batch}, block {b.block}"
    if checks.anchor_time is not None:
        anchored += f", {utc(checks.anchor_time)}"
    else:
        anchored += ", time not known (the chain was not asked)"
    lines.append(f"anchored  {anchored}")
    lines.append(f"          chain {b.chain_id}, contract 0x{b.contract.hex()}")
    lines.append(f"          tx 0x{b.tx.hex()}")
    return lines


def number_text(value: float) -> str:
    """The shortest text that gives the value back: a float32 reading (the board's float)
    as 19.1, not 19.100000381469727."""
    return str(shortest(value))
