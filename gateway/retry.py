"""Bounded retries for a step that failed in a way nobody planned for.

Each stage step (the store commit, closing a batch, an anchor step, a rewards
pass) knows its expected failures and keeps today's answer to them: the chain
node unreachable or the database busy is waited out without a limit, and the
stage's status says so. Anything else is a bug or a broken install, and
retrying it forever would hide it. So an unexpected failure is retried a few
times with capped, jittered backoff, each attempt logged with its error; then
`GaveUp` is raised: the stage's `run()` ends with it (or the verify worker
dies with it) and the gateway exits non-zero, so its supervisor restarts it
and the operator sees the error. Every step is written to be retried: it
commits all of its effect or none of it, so nothing is dropped or stored twice.
"""

from __future__ import annotations

import logging
import random
import sqlite3
from dataclasses import dataclass

from terrapin.gateway.errors import TerrapinError

# SQLite primary result codes the gateway waits out: SQLITE_BUSY and
# SQLITE_LOCKED (another writer holds the lock past the busy timeout) and
# SQLITE_FULL (the disk is full).
_WAITED_OUT = frozenset({5, 6, 13})


class GaveUp(TerrapinError):
    """A step failed with an unexpected error on every one of its attempts."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # tries in a row, the first included, before giving up
    first: float = 1.0  # seconds before the second try; doubles after each failure
    cap: float = 30.0  # the longest wait between two tries

    def delay(self, failures: int) -> float:
        """The wait after `failures` failures in a row: doubling, capped, then
        jittered to 50-100% so that restarted gateways do not retry in step."""
        return min(self.first * 2 ** (failures - 1), self.cap) * random.uniform(0.5, 1.0)


class Failures:
    """Counts one step's unexpected failures in a row; `failed()` says how long
    to wait before the next try, or raises GaveUp after the last one."""

    def __init__(self, what: str, policy: RetryPolicy, log: logging.Logger):
        self.what = what
        self.policy = policy
        self.log = log
        self.count = 0

    def succeeded(self) -> None:
        self.count = 0

    def failed(self, exc: BaseException) -> float:
        self.count += 1
        limit = self.policy.attempts
        error = f"{type(exc).__name__}: {exc}"
        if self.count >= limit:
            self.log.error(
                "%s failed (attempt %d of %d): %s; giving up", self.what, limit, limit, error
            )
            raise GaveUp(f"{self.what} failed {limit} times in a row: {error}") from exc
        wait = self.policy.delay(self.count)
        self.log.warning(
            "%s failed (attempt %d of %d): %s; retrying in %.1f s",
            self.what,
            self.count,
            limit,
            error,
            wait,
            exc_info=exc if self.count == 1 else None,  # the traceback once, for the bug report
        )
        return wait

    def describe(self, exc: BaseException) -> str:
        """The status text of a stage step that raised `exc` (set it before calling
        `unexpected`, which may raise GaveUp)."""
        if disk_refuses(exc):
            return f"database: {exc} (retrying without limit)"
        return f"{type(exc).__name__}: {exc} (attempt {self.count + 1} of {self.policy.attempts})"

    def unexpected(self, exc: BaseException, wait: float) -> float:
        """A stage step raised something it does not handle: the seconds to wait. A
        database that is busy, locked or full is waited out without limit (`wait`);
        anything else counts as a failure and raises GaveUp after the last."""
        if disk_refuses(exc):
            self.log.warning("%s: %s; retrying", self.what, exc)
            return wait
        return self.failed(exc)


def disk_refuses(exc: BaseException) -> bool:
    """SQLite says the database is busy, locked or full: expected, waited out."""
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(exc, sqlite3.Error) or code is None:
        return False
    return code & 0xFF in _WAITED_OUT  # extended codes carry the primary in the low byte
