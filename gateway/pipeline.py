"""check -> store -> ack for one batch of received envelopes (no MQTT here).

`Processor.handle(batch)` checks every envelope, commits all of them in one
transaction and returns the ACK messages to publish plus a stats delta. The
server calls it in its own thread or, by default, in a worker process
(worker.py) so decoding and signature checks do not compete with paho for the
GIL; either way the caller PUBACKs the batch only after `handle` returned.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from terrapin.gateway.ack import AckBuilder
from terrapin.gateway.check import Checker
from terrapin.gateway.config import GatewayConfig
from terrapin.gateway.logs import RateLimitedLog
from terrapin.gateway.policy import DEFAULT_RANGES, Policy, PolicyConfig
from terrapin.gateway.protocol.reasons import Reason, reason_text
from terrapin.gateway.protocol.signature import Verifier
from terrapin.gateway.retry import Failures, RetryPolicy, disk_refuses
from terrapin.gateway.store import DUPLICATE, STORED, Pending, Rejected
from terrapin.gateway.storebase import open_store, store_location

log = logging.getLogger("terrapin.gateway.pipeline")

# An unexpected commit failure: 5 tries over ~4-8 s, while nothing is acked.
STORE_RETRY = RetryPolicy(attempts=5, first=0.5, cap=4.0)
DISK_WAIT = 1.0  # seconds between commits while the disk is busy, locked or full

# One received envelope: (topic, board address from the topic or None, payload, received_at)
Item = tuple[str, bytes | None, bytes, float]


@dataclass
class BatchResult:
    acks: list[tuple[str, bytes]]
    stored: int = 0
    duplicate: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    # board hex -> [stored count, last seq, last time, last flags, last received_at]
    boards: dict[str, list] = field(default_factory=dict)
    # Home Assistant on: (board hex, seq, time, records) of each reading stored
    values: list[tuple[str, int, int, list]] = field(default_factory=list)


def policy_config(cfg: GatewayConfig) -> PolicyConfig:
    ranges = dict(DEFAULT_RANGES)
    ranges.update({u: (float(lo), float(hi)) for u, (lo, hi) in cfg.policy.ranges.items()})
    return PolicyConfig(
        replay_window=cfg.policy.replay_window,
        max_clock_skew=float(cfg.policy.max_clock_skew),
        max_age=float(cfg.policy.max_age),
        rate_per_minute=float(cfg.policy.rate_per_minute),
        ranges=ranges,
    )


class Processor:
    def __init__(self, cfg: GatewayConfig):
        self.store = open_store(
            store_location(cfg),
            replay_window=cfg.policy.replay_window,
            max_rejections=cfg.store.max_rejections,
        )
        self.verifier = Verifier(cfg.pipeline.verify_backend)
        devices = self.store.devices()
        for d in devices:
            if d.pubkey:
                try:
                    self.verifier.remember(d.address, d.pubkey)
                except ValueError:
                    log.warning("stored public key of %s does not match it", d.address.hex())
        self.policy = Policy(
            policy_config(cfg), (d.address for d in devices), refresh=self.store.device_addresses
        )
        self.checker = Checker(self.policy, self.verifier, on_new_key=self.store.set_pubkey)
        self.rejection_log = RateLimitedLog(log, float(cfg.log.rejection_interval))
        self._next_reload = 0.0
        self.retry = STORE_RETRY
        ha = getattr(cfg, "homeassistant", None)
        self.collect_values = bool(ha and ha.enabled)  # decoded again for stored ones only

    def close(self) -> None:
        self.store.close()

    def reload_boards(self) -> None:
        self.policy.set_boards(self.store.device_addresses())
        self._next_reload = time.monotonic() + 5.0

    def _commit(self, pending: list[Pending], rejected: list[Rejected]):
        """store.commit, retried: nothing is acked before it returns, and a failed
        transaction rolled back, so a retry neither loses nor doubles a reading.
        A busy, locked or full disk is waited out (the watchdog restarts a gateway
        stuck here); any other error is retried `self.retry.attempts` times, then
        GaveUp ends the worker and the gateway exits non-zero."""
        failures = Failures("store commit", self.retry, log)
        while True:
            try:
                return self.store.commit(pending, rejected)
            except Exception as exc:
                if disk_refuses(exc):
                    log.warning("store commit: %s; retrying (nothing acked)", exc)
                    time.sleep(DISK_WAIT)
                else:
                    time.sleep(failures.failed(exc))  # raises GaveUp after the last attempt

    def handle(self, batch: list[Item]) -> BatchResult:
        """Check, commit (retrying, see _commit), build the ACKs."""
        if time.monotonic() >= self._next_reload:
            self.reload_boards()
        pending: list[Pending] = []
        rejected: list[Rejected] = []
        check = self.checker.check
        for topic, address, payload, received_at in batch:
            out = check(topic, address, payload, received_at)
            (pending if type(out) is Pending else rejected).append(out)
        outcomes, all_rejected = self._commit(pending, rejected)
        acks = AckBuilder()
        result = BatchResult(acks=[])
        boards = result.boards
        for p, o in zip(pending, outcomes, strict=True):
            status = o.status
            if status in (STORED, DUPLICATE):
                acks.stored(p.device, p.seq)
            if status == STORED:
                result.stored += 1
                if self.collect_values:
                    result.values.append(_values(p))
                b = boards.get(p.device)
                if b is None:
                    boards[p.device] = [1, p.seq, p.time, p.flags, p.received_at]
                else:
                    b[0] += 1
                    if p.seq >= b[1]:
                        b[1:] = [p.seq, p.time, p.flags, p.received_at]
            elif status == DUPLICATE:
                result.duplicate += 1
        for r in all_rejected:
            # Rejections go back to the board when they name a seq and came on
            # that board's own topic (the broker ACL lets only it publish there).
            # UNKNOWN_BOARD is not sent back: the operator may still add the board.
            if r.seq is not None and r.device is not None and r.reason != Reason.UNKNOWN_BOARD:
                acks.rejected(r.device, r.seq, r.reason)
            result.rejected[r.reason.name] = result.rejected.get(r.reason.name, 0) + 1
            self.rejection_log.warning(
                r.reason.name,
                f"rejected: {reason_text(r.reason)}",
                board=r.device.hex() if r.device else None,
                seq=r.seq,
                detail=r.detail,
            )
        result.acks = acks.messages()
        result.boards = {k.hex(): v for k, v in boards.items()}
        return result


def _values(p: Pending) -> tuple[str, int, int, list]:
    """A stored reading's records, for Home Assistant (it passed check: it decodes)."""
    from terrapin.gateway.protocol.envelope import decode_envelope, decode_payload

    reading = decode_payload(decode_envelope(p.envelope).payload)
    return (p.device.hex(), p.seq, reading.time, [list(r) for r in reading.records])
