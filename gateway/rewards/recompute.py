"""Every figure of an epoch manifest, derived from its inputs alone (docs/REWARDS.md).

Inputs: the rule (version and parameters), the batches with their readings (signed
envelopes) and anchoring blocks' timestamps, the equivocation evidence, the BoardBound
events and the previous cumulative amounts. Derived: each reading's flags and reason,
the per-board figures, per-owner amounts, cumulative amounts, the total and the tree.

`build` fills a manifest's derived fields (the gateway, the golden fixture);
`CHECKS` are the offline checks of `terrapin rewards verify`, each raising Mismatch
with the first difference it finds. Pure: no database, no chain, no clock.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace

from terrapin.gateway.chain import merkle
from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.protocol.envelope import EnvelopeError, decode_envelope, decode_payload
from terrapin.gateway.protocol.reasons import Flag, flag_names
from terrapin.gateway.protocol.signature import recover_signer
from terrapin.gateway.rewards import distribution
from terrapin.gateway.rewards import rule as reward_rule
from terrapin.gateway.rewards.flags import equivocation_evidence, reading_flags
from terrapin.gateway.rewards.manifest import BoardFigures, Leaf, Manifest
from terrapin.gateway.rewards.units import amount_text


class Mismatch(TerrapinError):
    """A manifest whose listed value differs from what its inputs give (the first one)."""


def _h(b: bytes) -> str:
    return "0x" + b.hex()


def _name(batch_id: int, leaf: Leaf) -> str:
    return f"batch {batch_id} reading {_h(leaf.board)} seq {leaf.seq}"


def _flags_text(flags: int) -> str:
    return f"{flags} ({', '.join(flag_names(flags))})" if flags else "0"


def _decoded(leaf: Leaf):
    try:
        env = decode_envelope(leaf.envelope)
        return env, decode_payload(env.payload)
    except EnvelopeError as exc:
        raise Mismatch(f"its envelope does not decode ({exc})") from None


def equivocated(m: Manifest) -> set[tuple[bytes, int]]:
    """(board, seq) with valid evidence of another signed reading for that seq."""
    digests = {(r.board, r.seq): r.digest for b in m.batches for r in b.readings}
    out = set()
    for e in m.equivocations:
        key = (e.board, e.seq)
        if key not in digests:
            continue
        if equivocation_evidence(e.board, e.seq, digests[key], e.envelope) is None:
            out.add(key)
    return out


def leaf_outcomes(m: Manifest) -> list[list[tuple[int, str | None]]]:
    """(flags, reason) of every listed reading, batch by batch, in the listed order.

    Flags: reading_flags against the batch's anchoring block time, plus EQUIVOCATED with
    evidence. A (board, seq) listed twice counts once: the copy with the lowest flags
    (then the first listed); the others are "duplicate". A kept copy with flags is
    "flagged"; a kept copy without flags counts (reason None)."""
    bad = equivocated(m)
    flags: list[list[int]] = []
    best: dict[tuple[bytes, int], tuple[int, int, int]] = {}
    for bi, batch in enumerate(m.batches):
        row = []
        for li, leaf in enumerate(batch.readings):
            _env, reading = _decoded(leaf)
            f = reading_flags(reading, batch.timestamp, m.rule.flags)
            if (leaf.board, leaf.seq) in bad:
                f |= Flag.EQUIVOCATED
            row.append(int(f))
            key = (leaf.board, leaf.seq)
            if key not in best or f < best[key][0]:
                best[key] = (int(f), bi, li)
        flags.append(row)
    out = []
    for bi, batch in enumerate(m.batches):
        row = []
        for li, leaf in enumerate(batch.readings):
            f = flags[bi][li]
            kept = best[(leaf.board, leaf.seq)][1:] == (bi, li)
            row.append((f, None if kept and not f else ("flagged" if kept else "duplicate")))
        out.append(row)
    return out


@dataclass
class Derived:
    boards: dict[bytes, BoardFigures]
    epoch_amounts: dict[bytes, int]
    unowned: int
    remainder: int
    previous_root: bytes | None
    cumulative: dict[bytes, int]
    total: int
    root: bytes | None
    tree: list[bytes]


def tree_of(cumulative: dict[bytes, int]) -> list[bytes]:
    """The flat OpenZeppelin tree over (owner, cumulative) leaves, owners with > 0 only."""
    owners = sorted(o for o, a in cumulative.items() if a > 0)
    if not owners:
        return []
    leaves = [distribution.leaf_hash(_h(o), cumulative[o]) for o in owners]
    return merkle.build_from_leaves(leaves).nodes


def derive(m: Manifest, outcomes: list[list[tuple[int, str | None]]]) -> Derived:
    """Board figures, amounts (rule.epoch_rewards), cumulative amounts and the tree."""
    counted = []
    figures: dict[bytes, list[int]] = {}  # readings, flagged, duplicates, counted
    for batch, row in zip(m.batches, outcomes, strict=True):
        for leaf, (flags, reason) in zip(batch.readings, row, strict=True):
            fig = figures.setdefault(leaf.board, [0, 0, 0, 0])
            fig[0] += 1
            fig[{"flagged": 1, "duplicate": 2, None: 3}[reason]] += 1
            if reason != "duplicate":
                counted.append((_h(leaf.board), leaf.seq, flags, m.epoch))
    events = [(_h(b.board), _h(b.owner), b.timestamp) for b in m.bindings]
    owners = reward_rule.owners_at(events, m.epoch, m.rule.epoch_seconds)
    result = reward_rule.epoch_rewards(counted, owners, m.epoch, m.rule.budget, m.rule.cap)
    boards = {}
    for board, (n, flagged, dups, ok) in sorted(figures.items()):
        owner = owners.get(_h(board))
        boards[board] = BoardFigures(
            owner=None if owner is None else bytes.fromhex(owner[2:]),
            readings=n,
            flagged=flagged,
            duplicates=dups,
            counted=ok,
            weight=result.weights.get(_h(board), 0),
            amount=result.boards.get(_h(board), 0),
        )
    epoch_amounts = {bytes.fromhex(o[2:]): a for o, a in result.owners.items() if a > 0}
    cumulative = dict(m.previous)
    for owner, amount in epoch_amounts.items():
        cumulative[owner] = cumulative.get(owner, 0) + amount
    cumulative = {o: a for o, a in sorted(cumulative.items()) if a > 0}
    previous_tree = tree_of(m.previous)
    tree = tree_of(cumulative)
    return Derived(
        boards=boards,
        epoch_amounts=epoch_amounts,
        unowned=result.unowned,
        remainder=result.remainder,
        previous_root=previous_tree[0] if previous_tree else None,
        cumulative=cumulative,
        total=sum(cumulative.values()),
        root=tree[0] if tree else None,
        tree=tree,
    )


def build(m: Manifest) -> Manifest:
    """A copy of `m` with every derived field (flags, reasons, figures, tree) filled in."""
    out = copy.deepcopy(m)
    outcomes = leaf_outcomes(out)
    for batch, row in zip(out.batches, outcomes, strict=True):
        # New Leaf objects: one reading listed in two batches may be one object in `m`.
        batch.readings = [
            replace(leaf, flags=flags, reason=reason)
            for leaf, (flags, reason) in zip(batch.readings, row, strict=True)
        ]
    d = derive(out, outcomes)
    out.boards, out.epoch_amounts, out.unowned, out.remainder = (
        d.boards,
        d.epoch_amounts,
        d.unowned,
        d.remainder,
    )
    out.previous_root, out.cumulative, out.total = d.previous_root, d.cumulative, d.total
    out.root, out.tree = d.root, d.tree
    return out


# -- the offline checks of `terrapin rewards verify`, in order ------------------------
def check_leaves(m: Manifest, signatures: bool = True) -> str:
    """Each envelope is the listed (board, seq, digest) and signed by the board; each
    batch is in the epoch, its count is its readings and they build its root."""
    seen = set()
    order = [(b.block, b.gateway, b.id) for b in m.batches]
    if order != sorted(order):
        raise Mismatch("batches are not in (block, gateway, id) order")
    n = 0
    for batch in m.batches:
        if (batch.gateway, batch.id) in seen:
            raise Mismatch(f"batch {batch.id} of {_h(batch.gateway)} is listed twice")
        seen.add((batch.gateway, batch.id))
        epoch = batch.timestamp // m.rule.epoch_seconds
        if epoch != m.epoch:
            raise Mismatch(f"batch {batch.id}: block time {batch.timestamp} is in epoch {epoch}")
        for leaf in batch.readings:
            try:
                env, reading = _decoded(leaf)
            except Mismatch as exc:
                raise Mismatch(f"{_name(batch.id, leaf)}: {exc}") from None
            got = (env.kid, reading.seq, env.digest)
            if got != (leaf.board, leaf.seq, leaf.digest):
                raise Mismatch(
                    f"{_name(batch.id, leaf)}: its envelope is board {_h(env.kid)} seq "
                    f"{reading.seq} digest {_h(env.digest)}"
                )
            if signatures and _signer(env) is None:
                raise Mismatch(f"{_name(batch.id, leaf)}: not signed by the board")
            n += 1
        if len(batch.readings) != batch.count:
            raise Mismatch(
                f"batch {batch.id}: {len(batch.readings)} readings listed, its count is "
                f"{batch.count} (a reading was added or removed)"
            )
        values = [(r.board, r.seq, r.digest) for r in batch.readings]
        root = merkle.build_tree(values).root if values else bytes(32)
        if root != batch.root:
            raise Mismatch(
                f"batch {batch.id}: its listed readings build root {_h(root)}, "
                f"not {_h(batch.root)} (a reading was changed, added or removed)"
            )
    return f"{n} readings in {len(m.batches)} batch(es), each signed and in its batch's tree"


def _signer(env):
    try:
        return recover_signer(env.digest, env.signature, env.kid)
    except Exception:  # a signature that is not two curve scalars: nobody signed it
        return None


def check_equivocations(m: Manifest) -> str:
    digests = {(r.board, r.seq): r.digest for b in m.batches for r in b.readings}
    for i, e in enumerate(m.equivocations):
        digest = digests.get((e.board, e.seq))
        if digest is None:
            raise Mismatch(f"equivocations[{i}]: {_h(e.board)} seq {e.seq} is not listed")
        why = equivocation_evidence(e.board, e.seq, digest, e.envelope)
        if why is not None:
            raise Mismatch(f"equivocations[{i}] ({_h(e.board)} seq {e.seq}): the envelope {why}")
    return f"{len(m.equivocations)} piece(s) of evidence, each signed by its board"


def check_flags(m: Manifest) -> str:
    for batch, row in zip(m.batches, leaf_outcomes(m), strict=True):
        for leaf, (flags, reason) in zip(batch.readings, row, strict=True):
            if leaf.flags != flags:
                raise Mismatch(
                    f"{_name(batch.id, leaf)}: the manifest says flags "
                    f"{_flags_text(leaf.flags)}, recomputed {_flags_text(flags)}"
                )
            if leaf.reason != reason:
                raise Mismatch(
                    f"{_name(batch.id, leaf)}: the manifest says reason {leaf.reason!r}, "
                    f"recomputed {reason!r}"
                )
    return "every reading's flags and reason recomputed"


def check_bindings_order(m: Manifest) -> str:
    end = (m.epoch + 1) * m.rule.epoch_seconds
    keys = [(b.block, b.log_index) for b in m.bindings]
    if keys != sorted(set(keys)):
        raise Mismatch("bindings are not in strictly increasing (block, log index) order")
    late = [b for b in m.bindings if b.timestamp >= end]
    if late:
        raise Mismatch(f"binding at block {late[0].block} is stamped after the epoch's end")
    return f"{len(m.bindings)} BoardBound event(s) before the epoch's end, in chain order"


def _compare(what: str, listed, derived) -> None:
    if listed != derived:
        raise Mismatch(f"{what}: the manifest says {listed}, recomputed {derived}")


def check_figures(m: Manifest) -> str:
    d = derive(m, leaf_outcomes(m))
    for board in sorted(set(m.boards) | set(d.boards)):
        listed, got = m.boards.get(board), d.boards.get(board)
        if listed is None or got is None:
            raise Mismatch(f"board {_h(board)}: listed {listed is not None}, recomputed {got}")
        for name in ("owner", "readings", "flagged", "duplicates", "counted", "weight", "amount"):
            a, b = getattr(listed, name), getattr(got, name)
            if a != b:
                a, b = (_h(a) if a else a, _h(b) if b else b) if name == "owner" else (a, b)
                raise Mismatch(f"board {_h(board)} {name}: the manifest says {a}, recomputed {b}")
    for owner in sorted(set(m.epoch_amounts) | set(d.epoch_amounts)):
        listed, got = m.epoch_amounts.get(owner), d.epoch_amounts.get(owner)
        _compare(f"owner {_h(owner)} epoch amount", listed, got)
    _compare("unowned", m.unowned, d.unowned)
    _compare("remainder", m.remainder, d.remainder)
    return f"{len(d.boards)} board(s), {len(d.epoch_amounts)} owner(s) paid this epoch"


def check_cumulative(m: Manifest) -> str:
    d = derive(m, leaf_outcomes(m))
    listed, got = _opt(m.previous_root), _opt(d.previous_root)
    _compare("previous root (the tree of previous.cumulative)", listed, got)
    for owner in sorted(set(m.cumulative) | set(d.cumulative)):
        _compare(f"owner {_h(owner)} cumulative", m.cumulative.get(owner), d.cumulative.get(owner))
    _compare("total", m.total, d.total)
    if m.tree != d.tree:
        raise Mismatch("tree: the listed nodes are not the tree of the cumulative amounts")
    _compare("root", _opt(m.root), _opt(d.root))
    return f"{len(d.cumulative)} owner(s), total {amount_text(d.total)}, root {_opt(d.root)}"


def _opt(b: bytes | None) -> str | None:
    return None if b is None else _h(b)


CHECKS: list[tuple[str, Callable[[Manifest], str]]] = [
    ("readings and batches", check_leaves),
    ("equivocation evidence", check_equivocations),
    ("bindings order", check_bindings_order),
    ("flags", check_flags),
    ("board figures and amounts", check_figures),
    ("cumulative amounts and root", check_cumulative),
]
