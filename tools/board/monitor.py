"""Watch a board's serial console: status lines decoded, everything else as is.

The firmware prints `TP1 EV {json}` status lines (the same JSON it publishes
on its retained MQTT status topic); they are shown as one readable line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from terrapin.tools.board.serialconsole import LINK_PREFIX, PREFIX, Link

_FIELDS = (
    ("fw", "fw {}"),
    ("seq", "seq {}"),
    ("outbox", "outbox {}"),
    ("dropped", "dropped {}"),
    ("time_synced", "clock {}"),
)


def describe(ev: dict) -> str:
    """One line for a status event: state, then the fields a hobbyist looks at."""
    parts = [str(ev.get("state", "status"))]
    addr = ev.get("addr")
    if addr:
        parts.append(f"board {addr[:8]}…")
    for key, fmt in _FIELDS:
        if key in ev:
            value = ev[key]
            if key == "time_synced":
                value = "synced" if value else "not set"
            parts.append(fmt.format(value))
    if "heap_free" in ev:
        parts.append(f"heap free {ev['heap_free'] / 1024:.1f} KB")
    errors = ev.get("errors") or []
    if errors:
        parts.append("errors: " + "; ".join(str(e) for e in errors))
    return " · ".join(parts)


def decode_line(raw: bytes) -> tuple[str, dict | None]:
    """(text to show, event dict or None) for one console line."""
    line = raw.rstrip(b"\r\n")
    if line.startswith(PREFIX + b"EV "):
        try:
            ev = json.loads(line[len(PREFIX) + 3 :])
        except ValueError:
            return line.decode("utf-8", "replace"), None
        if isinstance(ev, dict):
            return describe(ev), ev
    return line.decode("utf-8", "replace"), None


def monitor(
    link: Link,
    show: Callable[[str, dict | None], None],
    *,
    duration: float | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Show console lines until `duration` seconds pass or `stop()`; returns lines seen."""
    end = None if duration is None else time.monotonic() + duration
    seen = 0
    while not stop():
        if end is not None and time.monotonic() >= end:
            break
        if not link.fill():
            continue
        while True:
            i = link.buf.find(b"\n")
            if i < 0:
                break
            raw = bytes(link.buf[: i + 1])
            del link.buf[: i + 1]
            # A line shared with the serial uplink (serial_uplink.uart 0) also
            # carries its TPX frames: MQTT bytes, not console output.
            if raw.strip() and not raw.startswith(LINK_PREFIX):
                text, ev = decode_line(raw)
                show(text, ev)
                seen += 1
    return seen
