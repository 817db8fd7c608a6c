"""`terrapin device status ADDRESS`: one board as the gateway sees it.

Three sources, each optional: the gateway's database (allow-list, readings,
rejections, and the rewards tables when rewards were computed), and the
running gateway's status API (the board's last retained status message: its
firmware, outbox backlog, errors). Reads only; SELECTs on other stages' tables.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from pathlib import Path

from terrapin.gateway.errors import TerrapinError


def parse_address(text: str) -> bytes:
    raw = text.strip().lower().removeprefix("0x")
    try:
        addr = bytes.fromhex(raw)
    except ValueError:
        addr = b""
    if len(addr) != 20:
        raise TerrapinError(f"{text!r} is not a board address", hint="40 hex characters")
    return addr


def from_store(db: Path, addr: bytes) -> dict:
    from terrapin.gateway.protocol.reasons import reason_name
    from terrapin.gateway.store import Store

    if not Path(db).exists():
        raise TerrapinError(f"no gateway database at {db}")
    store = Store(db)
    try:
        allowed = {d.address: d for d in store.devices()}.get(addr)
        count = store.count_readings(addr)
        top = store.highest_seq(addr)
        last = store.reading(addr, top) if top is not None else None
    finally:
        store.close()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT reason, COUNT(*) FROM rejections WHERE device = ? GROUP BY reason", (addr,)
        ).fetchall()
        rewards = _rewards(conn, addr)
    finally:
        conn.close()
    return {
        "allowed": allowed is not None,
        "pubkey_known": bool(allowed and allowed.pubkey),
        "readings": count,
        "highest_seq": top,
        "last_reading_time": last.get("time") if last else None,
        "last_received_at": last.get("received_at") if last else None,
        "rejections": {reason_name(r): n for r, n in rows},
        "rewards": rewards,
    }


def _rewards(conn: sqlite3.Connection, addr: bytes) -> dict | None:
    try:
        from terrapin.gateway.rewards import tables as rewards_store

        overview = rewards_store.status(conn)
    except (ImportError, sqlite3.Error, OSError):
        return None  # no rewards computed in this database
    board = "0x" + addr.hex()
    owner = overview.get("boards", {}).get(board)
    out = {"epoch": overview.get("epoch"), "owner": owner, "published": overview.get("published")}
    if owner:
        amounts = overview.get("owners", {}).get(owner, {})
        out["owner_epoch_amount"] = amounts.get("epoch_amount", "0")
        out["owner_cumulative"] = amounts.get("cumulative", "0")
    return out


def from_api(url: str, addr: bytes, timeout: float = 3.0) -> tuple[bool, dict | None]:
    """(gateway answered, the board's last status message or None)."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/api/status", timeout=timeout) as r:
            data = json.loads(r.read())
    except (OSError, ValueError):
        return False, None
    return True, (data.get("board_status") or {}).get(addr.hex())


def board_status(addr: bytes, *, db: Path | None, api: str | None) -> dict:
    out: dict = {"address": addr.hex()}
    if db is not None:
        out["gateway"] = from_store(db, addr)
    if api:
        up, status = from_api(api, addr)
        out["board"] = status
        out["gateway_api"] = "up" if up else f"not answering at {api}"
    return out


def as_text(r: dict) -> str:
    lines = [f"board {r['address']}"]
    g = r.get("gateway")
    if g:
        lines.append(
            f"  allowed: {'yes' if g['allowed'] else 'NO'}"
            f" (public key {'known' if g['pubkey_known'] else 'unknown'})"
        )
        lines.append(f"  readings stored: {g['readings']}, highest seq {g['highest_seq']}")
        if g["rejections"]:
            rej = ", ".join(f"{k} {v}" for k, v in sorted(g["rejections"].items()))
            lines.append(f"  rejected: {rej}")
        rw = g.get("rewards")
        if rw is None:
            lines.append("  rewards: none computed yet")
        else:
            lines.append(f"  rewards: epoch {rw['epoch']}, owner {rw['owner'] or 'not bound'}")
            if rw.get("owner"):
                from terrapin.tools.tokens import amount_text

                lines.append(
                    f"    owner earned {amount_text(rw['owner_epoch_amount'])} this epoch, "
                    f"{amount_text(rw['owner_cumulative'])} in total"
                )
    if "gateway_api" in r:
        b = r.get("board")
        if b:
            from terrapin.tools.board.monitor import describe

            lines.append("  last status: " + describe(b))
        else:
            lines.append(f"  last status: none ({r['gateway_api']})")
    return "\n".join(lines)
