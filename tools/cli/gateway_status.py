"""The text of `terrapin gateway status`: ingest, anchoring, rewards and boards, wrapped
to the terminal (80 columns when it is not one) at word boundaries, times as local
time and age.

Sources: the status API's snapshot, and when this machine can read the gateway's
database, its anchoring state (terrapin.gateway.metrics.read_state: the same figures
/metrics exports). Without the database the stages' own status from the API is used.
"""

from __future__ import annotations

import re
import textwrap
import time
from typing import Any

from terrapin.tools.timefmt import age, clock, duration, local_time

__all__ = ["age", "clock", "duration", "local_time", "short_hashes", "status_text"]

INDENT = 11  # "anchoring  " : the section names' column
_HASH = re.compile(r"0x([0-9a-fA-F]{8})[0-9a-fA-F]{36,}([0-9a-fA-F]{4})")


def short_hashes(text: str) -> str:
    """32-byte hashes in an error as 0x56e1e79e…dcb9, so a line needs no word cut."""
    return _HASH.sub(lambda m: f"0x{m[1]}…{m[2]}", text)


def _section(name: str, parts: list[str], width: int) -> list[str]:
    """`name` then the parts joined with ', ' under an indent. A part that does not
    fit on the line starts the next one whole ("1.1 MB" stays together); only a part
    wider than a line is wrapped, at words."""
    parts = [p for p in parts if p]
    if not parts:
        return [name]
    room = width - INDENT
    lines: list[str] = []
    prefix, current = name.ljust(INDENT), ""
    for i, part in enumerate(parts):
        text = part + ("," if i < len(parts) - 1 else "")
        candidate = f"{current} {text}" if current else text
        if len(candidate) <= room:
            current = candidate
            continue
        pieces = [text] if len(text) <= room else _words(text, room)
        if current:
            lines.append(prefix + current)
            prefix = " " * INDENT
        for piece in pieces[:-1]:
            lines.append(prefix + piece)
            prefix = " " * INDENT
        current = pieces[-1]
    lines.append(prefix + current)
    return lines


def _words(text: str, room: int) -> list[str]:
    return textwrap.wrap(text, width=room, break_long_words=False, break_on_hyphens=False)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def chain_lines(st: dict, width: int) -> list[str]:
    """The chain (network, chain id) and its node as each chain stage sees it:
    reachable, or down since when."""
    stages = {n: s for n, s in sorted((st.get("stages") or {}).items()) if s.get("node")}
    if not stages:
        return []
    first = next(iter(stages.values()))
    head = [str(first["network"])] if first.get("network") else []
    if first.get("chain_id") is not None:
        head.append(f"chain id {first['chain_id']}")
    lines = _section("chain", head, width)
    for name, stage in stages.items():
        lines += _section("", [f"{name}: node {stage['node']}"], width)
    return lines


def anchoring_lines(st: dict, db_state: dict | None, now: float, width: int) -> list[str]:
    stages = st.get("stages") or {}
    anchorer, batcher = stages.get("Anchorer"), stages.get("Batcher")
    anchoring = (db_state or {}).get("anchoring")
    if anchoring is None and anchorer is None and batcher is None:
        return _section("anchoring", ["off (no batch or anchor stage)"], width)
    parts: list[str] = []
    if anchoring is not None:
        parts.append(f"pending {_plural(anchoring['pending_readings'], 'reading')}")
        if anchoring["oldest_unanchored_at"]:
            parts.append(f"oldest {local_time(anchoring['oldest_unanchored_at'], now)}")
        b = anchoring["batches"]
        shown = [f"{v} {k}" for k, v in b.items() if v or k == "confirmed"]
        parts.append("batches: " + shown[0])
        parts += shown[1:]
        if anchoring["last_batch"] is not None:
            parts.append(
                f"last batch {anchoring['last_batch']} in block {anchoring['last_batch_block']} "
                f"at {local_time(anchoring['last_anchored_at'], now)}"
            )
        else:
            parts.append("no batch anchored yet")
        failed = {k: v for k, v in anchoring["failures"].items() if v}
        if failed:
            parts.append("failed txs " + " ".join(f"{k} {v}" for k, v in failed.items()))
    else:  # the API's stage status alone (the database is on another machine)
        if batcher:
            parts.append(f"waiting {_plural(batcher.get('waiting') or 0, 'reading')}")
        if anchorer:
            counts = anchorer.get("batches") or {}
            shown = [f"{v} {k}" for k, v in sorted(counts.items())] or ["none"]
            parts.append("batches: " + shown[0])
            parts += shown[1:]
            last = anchorer.get("last_anchored")
            parts.append(
                f"last batch {last['batch']} in block {last['block']}"
                if last
                else "no batch anchored yet"
            )
    if anchorer is None and batcher is not None:
        parts.append("the anchor stage does not run here")
    lines = _section("anchoring", parts, width)
    for name, stage in (("batch", batcher), ("anchor", anchorer)):
        error = (stage or {}).get("error")
        if error:
            lines += _section("", [f"LAST ERROR ({name}): {short_hashes(error)}"], width)
    return lines


