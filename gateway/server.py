"""The gateway daemon: stages wired by a bounded queue.

    ingest (paho thread) --queue--> check -> store -> ack  (pipeline.Processor)
                                    --> publish ACKs --> PUBACK to the broker

The server thread takes whatever is queued (up to pipeline.max_batch) and
hands it to the Processor (worker processes by default, see worker.py),
keeping up to PIPELINE_DEPTH batches in flight. When a batch's result comes
back (in order) it publishes one ACK per board and only then PUBACKs the
batch's messages, so the broker redelivers anything not committed.

The chain stages are named in [pipeline] stages and built by `chain_stages`
below, in this order:

    stored readings -> batch (Merkle trees) -> anchor (one tx per batch)
                    -> rewards (one distribution per ended epoch)

Each is an object with `run(shutdown: threading.Event)` and `status() -> dict`,
runs in its own thread, and shows its status under "stages" in /api/status. A
stage whose run() raises stops the gateway with exit code 1 (systemd restarts it).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque

from terrapin.gateway import homeassistant_publisher, presence
from terrapin.gateway.api import Api
from terrapin.gateway.boardstatus import KeptStatus, file_for
from terrapin.gateway.config import GatewayConfig
from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.inbox import Inbox
from terrapin.gateway.ingest import Ingest, Message
from terrapin.gateway.instancelock import InstanceLock
from terrapin.gateway.leader import Election, LeaderStages
from terrapin.gateway.pgsql import is_url
from terrapin.gateway.pipeline import BatchResult
from terrapin.gateway.quarantine import release_dir
from terrapin.gateway.sdnotify import notify, watchdog_interval
from terrapin.gateway.stats import Stats
from terrapin.gateway.storebase import open_store_waiting, store_location
from terrapin.gateway.web.access import api_token, check_access
from terrapin.gateway.worker import LocalProcessor, ProcessorPool, WorkerDied

log = logging.getLogger("terrapin.gateway")

# Batches handed to the workers and not yet finished. While they work, the
# server collects the next batch; with 2 the workers never wait for the
# server's ACK/PUBACK round.
PIPELINE_DEPTH = 2
# Seconds between checks that every verify worker process still runs. A worker
# that no board is sharded to gets no batch, so only this check notices it died.
LIVENESS_INTERVAL = 0.5


class Gateway:
    def __init__(self, cfg: GatewayConfig):
        self.cfg = cfg
        if cfg.api.enabled:  # off loopback without a token: refuse before anything starts
            check_access(cfg.api.host, api_token(cfg.api))
        # One gateway per database, before anything else touches it (instancelock.py);
        # held until run() ends, released here if building the gateway fails.
        # On PostgreSQL several instances share the database by design (docs/SCALE.md).
        self.lock = InstanceLock(cfg.store.path).acquire() if not cfg.store.url else None
        try:
            self._build(cfg)
        except BaseException:
            self.lock.release()
            raise

    def _build(self, cfg: GatewayConfig) -> None:
        self.stats = Stats()
        self.stats.kept_status = KeptStatus(file_for(cfg.store.path))  # values of offline boards
        open_store_waiting(store_location(cfg)).close()  # the schema, before anything reads it
        pc = cfg.pipeline
        self.queue = Inbox(
            pc.queue_size, rate=pc.board_rate, burst=pc.board_burst, share=pc.board_share
        )
        self.ingest = Ingest(cfg.mqtt, cfg.mqtt_password(), self.queue, on_status=self.stats.status)
        if self.ingest.quarantine is not None:  # `gateway device release` asks through here
            self.ingest.quarantine.requests = release_dir(cfg.store.path)
        self.processor: LocalProcessor | ProcessorPool | None = None
        self.api: Api | None = None
        self._reload = threading.Event()
        self.stages = elected_stages(cfg) if is_url(store_location(cfg)) else chain_stages(cfg)
        self.homeassistant = homeassistant_publisher.for_gateway(cfg, self.ingest, self.stats)
        self._failed: StageFailed | None = None  # the first stage whose run() raised

    def snapshot(self) -> dict:
        snap = self.stats.snapshot()
        snap["queue_depth"] = self.queue.qsize()
        snap["counts"]["dropped_early"] = self.ingest.dropped_total
        snap["admission"] = {
            "held": self.queue.held(),
            "dropped": {(a.hex() if a else ""): n for a, n in list(self.ingest.dropped.items())},
        }
        if self.ingest.quarantine is not None:  # broker quarantine (quarantine.py)
            snap["quarantine"] = self.ingest.quarantine.status()
        snap["store_bytes"] = _size(self.cfg.store.path)
        snap["connected"] = self.ingest.connected.is_set()
        snap["stages"] = {_name(s): s.status() for s in self.stages if hasattr(s, "status")}
        # Verify worker pids, index = shard (worker.shard_of): which process serves a board.
        snap["workers"] = self.processor.pids() if self.processor is not None else []
        return snap

    def request_reload(self) -> None:
        """Re-read the allow-list soon (SIGHUP; it is also re-read every 5 s)."""
        self._reload.set()

    def _run_stage(self, stage, shutdown: threading.Event) -> None:
        """A stage's thread: an error in it stops the whole gateway (exit code 1)."""
        name = _name(stage)
        try:
            stage.run(shutdown)
        except Exception as exc:
            reason = f"stage {name} failed: {type(exc).__name__}: {_first_line(exc)}"
            log.error("%s; stopping (exit code 1) so that the supervisor restarts it", reason)
            if self._failed is None:
                self._failed = StageFailed(
                    reason, hint="see the log lines above; systemd restarts the gateway"
                )
            shutdown.set()

    def _stop_with(self, exc: TerrapinError, shutdown: threading.Event) -> None:
        """Stop the gateway with `exc` as its error (presence.py: an earlier gateway holds
        the client id)."""
        if self._failed is None:
            self._failed = exc  # type: ignore[assignment]  # raised by run() like a stage's
        shutdown.set()

    def _next_batch(self, timeout: float) -> list[Message]:
        return self.queue.get_batch(timeout, self.cfg.pipeline.max_batch)

    def _finish(self, batch: list[Message], result: BatchResult) -> None:
        """After COMMIT: ACK messages to the boards, then PUBACKs to the broker."""
        self.stats.apply(result, len(batch), batch[0].received_at)  # committed: count it
        for topic, payload in result.acks:
            self.ingest.publish(topic, payload)
        self.ingest.ack_many(batch)
        if self.homeassistant is not None and result.values:
            self.homeassistant.publish(result.values)  # stored, committed readings only

    def run(self, shutdown: threading.Event) -> None:
        """Start every stage, serve until `shutdown`, stop them all.

        ingest (paho's thread) -> self.queue -> check -> store -> ack (self.processor)
        -> ACKs and PUBACKs (this thread); batch, anchor, rewards: a thread each."""
        cfg = self.cfg
        threads: list[threading.Thread] = []
        started = False
        try:
            # The API port first: a port in use fails before any child process exists.
            self.api = _bind_api(cfg, self.snapshot)
            # One gateway per broker client id too (presence.py): before the session starts.
            gone = presence.check(cfg.mqtt, cfg.mqtt_password(), acl_file=cfg.broker.acl_file)
            presence.attach(
                self.ingest.client,
                cfg.mqtt,
                ignore=gone,
                on_taken=lambda exc: self._stop_with(exc, shutdown),
            )
            workers = cfg.pipeline.workers
            self.processor = ProcessorPool(cfg, workers) if workers else LocalProcessor(cfg)
            if self.api is not None:
                self.api.start()
                log.info("status API on http://%s:%s/api/status", *self.api.address)
            threads = [
                threading.Thread(
                    target=self._run_stage, args=(s, shutdown), name=_name(s), daemon=True
                )
                for s in self.stages
            ]
            for t in threads:
                t.start()
            self.ingest.start()
            notify("READY=1")
            started = True
            log.info("gateway running", extra={"fields": {"db": str(cfg.store.path)}})
            self._serve(shutdown)
            if self._failed is not None:
                raise self._failed
        except WorkerDied as exc:
            # Nothing of the batches in flight is PUBACKed: the broker redelivers them
            # to the restarted gateway; what a live worker already committed comes back
            # as a duplicate and is acked again, never stored twice.
            log.error("%s; stopping (exit code 1) so that the supervisor restarts the gateway", exc)
            raise
        finally:
            # Whatever failed, stop every thread and child started so far: a verify
            # worker left behind ignores SIGTERM and keeps the process from exiting.
            notify("STOPPING=1")
            if started:
                log.info("stopping: last transaction done, disconnecting")
            shutdown.set()
            if started:  # never clear the message of a holder this one deferred to
                presence.release(self.ingest.client, cfg.mqtt)
            self.ingest.stop()
            for t in threads:
                t.join(timeout=5)
            _stop_api(self.api)
            if self.processor is not None:
                self.processor.close()
            self.lock.release()

    def _serve(self, shutdown: threading.Event) -> None:
        """Queue -> processor -> ACK + PUBACK until `shutdown`, then finish what is in flight."""
        processor = self.processor
        ping = watchdog_interval()
        next_ping = time.monotonic()
        inflight: deque[list[Message]] = deque()  # submitted, oldest first
        next_check = time.monotonic() + LIVENESS_INTERVAL
        while not shutdown.is_set():
            batch = self._next_batch(0.005 if inflight else 0.2)
            if batch:
                processor.submit([(m.topic, m.address, m.payload, m.received_at) for m in batch])
                inflight.append(batch)
            # Finish what is done. Wait for the oldest batch when the pipeline is
            # full, or when nothing new came in (then waiting costs no throughput
            # and answers the boards sooner).
            while inflight and (len(inflight) >= PIPELINE_DEPTH or not batch or processor.ready()):
                self._finish(inflight.popleft(), processor.result())
            if self._reload.is_set():
                self._reload.clear()
                processor.reload()
            # Periodic work, on the clock whatever the load (one clock read per
            # batch, not per reading).
            now = time.monotonic()
            if now >= next_check:
                processor.check_alive()  # every worker, busy or not
                next_check = now + LIVENESS_INTERVAL
            if ping and now >= next_ping:
                notify("WATCHDOG=1")
                next_ping = now + ping
        while inflight:  # finish the transactions under way, ack them
            self._finish(inflight.popleft(), processor.result())


