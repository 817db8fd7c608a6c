"""Broker quarantine: stop a flooding board at Mosquitto, not in the gateway.

A board is quarantined when more than `burst` of its readings arrive within
one second (a flood: an honest board's whole outbox is ~500), or when
admission has dropped `drops` of them within `window` s (a board over its
rate for longer).

Admission (inbox.py) drops a board's readings before decode when it is over
its rate and its share, but each dropped message has still cost the gateway
its MQTT receive path (~30 µs), and a flood faster than that queues at the
broker in front of every other board. So a board that keeps being dropped is
shut out at the source: Mosquitto's dynamic security plugin
(mosquitto_dynamic_security.so, loaded by the generated mosquitto.conf beside
the password file and ACL) gets, over `$CONTROL/dynamic-security/v1`:

    createClient {username: <address hex>, textname: "terrapin quarantine until T offence K"}
    disableClient {username}

`disableClient` disconnects the board and refuses its reconnects; its password
stays in the password file, which still decides everything else (a dynsec
client with no password and no roles defers to it). After the cooldown,
`deleteClient` lets it in again. Drops in the first `window` s after each
(re)connect are not counted: that is the broker handing over what it kept
while the gateway was away, and an honest board's backlog can be bigger than
its burst. The cooldown doubles with each offence
(`cooldown`, 2x, 4x, ... up to `max_cooldown`); offences are forgotten after
OFFENCE_MEMORY s without one.

Who is quarantined is keyed on the address in the reading's topic, which the
broker ACL binds to the publisher's own user name: a board can only ever get
itself quarantined. The decision, the expiry and the offence count live in
the client's textname, so a restarted gateway (or broker) picks them up again
(`listClients` on every connect).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("terrapin.gateway.quarantine")

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
MARK = "terrapin quarantine"  # textname prefix: the dynsec clients this module owns
OFFENCE_MEMORY = 86400.0  # s without an offence after which a board starts again at 1
ANSWER_TIMEOUT = 5.0  # s to wait for the broker's first answer before saying it has no dynsec
TICK = 0.25  # s between expiry checks
RELEASE_DIR = "quarantine-release"  # beside the database: `device release` drops a file here


def release_dir(store_path: str | Path) -> Path:
    """The folder `terrapin gateway device release` asks through: one empty file per
    board (its address in hex). Whoever may write beside the database may lift a
    quarantine; the status API stays read-only."""
    return Path(store_path).parent / RELEASE_DIR


def request_release(store_path: str | Path, board: bytes) -> Path:
    """Ask the running gateway to lift `board`'s quarantine (within TICK s)."""
    d = release_dir(store_path)
    d.mkdir(mode=0o700, exist_ok=True)
    f = d / board.hex()
    f.touch()
    return f


@dataclass(slots=True)
class Entry:
    until: float  # Unix time the cooldown ends
    offence: int
    drops: int  # readings (or early drops) that triggered it
    since: float
    owned: bool = True  # False: the dynsec client existed before (never deleted, only enabled)


