"""The epoch verifier: recompute one epoch's rewards from its manifest and the chain alone
(the library behind `terrapin rewards verify`, docs/REWARDS.md "Verifying an epoch").

Checks, in this order, so the first failure is the first difference:
  offline inputs   the manifest parses; every envelope is its listed (board, seq, digest)
                   and signed by the board; each batch's readings build its root and are
                   its count; the equivocation evidence is signed; bindings in chain order
  chain inputs     (with a node) the chain id; the anchor is the one you trust; each batch
                   was anchored by that transaction in that canonical block at that time,
                   by a gateway registered then; no Anchored event of those gateways in the
                   epoch is missing; the bindings are the registry's BoardBound events
  derived          flags and reasons, board figures and amounts, cumulative amounts, tree
  commitments      (with a node) the previous root and this epoch's root, total and
                   manifest hash are what the rewards contract published

Nothing comes from the gateway but the manifest. Exit codes as `terrapin verify`.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from web3 import Web3
from web3.exceptions import Web3Exception

from terrapin.gateway.chain.node import artifact
from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.rewards import manifest as manifest_format
from terrapin.gateway.rewards import onchain as rewards_chain
from terrapin.gateway.rewards import recompute
from terrapin.gateway.rewards.manifest import Manifest, ManifestError
from terrapin.gateway.rewards.units import amount_text
from terrapin.tools.verifier import CheckFailed, Checks, Trust, _ask, _require

FETCH_TIMEOUT = 30


class ManifestUnreadable(TerrapinError):
    """The manifest cannot be read (file, URL) at all: exit 2, as an unreadable bundle."""

    exit_code = 2


def read_manifest(source: str) -> bytes:
    """The manifest's bytes from a file or an http(s) URL (the gateway's API serves it)."""
    limit = manifest_format.MAX_MANIFEST_BYTES
    try:
        if source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source, timeout=FETCH_TIMEOUT) as reply:
                data = reply.read(limit + 1)
        else:
            data = Path(source).read_bytes()
    except (OSError, ValueError) as exc:
        raise ManifestUnreadable(f"cannot read the manifest {source}: {exc}") from None
    if len(data) > limit:
        raise ManifestUnreadable(f"the manifest {source} is larger than {limit} bytes")
    return data


def earlier_source(source: str, epoch: int) -> Callable[[int], bytes]:
    """Where epoch K's manifest is, from where epoch `epoch`'s came: the same folder
    (epoch-K.manifest.json) or the same API (.../epochs/K/manifest)."""
    marker = f"/epochs/{epoch}/manifest"

    def earlier(k: int) -> bytes:
        if not source.startswith(("http://", "https://")):
            return read_manifest(str(Path(source).parent / f"epoch-{k}.manifest.json"))
        if marker not in source:
            raise ManifestUnreadable(f"{source} is not a .../epochs/{epoch}/manifest URL")
        return read_manifest(source.replace(marker, f"/epochs/{k}/manifest"))

    return earlier


def _h(b: bytes | None) -> str:
    return "none" if b is None else "0x" + bytes(b).hex()


def _mismatch(fn: Callable[[], str]) -> Callable[[], str]:
    def run() -> str:
        try:
            return fn()
        except recompute.Mismatch as exc:
            raise CheckFailed(str(exc)) from None

    return run


class ChainView:
    """What the checks read from the node, each through verifier._ask (unreachable = exit 2)."""

    def __init__(self, w3: Web3, checks: Checks, m: Manifest, rewards: bytes | None):
        self.w3, self.checks, self.m = w3, checks, m
        self.anchor = w3.eth.contract(
            address=Web3.to_checksum_address(m.chain.anchor), abi=artifact("TerrapinAnchor")["abi"]
        )
        self.rewards = rewards
        self._times: dict[int, int] = {}

    def ask(self, fn: Callable[[], Any]) -> Any:
        """A node call: unreachable is exit 2 (verifier._ask); a block, transaction or
        call the node does not have is a failed check, never a traceback."""
        try:
            return _ask(self.checks, fn)
        except Web3Exception as exc:
            raise CheckFailed(f"the node says {type(exc).__name__}: {exc}") from None

    def timestamp(self, number: int) -> int:
        if number not in self._times:
            self._times[number] = int(self.ask(lambda: self.w3.eth.get_block(number))["timestamp"])
        return self._times[number]

    def first_block_at(self, t: int, hi: int) -> int:
        """The first block stamped >= t, searching [0, hi] (hi is stamped >= t)."""
        lo = 0
        while lo < hi:
            mid = (lo + hi) // 2
            if self.timestamp(mid) >= t:
                hi = mid
            else:
                lo = mid + 1
        return lo


def chain_input_checks(view: ChainView, trust: Trust, checks: Checks) -> bool:
    m, w3 = view.m, view.w3
    es = m.rule.epoch_seconds
    start, end = m.epoch * es, (m.epoch + 1) * es
    found: dict[str, Any] = {}

    def chain() -> str:
        chain_id = view.ask(lambda: w3.eth.chain_id)
        _require(
            chain_id == m.chain.chain_id,
            f"node is chain {chain_id}, manifest says {m.chain.chain_id}",
        )
        if trust.chain_id is not None:
            _require(
                chain_id == trust.chain_id, f"node is chain {chain_id}, you trust {trust.chain_id}"
            )
        _require(
            m.chain.anchor == trust.anchor,
            f"the manifest names anchor {_h(m.chain.anchor)}, you trust {_h(trust.anchor)}",
        )
        stamp = view.timestamp(m.cutoff_block)
        _require(stamp == m.cutoff_timestamp, f"cut-off block {m.cutoff_block} is stamped {stamp}")
        _require(stamp >= end, f"cut-off block {m.cutoff_block} is before the epoch's end")
        registry = bytes.fromhex(view.ask(view.anchor.functions.registry().call)[2:])
        if trust.registry is not None:
            _require(registry == trust.registry, f"the anchor's registry is {_h(registry)}")
        found["registry"] = registry
        return f"chain {chain_id}, anchor {_h(trust.anchor)}, cut-off block {m.cutoff_block}"

    def batches() -> str:
        registry = w3.eth.contract(
            address=Web3.to_checksum_address(found["registry"]),
            abi=artifact("TerrapinRegistry")["abi"],
        )
        for b in m.batches:
            where = f"batch {b.id} of {_h(b.gateway)}"
            _require(b.gateway in m.chain.gateways, f"{where}: not one of chain.gateways")
            receipt = view.ask(lambda b=b: w3.eth.get_transaction_receipt(b.tx))
            _require(receipt["status"] == 1, f"{where}: its transaction reverted")
            _require(
                bytes.fromhex((receipt["to"] or "0x")[2:]) == m.chain.anchor,
                f"{where}: not sent to the anchor",
            )
            _require(
                receipt["blockNumber"] == b.block,
                f"{where}: mined in block {receipt['blockNumber']}",
            )
            block = view.ask(lambda b=b: w3.eth.get_block(b.block))
            _require(
                bytes(block["hash"]) == bytes(receipt["blockHash"]), f"{where}: block not canonical"
            )
            _require(
                int(block["timestamp"]) == b.timestamp,
                f"{where}: block stamped {block['timestamp']}",
            )
            events = view.anchor.events.Anchored().process_receipt(receipt)
            _require(len(events) == 1, f"{where}: {len(events)} Anchored events")
            args = events[0]["args"]
            got = (args["batchId"], bytes(args["root"]), args["count"], args["gateway"].lower())
            want = (b.id, b.root, b.count, _h(b.gateway))
            _require(
                got == want,
                f"{where}: the chain anchored batch {got[0]} root {_h(got[1])} "
                f"count {got[2]} by {got[3]}",
            )
            _require(
                receipt["from"].lower() == _h(b.gateway), f"{where}: sent by {receipt['from']}"
            )
            ok = view.ask(
                lambda b=b: registry.functions.isGateway(Web3.to_checksum_address(b.gateway)).call(
                    block_identifier=b.block
                )
            )
            _require(
                ok, f"{where}: {_h(b.gateway)} was not a registered gateway at block {b.block}"
            )
        keys = ", ".join(
            _h(g) for g in m.chain.gateways
        )  # whose anchors count: the manifest's word
        return (
            f"{len(m.batches)} batch(es) anchored in epoch {m.epoch} by registered gateways "
            f"(counted: the anchors of {keys})"
        )

    def complete() -> str:
        lo = view.first_block_at(start, m.cutoff_block)
        hi = view.first_block_at(end, m.cutoff_block)
        listed = {(b.gateway, b.id) for b in m.batches}
        logs = view.ask(
            lambda: view.anchor.events.Anchored().get_logs(from_block=lo, to_block=max(lo, hi - 1))
        )
        seen, others = 0, set()
        for log in logs:
            gateway = bytes.fromhex(log["args"]["gateway"][2:])
            if not lo <= log["blockNumber"] < hi:
                continue
            if gateway not in m.chain.gateways:  # another key's anchors: not counted
                others.add(_h(gateway))
                continue
            seen += 1
            key = (gateway, int(log["args"]["batchId"]))
            _require(
                key in listed,
                f"batch {key[1]} of {_h(gateway)} was anchored in block {log['blockNumber']} "
                f"(epoch {m.epoch}) and is not in the manifest",
            )
        note = f"; not counted, by keys not in chain.gateways: {', '.join(sorted(others))}"
        return f"blocks {lo}..{hi - 1}: {seen} Anchored event(s), all listed" + (
            note if others else ""
        )

    def bindings() -> str:
        _require(
            m.chain.binding == found["registry"],
            f"bindings come from {_h(m.chain.binding)}, "
            f"not the anchor's registry {_h(found['registry'])}",
        )
        contract = rewards_chain.binding_contract(w3, _h(m.chain.binding))
        if m.chain.from_block > 0:
            code = view.ask(
                lambda: w3.eth.get_code(contract.address, block_identifier=m.chain.from_block - 1)
            )
            _require(not code, f"the registry existed before from_block {m.chain.from_block}")
        logs = view.ask(
            lambda: contract.events.BoardBound().get_logs(
                from_block=m.chain.from_block, to_block=m.cutoff_block
            )
        )
        chain_events = []
        for log in sorted(logs, key=lambda x: (x["blockNumber"], x["logIndex"])):
            stamp = view.timestamp(log["blockNumber"])
            if stamp < end:
                chain_events.append(
                    (
                        log["blockNumber"],
                        log["logIndex"],
                        log["args"]["board"].lower(),
                        log["args"]["owner"].lower(),
                        stamp,
                    )
                )
        listed = [(b.block, b.log_index, _h(b.board), _h(b.owner), b.timestamp) for b in m.bindings]
        for i in range(max(len(listed), len(chain_events))):
            a = listed[i] if i < len(listed) else None
            c = chain_events[i] if i < len(chain_events) else None
            if a != c:
                raise CheckFailed(
                    f"binding #{i}: the manifest says {_binding(a)}, "
                    f"the chain's BoardBound event is {_binding(c)}"
                )
        return f"{len(listed)} BoardBound event(s) of {_h(m.chain.binding)}, as on chain"

    return (
        checks.run("chain and cut-off", chain)
        and checks.run("batches on chain", batches)
        and checks.run("every anchored batch listed", complete)
        and checks.run("bindings on chain", bindings)
    )


def _binding(b: tuple | None) -> str:
    if b is None:
        return "nothing"
    return f"block {b[0]} log {b[1]}: board {b[2]} -> owner {b[3]} (time {b[4]})"


def commitment_checks(
    view: ChainView, data: bytes, checks: Checks, history: Callable[[int], bytes] | None
) -> bool:
    m, w3 = view.m, view.w3
    address = view.rewards or m.chain.rewards
    if address is None:
        return checks.add("rewards contract", False, "no --rewards and the manifest names none")
    if view.rewards is not None and m.chain.rewards not in (None, view.rewards):
        return checks.add(
            "rewards contract",
            False,
            f"the manifest names {_h(m.chain.rewards)}, you trust {_h(view.rewards)}",
        )
    token = rewards_chain.rewards_contract(w3, _h(address))

    published: list[tuple[int, bytes, int, bytes]] = []

    def roots() -> str:
        """(epoch, root, total, manifest hash) of every publication and replacement."""
        out = []
        for event in ("RootPublished", "RootReplaced"):
            logs = view.ask(lambda e=event: getattr(token.events, e)().get_logs(from_block=0))
            for log in logs:
                a = log["args"]
                out.append(
                    (
                        (log["blockNumber"], log["logIndex"]),
                        int(a["epoch"]),
                        bytes(a["root"]),
                        int(a["cumulativeTotal"]),
                        bytes(a["manifestHash"]),
                    )
                )
        published.extend(x[1:] for x in sorted(out))
        return f"{_h(address)}: {len(published)} publication(s)"

    def previous() -> str:
        earlier = [r for r in published if r[0] < m.epoch]
        root = earlier[-1][1] if earlier else None
        _require(
            root == m.previous_root,
            f"the latest root before epoch {m.epoch} on chain is {_h(root)}, "
            f"the manifest's previous root is {_h(m.previous_root)}",
        )
        return (
            f"{_h(root)} (epoch {earlier[-1][0]})"
            if earlier
            else "no earlier root: starts from nothing"
        )

    def this() -> str:
        mine = [r for r in published if r[0] == m.epoch]
        digest = manifest_format.manifest_hash(data)
        if m.root is None:
            _require(not mine, f"epoch {m.epoch} has a root on chain, the manifest has none")
            return "no owner earned anything: nothing published, as on chain"
        _require(mine, f"no root published for epoch {m.epoch} on {_h(address)}")
        _epoch, root, total, chash = mine[-1]
        _require(
            root == m.root,
            f"the chain's root for epoch {m.epoch} is {_h(root)}, the manifest's is {_h(m.root)}",
        )
        _require(total == m.total, f"the chain's total is {total}, the manifest's is {m.total}")
        _require(
            chash == digest,
            f"the chain commits to manifest {_h(chash)}, this file hashes to {_h(digest)}",
        )
        return f"root {_h(root)}, total {amount_text(total)}, manifest hash {_h(digest)}"

    def earlier() -> str:
        """No reading listed here was anchored in an earlier epoch (rule step 1: it counts
        once, in the earliest): every earlier manifest committed on chain, read from beside
        this one and checked against its hash."""
        hashes = {e: h for e, _root, _total, h in published if e < m.epoch}
        here = {(r.board, r.seq) for b in m.batches for r in b.readings}
        read = 0
        for k, chash in sorted(hashes.items()):
            if chash == bytes(32):  # carried over, or published before manifests
                continue
            try:
                old = history(k)  # type: ignore[misc]
            except ManifestUnreadable as exc:
                raise ManifestUnreadable(
                    f"epoch {k}'s manifest is needed to rule out a reading counted in two "
                    f"epochs: {exc}"
                ) from None
            _require(
                manifest_format.manifest_hash(old) == chash,
                f"the manifest of epoch {k} beside this one is not the one on chain",
            )
            try:
                old_batches = manifest_format.loads(old).batches
            except ManifestError as exc:
                raise CheckFailed(f"the manifest of epoch {k}: {exc}") from None
            for b in old_batches:
                for r in b.readings:
                    _require(
                        (r.board, r.seq) not in here,
                        f"board {_h(r.board)} seq {r.seq} was anchored in epoch {k} "
                        f"(batch {b.id}) and is listed again in epoch {m.epoch}",
                    )
            read += 1
        return f"{read} earlier manifest(s) on chain: no reading listed twice"

    return (
        checks.run("rewards contract", roots)
        and checks.run("previous root on chain", previous)
        and (history is None or checks.run("earlier epochs", earlier))
        and checks.run("root, total and manifest hash on chain", this)
    )


def run(
    data: bytes,
    epoch: int | None = None,
    *,
    rpc: str | None = None,
    w3: Web3 | None = None,
    trust: Trust | None = None,
    rewards: bytes | None = None,
    history: Callable[[int], bytes] | None = None,
) -> Checks:
    """Every check of one epoch manifest; on chain too with `rpc` or `w3` (needs `trust`).
    `rewards` pins the rewards contract (else the manifest's); `history(K)` gives epoch
    K's manifest, for the check that no reading is counted in two epochs."""
    checks = Checks()
    try:
        m = manifest_format.loads(data)
    except ManifestError as exc:
        checks.add("manifest format", False, str(exc))
        return checks
    if epoch is not None and m.epoch != epoch:
        checks.add("manifest format", False, f"the manifest is epoch {m.epoch}, not {epoch}")
        return checks
    checks.add(
        "manifest format",
        True,
        f"version {manifest_format.VERSION}, epoch {m.epoch}, rule {m.rule.version}",
    )
    offline_inputs, derived = recompute.CHECKS[:3], recompute.CHECKS[3:]
    for name, fn in offline_inputs:
        if not checks.run(name, _mismatch(lambda fn=fn: fn(m))):
            return checks
    if rpc and w3 is None:
        w3 = Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": 15}))
    view = None
    if w3 is not None and trust is not None:
        view = ChainView(w3, checks, m, rewards)
        if not chain_input_checks(view, trust, checks):
            return checks
    for name, fn in derived:
        checks.run(name, _mismatch(lambda fn=fn: fn(m)))
    if view is not None and checks.ok and commitment_checks(view, data, checks, history):
        checks.on_chain = True
    return checks
