"""The gateway daemon: stages wired by a bounded queue.

    ingest (MQTT thread) --queue--> check -> store (group commit) -> ack -> PUBACK

The worker takes whatever is queued (up to pipeline.max_batch), checks each
envelope, commits all of them in one transaction, publishes one ACK per
board, and only then PUBACKs the messages to the broker.

Other stages (batcher, anchor, rewards, ...) plug in as objects with
`run(shutdown: threading.Event)` and optionally `status() -> dict`; list
factories `"module:function"` in [pipeline] stages, each called as
`factory(config, gateway)` and returning a stage or None. Each runs in its
own thread; its status appears under "stages" in /api/status.
"""

from __future__ import annotations

import importlib
import logging
import queue
import threading
import time

from .ack import AckBuilder
from .api import Api
from .check import Checker
from .config import GatewayConfig
from .ingest import Ingest, Message
from .logs import RateLimitedLog
from .policy import DEFAULT_RANGES, Policy, PolicyConfig
from .reasons import Reason, reason_text
from .sdnotify import notify, watchdog_interval
from .stats import Stats
from .store import DUPLICATE, STORED, Pending, Rejected, Store
from .verify import Verifier

log = logging.getLogger("terrapin.gateway")


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


class Gateway:
    def __init__(self, cfg: GatewayConfig):
        self.cfg = cfg
        self.stats = Stats()
        self.store = Store(
            cfg.store.path,
            replay_window=cfg.policy.replay_window,
            max_rejections=cfg.store.max_rejections,
        )
        self.verifier = Verifier(cfg.pipeline.verify_backend)
        devices = self.store.devices()
        for d in devices:
            if d.pubkey:
                self.verifier.remember(d.address, d.pubkey)
        self.policy = Policy(
            policy_config(cfg), (d.address for d in devices), refresh=self.store.device_addresses
        )
        self._reload = threading.Event()
        self.checker = Checker(self.policy, self.verifier, on_new_key=self.store.set_pubkey)
        self.queue: queue.Queue[Message] = queue.Queue(cfg.pipeline.queue_size)
        self.ingest = Ingest(cfg.mqtt, cfg.mqtt_password(), self.queue, on_status=self.stats.status)
        self.rejection_log = RateLimitedLog(log, float(cfg.log.rejection_interval))
        self.api: Api | None = None
        self.stages = self._load_stages()

    def _load_stages(self) -> list:
        stages = []
        for target in self.cfg.pipeline.stages:
            module, _, attr = target.partition(":")
            stage = getattr(importlib.import_module(module), attr)(self.cfg, self)
            if stage is not None:
                stages.append(stage)
        return stages

    # --- status -----------------------------------------------------------------

    def snapshot(self) -> dict:
        snap = self.stats.snapshot()
        snap["queue_depth"] = self.queue.qsize()
        snap["store_bytes"] = self.store.size_bytes()
        snap["connected"] = self.ingest.connected.is_set()
        snap["boards_allowed"] = len(self.policy.boards)
        snap["stages"] = {type(s).__name__: s.status() for s in self.stages if hasattr(s, "status")}
        return snap

    # --- the worker ---------------------------------------------------------------

    def request_reload(self) -> None:
        """Re-read the allow-list soon (SIGHUP; it is also re-read every 5 s)."""
        self._reload.set()

    def reload_boards(self) -> None:
        self._reload.clear()
        self.policy.set_boards(self.store.device_addresses())

    def _next_batch(self, timeout: float) -> list[Message]:
        try:
            batch = [self.queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        limit = self.cfg.pipeline.max_batch
        get = self.queue.get_nowait
        try:
            while len(batch) < limit:
                batch.append(get())
        except queue.Empty:
            pass
        return batch

    def process(self, batch: list[Message], shutdown: threading.Event | None = None) -> None:
        """Check, commit, ACK, PUBACK one batch (the whole data path for it)."""
        now = time.time()
        self.stats.batch(len(batch), batch[0].received_at)
        pending: list[Pending] = []
        rejected: list[Rejected] = []
        for m in batch:
            out = self.checker.check(m.topic, m.address, m.payload, m.received_at)
            (pending if isinstance(out, Pending) else rejected).append(out)
        while True:
            try:
                outcomes, all_rejected = self.store.commit(pending, rejected)
                break
            except Exception:
                log.exception("store commit failed; retrying in 1 s (nothing acked)")
                if shutdown is None:
                    time.sleep(1.0)
                elif shutdown.wait(1.0):
                    return  # not acked: the broker redelivers after restart
        acks = AckBuilder()
        stored, dups = [], []
        for p, o in zip(pending, outcomes, strict=True):
            if o.status == STORED or o.status == DUPLICATE:
                acks.stored(p.device, p.seq)
                (stored if o.status == STORED else dups).append(p)
        for r in all_rejected:
            # Rejections go back to the board when they name a seq and came on
            # that board's own topic (the broker ACL lets only it publish there).
            # UNKNOWN_BOARD is not sent back: the operator may still add the board.
            if r.seq is not None and r.device is not None and r.reason != Reason.UNKNOWN_BOARD:
                acks.rejected(r.device, r.seq, r.reason)
            self.rejection_log.warning(
                r.reason.name,
                f"rejected: {reason_text(r.reason)}",
                board=r.device.hex() if r.device else None,
                seq=r.seq,
                detail=r.detail,
            )
        messages = acks.messages()
        for topic, payload in messages:
            self.ingest.publish(topic, payload)
        for m in batch:
            self.ingest.ack(m)
        self.stats.committed(stored, dups, all_rejected, len(messages), now)

    def run(self, shutdown: threading.Event) -> None:
        cfg = self.cfg
        if cfg.api.enabled:
            self.api = Api(cfg.api.host, cfg.api.port, self.snapshot).start()
            log.info("status API on http://%s:%s/api/status", *self.api.address)
        threads = [
            threading.Thread(target=s.run, args=(shutdown,), name=type(s).__name__, daemon=True)
            for s in self.stages
        ]
        for t in threads:
            t.start()
        self.ingest.start()
        notify("READY=1")
        ping = watchdog_interval()
        next_ping = next_reload = time.monotonic()
        log.info("gateway running", extra={"fields": {"db": str(cfg.store.path)}})
        try:
            while not shutdown.is_set():
                batch = self._next_batch(0.2)
                if batch:
                    self.process(batch, shutdown)
                if self._reload.is_set() or time.monotonic() >= next_reload:
                    self.reload_boards()
                    next_reload = time.monotonic() + 5.0
                if ping and time.monotonic() >= next_ping:
                    notify("WATCHDOG=1")
                    next_ping = time.monotonic() + ping
        finally:
            notify("STOPPING=1")
            log.info("stopping: last transaction done, disconnecting")
            self.ingest.stop()
            for t in threads:
                t.join(timeout=5)
            if self.api is not None:
                self.api.stop()
            self.store.close()
