"""Times for people: local time with its age ("14:03:07 (5 min ago)"), durations.
Used by `terrapin gateway status` and `terrapin device status`."""

from __future__ import annotations

import time


def clock(ts: float, now: float) -> str:
    """Local time: '14:03:07' today, '2026-12-05 14:03' another day."""
    when = time.localtime(ts)
    same_day = time.localtime(now)[:3] == when[:3]
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M", when)


def local_time(ts: float | None, now: float | None = None) -> str:
    """'14:03:07 (5 min ago)' today, '2026-12-05 14:03 (1 d ago)' another day."""
    if not ts:
        return "never"
    now = time.time() if now is None else now
    return f"{clock(ts, now)} ({age(now - ts)})"


def age(seconds: float) -> str:
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def duration(seconds: float) -> str:
    seconds = int(seconds)
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    if d:
        return f"{d} d {h} h"
    if h:
        return f"{h} h {m} min"
    return f"{m} min {s} s" if m else f"{s} s"