def chain_stages(cfg: GatewayConfig) -> list:
    """The stages [pipeline] stages switches on, built from their config sections.

    Imported only when switched on: web3 and py-evm take seconds to import."""
    names = cfg.pipeline.stages
    stages: list = []
    if "batch" in names:
        from terrapin.gateway.chain.stage import batcher

        stages.append(batcher(cfg))
    # A node that does not answer at start: the stage starts when it does (when_reachable).
    if "anchor" in names:
        from terrapin.gateway.chain.stage import anchorer, when_reachable

        stages.append(when_reachable(anchorer, cfg, "Anchorer"))
    if "rewards" in names:
        from terrapin.gateway.chain.stage import when_reachable
        from terrapin.gateway.rewards.stage import rewards

        stages.append(when_reachable(rewards, cfg, "RewardsStage"))
    return stages


def _bind_api(cfg: GatewayConfig, snapshot) -> Api | None:
    """The status API's socket, bound but not serving yet; a port in use is one line."""
    if not cfg.api.enabled:
        return None
    try:
        return Api(cfg.api.host, cfg.api.port, snapshot)
    except OSError as exc:
        raise TerrapinError(
            f"cannot listen on {cfg.api.host}:{cfg.api.port} for the status API: {exc.strerror}",
            hint="another program (or gateway) uses that port: stop it, or set [api] port "
            "in gateway.toml",
        ) from None


def _stop_api(api: Api | None) -> None:
    if api is None:
        return
    if api.thread.is_alive():
        api.stop()
    else:  # bound but never served: shutdown() would wait for a loop that never ran
        api.httpd.server_close()


def elected_stages(cfg: GatewayConfig) -> list:
    """On PostgreSQL (several instances): the chain stages behind the anchorer lease, run
    by whichever instance holds it (gateway/leader.py). Built at each election."""
    if not cfg.pipeline.stages:
        return []
    election = Election(str(store_location(cfg)))
    return [LeaderStages(election, lambda: chain_stages(cfg), instance=cfg.mqtt.username)]


class StageFailed(TerrapinError):
    """A stage's run() raised: the gateway stops so that its supervisor restarts it."""


def _name(stage) -> str:
    """A stage's name in /api/status and the log (a DeferredStage: the one it waits for)."""
    return getattr(stage, "stage_name", type(stage).__name__)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


def _size(path) -> int:
    import os

    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            total += os.stat(f"{path}{suffix}").st_size
    return total