def rewards_lines(st: dict, db_state: dict | None, now: float, width: int) -> list[str]:
    stage = (st.get("stages") or {}).get("RewardsStage")
    published = (db_state or {}).get("published_epoch")
    if stage is None and published is None:
        return _section("rewards", ["off (no rewards stage)"], width)
    parts: list[str] = []
    if stage is not None:
        parts.append(f"epoch {stage.get('current_epoch')} now")
        settled = stage.get("last_settled_epoch")
        parts.append("none settled yet" if settled is None else f"last settled {settled}")
    parts.append("none published yet" if published is None else f"last published {published}")
    if stage is not None and stage.get("next_due_at"):
        parts.append(f"next due {clock(stage['next_due_at'], now)}")
    lines = _section("rewards", parts, width)
    if stage is not None and stage.get("error"):
        lines += _section("", [f"LAST ERROR (rewards): {short_hashes(stage['error'])}"], width)
    return lines


def board_lines(st: dict, now: float, width: int) -> list[str]:
    """A table when the full address fits beside the columns; else two lines a board
    (the full address is what `terrapin device status` takes)."""
    boards = st.get("boards") or {}
    statuses = st.get("board_status") or {}
    addrs = sorted(set(boards) | set(statuses))
    if not addrs:
        return _section("boards", ["none has sent a reading since the gateway started"], width)
    wide = width >= 2 + 40 + 2 + 7 + 2 + 8 + 2 + 22 + 2 + 8
    lines = ["boards"]
    if wide:
        lines.append(
            f"  {'board':<40}  {'stored':>7}  {'last seq':>8}  {'last reading':<22}  status"
        )
    for addr in addrs:
        b = boards.get(addr, {})
        seen = local_time(b.get("last_received_at"), now)
        state = str(statuses.get(addr, {}).get("state", ""))
        stored, seq = b.get("stored", 0), b.get("last_seq", "")
        if wide:
            lines.append(f"  {addr:<40}  {stored:>7}  {seq!s:>8}  {seen:<22}  {state}".rstrip())
        else:
            lines.append(f"  {addr}  {state}".rstrip())
            lines += _section(
                "", [f"stored {stored}", f"last seq {seq}", f"last reading {seen}"], width
            )
    return lines


def status_text(st: dict[str, Any], db_state: dict | None, width: int = 80) -> str:
    now = time.time()
    c = st["counts"]
    lines = _section(
        "gateway",
        [
            f"up {duration(st['uptime_s'])} (since {clock(now - st['uptime_s'], now)})",
            "broker connected" if st.get("connected") else "broker DOWN",
            f"queue {st.get('queue_depth', 0)}",
            f"store {st.get('store_bytes', 0) / 1e6:.1f} MB",
        ],
        width,
    )
    lines += _section(
        "readings",
        [
            f"received {c['received']}",
            f"stored {c['stored']}",
            f"duplicates {c['duplicate']}",
            f"rejected {c['rejected_total']}",
            f"last stored {local_time(st.get('last_commit_at'), now)}",
        ],
        width,
    )
    rej = {k: v for k, v in c["rejected"].items() if v}
    if rej:
        lines += _section("rejected", [f"{k} {v}" for k, v in sorted(rej.items())], width)
    lines += chain_lines(st, width)
    quarantine = st.get("quarantine") or {}  # flooding boards shut out at the broker
    for addr, q in sorted(quarantine.get("active", {}).items()):
        lines.append(f"QUARANTINED at the broker: {addr}")
        lines += _section(
            "",
            [
                f"for {q['seconds_left']:.0f} s more (offence {q['offence']})",
                f"lift it: terrapin gateway device release {addr}",
            ],
            width,
        )
    if quarantine.get("broker_support") is False:
        lines += _section("", ["broker quarantine unavailable: the broker does not answer"], width)
    lines += anchoring_lines(st, db_state, now, width)
    lines += rewards_lines(st, db_state, now, width)
    lines += board_lines(st, now, width)
    return "\n".join(lines)