class Quarantine:
    """Counts each board's readings and early drops; past `burst` readings in a second,
    or `drops` drops within `window` s, it is quarantined at the broker."""

    def __init__(
        self,
        send: Callable[[bytes], None],
        *,
        on_quarantine: Callable[[bytes], None] | None = None,
        drops: int,
        window: float,
        burst: int,
        cooldown: float,
        max_cooldown: float,
        clock: Callable[[], float] = time.time,
    ):
        self._send = send
        self._on_quarantine = on_quarantine
        self.drops, self.window, self.burst = drops, window, burst
        self.cooldown, self.max_cooldown = cooldown, max(cooldown, max_cooldown)
        self._clock = clock
        self._lock = threading.Lock()
        self._counting: dict[bytes, tuple[float, int]] = {}  # board -> (window start, drops)
        self._arriving: dict[bytes, tuple[float, int]] = {}  # board -> (second start, readings)
        self._offences: dict[bytes, tuple[int, float]] = {}  # board -> (count, last at)
        self.active: dict[bytes, Entry] = {}
        self.quarantined_total = 0
        self.released_total = 0
        self.broker_support: bool | None = None  # None: not known yet
        self._asked_at: float | None = None
        self._grace_until = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.requests: Path | None = None  # release_dir(); set by the server

    # --- paho's thread ----------------------------------------------------------

    def note_arrival(self, board: bytes, now: float) -> None:
        """One reading of `board` received: more than `burst` in one second is a flood
        (an honest board's whole outbox is ~500), quarantined before its burst and
        share have even passed admission."""
        start, n = self._arriving.get(board, (now, 0))
        if now - start >= 1.0:
            start, n = now, 0
        self._arriving[board] = (start, n + 1)
        if n >= self.burst and board not in self.active and now >= self._grace_until:
            self._arriving.pop(board, None)
            self._impose(board, n + 1, now, f"{n + 1} readings within 1 s")

    def note_drop(self, board: bytes, now: float) -> None:
        """One reading of `board` dropped by admission; quarantine it past the limit."""
        if board in self.active or now < self._grace_until:
            return  # its backlog at the broker, still draining; or the session's backlog
        start, n = self._counting.get(board, (now, 0))
        if now - start > self.window:
            start, n = now, 0
        n += 1
        if n < self.drops:
            self._counting[board] = (start, n)
            return
        self._counting.pop(board, None)
        self._impose(board, n, now, f"{n} readings dropped by admission within {self.window:g} s")

    def on_connect(self) -> None:
        """Ask the broker which boards are quarantined (a restart keeps them there)."""
        self._grace_until = self._clock() + self.window
        self._command([{"command": "listClients", "verbose": True, "correlationData": "resume"}])

    def on_response(self, payload: bytes) -> None:
        try:
            responses = json.loads(payload)["responses"]
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable answer from the broker's dynamic security plugin")
            return
        if self.broker_support is not True:
            self.broker_support = True
            log.info("broker quarantine available (Mosquitto dynamic security plugin)")
        for r in responses if isinstance(responses, list) else []:
            if isinstance(r, dict):
                self._answer(r)

    # --- the expiry thread --------------------------------------------------------

    def start(self) -> None:
        if self.requests is not None:  # made by the gateway's user, so it can read it
            with contextlib.suppress(OSError):
                self.requests.mkdir(mode=0o700, exist_ok=True)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="quarantine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.wait(TICK):
            now = self._clock()
            for board in [b for b, e in list(self.active.items()) if e.until <= now]:
                self.release(board, why="cooldown over")
            if self.requests is not None:
                self._release_requested(self.requests)
            asked = self._asked_at
            if self.broker_support is None and asked is not None and now - asked > ANSWER_TIMEOUT:
                self.broker_support = False
                log.warning(
                    "the broker does not answer on %s: no broker quarantine, a flooding "
                    "board is only dropped by admission (regenerate mosquitto.conf and the "
                    'ACL with `terrapin gateway init`, docs/GATEWAY.md "Quarantine")',
                    CONTROL_TOPIC,
                )

    # --- decisions ----------------------------------------------------------------

    def _release_requested(self, folder: Path) -> None:
        with contextlib.suppress(OSError):  # no folder yet: nothing asked
            for f in folder.iterdir():
                board = _board(f.name)
                if board is not None and not self.release(board):
                    log.warning("release asked for a board that is not quarantined: %s", f.name)
                with contextlib.suppress(OSError):
                    f.unlink()

    def release(self, board: bytes, *, why: str = "released by the operator") -> bool:
        """Let `board` connect again now; False if it was not quarantined."""
        with self._lock:
            entry = self.active.pop(board, None)
        if entry is None:
            return False
        user = board.hex()
        # Ours: delete it (the password file decides again); someone else's: re-enable it.
        self._command(
            [{"command": "deleteClient" if entry.owned else "enableClient", "username": user}]
        )
        self.released_total += 1
        log.warning(
            "board released from broker quarantine (%s)",
            why,
            extra={"fields": {"board": user, "offence": entry.offence}},
        )
        return True

    def _impose(self, board: bytes, drops: int, now: float, why: str) -> None:
        count, last = self._offences.get(board, (0, now))
        if now - last > OFFENCE_MEMORY:
            count = 0
        count += 1
        self._offences[board] = (count, now)
        seconds = min(self.max_cooldown, self.cooldown * 2 ** (count - 1))
        entry = Entry(until=now + seconds, offence=count, drops=drops, since=now)
        with self._lock:
            self.active[board] = entry
        user = board.hex()
        self._command(
            [
                {
                    "command": "createClient",
                    "username": user,
                    "textname": f"{MARK} until {entry.until:.0f} offence {count}",
                    "correlationData": user,
                },
                {"command": "disableClient", "username": user},
            ]
        )
        self.quarantined_total += 1
        if self._on_quarantine is not None:
            self._on_quarantine(board)
        log.warning(
            "board quarantined at the broker for %.0f s (offence %d): %s",
            seconds,
            count,
            why,
            extra={"fields": {"board": user, "until": round(entry.until)}},
        )

    def _answer(self, r: dict) -> None:
        cmd, err = r.get("command"), r.get("error")
        if cmd == "createClient" and err == "Client already exists":
            board = _board(r.get("correlationData"))
            entry = self.active.get(board) if board else None
            if entry is not None:
                entry.owned = False  # someone else's dynsec client: only disable/enable it
        elif cmd == "listClients" and r.get("correlationData") == "resume" and not err:
            self._resume(r.get("data", {}).get("clients", []))
        elif err:
            log.warning(
                "the broker refused a quarantine command",
                extra={"fields": {"command": cmd, "error": str(err)[:200]}},
            )

    def _resume(self, clients: list) -> None:
        """Quarantines this gateway imposed before it (or the broker) restarted."""
        now = self._clock()
        for c in clients if isinstance(clients, list) else []:
            text = c.get("textname", "") if isinstance(c, dict) else ""
            board = _board(c.get("username")) if isinstance(c, dict) else None
            parts = text.split() if isinstance(text, str) else []
            if board is None or not text.startswith(MARK) or len(parts) != 6:
                continue
            try:
                until, offence = float(parts[3]), int(parts[5])
            except ValueError:
                continue
            with self._lock:
                if board not in self.active:
                    self.active[board] = Entry(until, offence, 0, now)
            self._offences[board] = (max(offence, self._offences.get(board, (0, 0))[0]), now)

    def _command(self, commands: list[dict]) -> None:
        if self._asked_at is None:
            self._asked_at = self._clock()
        self._send(json.dumps({"commands": commands}).encode())

    def status(self) -> dict:
        now = self._clock()
        with self._lock:
            active = {
                b.hex(): {
                    "seconds_left": round(max(0.0, e.until - now), 1),
                    "until": round(e.until),
                    "offence": e.offence,
                    "drops": e.drops,
                }
                for b, e in self.active.items()
            }
        return {
            "broker_support": self.broker_support,
            "quarantined_total": self.quarantined_total,
            "released_total": self.released_total,
            "active": active,
        }


def _board(user) -> bytes | None:
    """A board's 20-byte address from its broker user name (40 hex digits), else None."""
    if not isinstance(user, str) or len(user) != 40:
        return None
    try:
        return bytes.fromhex(user)
    except ValueError:
        return None
