"""`terrapin device status ADDRESS`: one board as the gateway sees it.

Sources, each optional: the gateway's database (allow-list, readings and the
latest one's values, whether it is anchored, rejections, the rewards tables),
the running gateway's status API (the board's last retained status message: its
firmware, outbox backlog, errors), and the chain's registry (the board's owner,
`ownerOfBoard`: the database learns a binding only when the rewards stage next
syncs, so right after `device bind` only the chain knows). Reads only; SELECTs on
other stages' tables.
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
        anchor = _anchor_of(conn, last["id"]) if last else None
    finally:
        conn.close()
    return {
        "allowed": allowed is not None,
        "pubkey_known": bool(allowed and allowed.pubkey),
        "readings": count,
        "highest_seq": top,
        "last_reading_time": last.get("time") if last else None,
        "last_received_at": last.get("received_at") if last else None,
        "last_values": _values(last["envelope"]) if last else None,
        "last_anchor": anchor,
        "rejections": {reason_name(r): n for r, n in rows},
        "rewards": rewards,
    }


def _values(envelope: bytes) -> list[dict] | None:
    """The records of a stored (so already verified) envelope: name, value, unit."""
    from terrapin.gateway.protocol.envelope import EnvelopeError, decode_envelope, decode_payload

    try:
        reading = decode_payload(decode_envelope(bytes(envelope)).payload)
    except EnvelopeError:
        return None
    return [{"name": n, "value": v, "unit": u} for n, u, v in reading.records]


def _anchor_of(conn: sqlite3.Connection, reading_id: int) -> dict:
    """Where the reading stands: stored, batched (pending/sent) or anchored/confirmed."""
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not {"batches", "batch_leaves"} <= names:
        return {"state": "stored"}
    row = conn.execute(
        "SELECT b.id, b.status, b.block_number, b.tx_hash FROM batch_leaves l "
        "JOIN batches b ON b.id = l.batch_id WHERE l.reading_id = ?",
        (reading_id,),
    ).fetchone()
    if row is None:
        return {"state": "stored"}
    batch, status, block, tx = row
    out: dict = {"state": status, "batch": batch}
    if status in ("anchored", "confirmed"):
        out.update(block=block, tx="0x" + bytes(tx).hex() if tx else None)
    return out


def _rewards(conn: sqlite3.Connection, addr: bytes) -> dict | None:
    from terrapin.gateway.rewards import tables as rewards_store

    board = "0x" + addr.hex()
    try:
        overview = rewards_store.status(conn)
    except (sqlite3.Error, OSError):
        # No epoch computed here; a binding the rewards stage synced may still be.
        try:
            owner = rewards_store.boards_of(conn).get(board)
        except sqlite3.Error:
            return None
        return {"epoch": None, "owner": owner, "published": False}
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


def owner_on_chain(addr: bytes, rpc: str, registry: str) -> dict:
    """{"owner": 0x.. or None, "registry": ..} from the registry's ownerOfBoard, or
    {"error": why} when the chain cannot be asked."""
    from web3 import Web3

    from terrapin.gateway.chain.node import rpc_web3
    from terrapin.gateway.rewards import onchain as rewards_chain

    try:
        contract = rewards_chain.binding_contract(rpc_web3(rpc, timeout=10.0), registry)
        owner = contract.functions.ownerOfBoard(Web3.to_checksum_address("0x" + addr.hex())).call()
    except Exception as exc:  # unreachable node, no contract there, bad address
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    owner = owner.lower()
    return {"owner": None if int(owner, 16) == 0 else owner, "registry": registry, "rpc": rpc}


def board_status(
    addr: bytes, *, db: Path | None, api: str | None, chain: tuple[str, str] | None = None
) -> dict:
    """`chain`: (JSON-RPC URL, registry address) to ask the board's owner."""
    out: dict = {"address": addr.hex()}
    if db is not None:
        out["gateway"] = from_store(db, addr)
    if chain is not None:
        out["chain"] = owner_on_chain(addr, *chain)
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
        lines += _latest_lines(g)
        if g["rejections"]:
            rej = ", ".join(f"{k} {v}" for k, v in sorted(g["rejections"].items()))
            lines.append(f"  rejected: {rej}")
    lines += _owner_lines(r)
    if g:
        rw = g.get("rewards")
        if rw is None or rw.get("epoch") is None:
            lines.append("  rewards: none computed yet")
        else:
            lines.append(f"  rewards: epoch {rw['epoch']}")
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


def _latest_lines(g: dict) -> list[str]:
    """The latest reading: when, its values, and how far it is on its way to the chain."""
    if g.get("highest_seq") is None:
        return []
    from terrapin.tools.timefmt import local_time
    from terrapin.tools.verifier import number_text, utc

    t = g.get("last_reading_time")
    when = utc(t) if t else "board clock not set"
    lines = [
        f"  latest reading: seq {g['highest_seq']}, {when}, "
        f"received {local_time(g.get('last_received_at'))}"
    ]
    values = g.get("last_values") or []
    width = max((len(v["name"]) for v in values), default=0)
    for v in values:
        lines.append(f"    {v['name']:<{width}}  {number_text(v['value'])} {v['unit']}".rstrip())
    a = g.get("last_anchor") or {"state": "stored"}
    if a["state"] in ("anchored", "confirmed"):
        text = f"{a['state']} in batch {a['batch']}, block {a['block']} (tx {a['tx']})"
    elif a["state"] in ("pending", "sent"):
        text = f"NOT anchored yet: in batch {a['batch']} ({a['state']})"
    else:
        text = "NOT anchored yet: stored, not in a batch"
    lines.append(f"  latest reading on chain: {text}")
    return lines


def _owner_lines(r: dict) -> list[str]:
    chain = r.get("chain")
    if chain and "error" not in chain:
        owner = chain["owner"] or "not bound"
        return [f"  owner: {owner} (registry {chain['registry']}, on chain now)"]
    lines = []
    if chain:
        lines.append(f"  owner: cannot ask the chain ({chain['error']})")
    rw = (r.get("gateway") or {}).get("rewards")
    if rw and rw.get("owner"):
        lines.append(f"  owner: {rw['owner']} (as the gateway last synced it)")
    elif not chain:
        lines.append(
            "  owner: not bound as far as the gateway knows (it syncs bindings when it "
            "settles an epoch; pass --rpc URL --contract REGISTRY to ask the chain)"
        )
    return lines
