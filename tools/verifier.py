"""The bundle verifier: check a proof bundle without the gateway (the library behind
`terrapin verify BUNDLE [--rpc URL]`, whose command is tools/cli/verify.py).

Offline: the envelope parses as COSE_Sign1/ES256K, the public key is the board's
address and the envelope's kid, the payload's sequence number is the bundle's, the
digest is SHA-256 of the Sig_structure, the signature verifies (low-S), the leaf is the
StandardMerkleTree leaf of (board, seq, digest), and the proof leads to the root.
With --rpc, on that chain: the chain id, the anchoring transaction (succeeded, sent to
the contract, in the stated block), its Anchored event (batch, root), and the
contract's own views (rootOf, verifyReading, verifyReadingSigned).

Each check records a pass and its detail, or the reason it failed. The envelope is
decoded, hashed and checked by the protocol core (terrapin.gateway.protocol).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from web3 import Web3

from terrapin.gateway.chain import bundle, merkle
from terrapin.gateway.protocol.envelope import EnvelopeError, decode_payload
from terrapin.gateway.protocol.errors import PublicKeyError
from terrapin.gateway.protocol.reasons import Reason
from terrapin.gateway.protocol.signature import address, recover_signer, verify_digest


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


class Checks:
    def __init__(self) -> None:
        self.items: list[Check] = []

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
            seq = decode_payload(env.payload).seq
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


def check_chain(b: bundle.Bundle, w3: Web3, checks: Checks) -> None:
    """The on-chain checks through `w3` (a JSON-RPC node, or the embedded chain's web3)."""
    from web3.exceptions import TransactionNotFound

    from terrapin.gateway.chain.node import artifact

    try:
        chain_id = w3.eth.chain_id
    except Exception as exc:
        checks.add("chain id", False, f"cannot reach the node: {exc}")
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
        address=Web3.to_checksum_address(b.contract), abi=artifact("TerrapinAnchor")["abi"]
    )

    def transaction() -> str:
        try:
            receipt = w3.eth.get_transaction_receipt(b.tx)
        except TransactionNotFound:
            raise CheckFailed(f"no transaction 0x{b.tx.hex()} on this chain") from None
        _require(receipt["status"] == 1, "the transaction reverted")
        to = bytes.fromhex((receipt["to"] or "0x")[2:])
        _require(to == b.contract, f"the transaction went to {receipt['to']}, not the contract")
        _require(
            receipt["blockNumber"] == b.block,
            f"mined in block {receipt['blockNumber']}, bundle says {b.block}",
        )
        canonical = bytes(w3.eth.get_block(b.block)["hash"])
        _require(canonical == bytes(receipt["blockHash"]), "its block is not canonical")
        events = contract.events.Anchored().process_receipt(receipt)
        _require(len(events) == 1, f"{len(events)} Anchored events in the transaction")
        args = events[0]["args"]
        _require(args["batchId"] == b.batch, f"it anchored batch {args['batchId']}")
        _require(bytes(args["root"]) == b.root, f"it anchored root 0x{bytes(args['root']).hex()}")
        depth = w3.eth.block_number - b.block + 1
        return f"block {b.block}, {depth} confirmation(s), batch {b.batch} of {args['count']}"

    def state() -> str:
        on_chain = bytes(contract.functions.rootOf(b.batch).call())
        _require(
            on_chain == b.root, f"the contract holds root 0x{on_chain.hex()} for batch {b.batch}"
        )
        board = Web3.to_checksum_address(b.device)
        ok = contract.functions.verifyReading(b.batch, board, b.seq, b.digest, b.proof).call()
        _require(ok, "verifyReading says no")
        env = bundle.parse_envelope(b.envelope)
        found = recover_signer(b.digest, env.signature, b.device)
        if found is None:
            raise CheckFailed("the signature does not recover to the device")
        signed = contract.functions.verifyReadingSigned(
            b.batch, board, b.seq, b.digest, b.proof, env.signature, found[1]
        ).call()
        _require(signed, "verifyReadingSigned says no")
        return "rootOf, verifyReading, verifyReadingSigned agree"

    if checks.run("anchoring transaction", transaction):
        checks.run("contract views", state)


def run_checks(data: object, rpc: str | None = None, w3: Web3 | None = None) -> Checks:
    """All checks of a bundle (parsed JSON); on chain too if `rpc` (a URL) or `w3` is given."""
    checks = Checks()
    b = check_offline(data, checks)
    if rpc and w3 is None:
        w3 = Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": 15}))
    if b is not None and w3 is not None and checks.ok:
        check_chain(b, w3, checks)
    return checks
