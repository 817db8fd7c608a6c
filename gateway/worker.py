"""Run the Processor (check -> store -> ack) in a worker process, or in-thread.

Both classes take batches with `submit(items)` and give their results back
in the same order with `result() -> BatchResult` (`ready()` says whether the
oldest one is done), so the server keeps a few batches in flight and collects
the next while they are checked and committed. The worker process ignores SIGINT/SIGTERM (the server
decides when to stop) and exits when its pipe closes, e.g. when the server
was killed; an uncommitted batch is simply never PUBACKed. A worker whose
commit keeps failing (pipeline.STORE_RETRY) sends the error and exits 1; the
server gets it as WorkerDied and the gateway exits non-zero.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import traceback
from collections import deque

from terrapin.gateway.config import GatewayConfig
from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.pipeline import BatchResult, Item, Processor

log = logging.getLogger("terrapin.gateway.worker")


class WorkerDied(TerrapinError, RuntimeError):
    pass


class LocalProcessor:
    """The Processor in the caller's thread (pipeline.workers = 0; tests)."""

    def __init__(self, cfg: GatewayConfig):
        self.processor = Processor(cfg)
        self._batches: deque[list[Item]] = deque()

    def submit(self, items: list[Item]) -> None:
        self._batches.append(items)

    def ready(self) -> bool:
        return True  # the work happens in result()

    def result(self) -> BatchResult:
        return self.processor.handle(self._batches.popleft())

    def reload(self) -> None:
        self.processor.reload_boards()

    def check_alive(self) -> None:
        pass

    def pids(self) -> list[int]:
        return []  # no worker process

    def close(self) -> None:
        self.processor.close()


def _child(conn, cfg: GatewayConfig) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    from terrapin.gateway.logs import setup_logging

    setup_logging(cfg.log.level, cfg.log.format)
    try:
        processor = Processor(cfg)
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ready", None))
    try:
        while True:
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):
                return
            if kind == "batch":
                conn.send(("result", processor.handle(payload)))
            elif kind == "reload":
                processor.reload_boards()
            elif kind == "stop":
                return
    except Exception as exc:
        # GaveUp and other TerrapinErrors are one line (the retries logged the
        # traceback); anything else goes with its traceback.
        why = str(exc) if isinstance(exc, TerrapinError) else traceback.format_exc()
        with contextlib.suppress(OSError):
            conn.send(("error", why))
        raise SystemExit(1) from None  # a non-zero exit code, whoever notices first
    finally:
        processor.close()


class ProcessorProcess:
    """The Processor in a spawned worker process."""

    def __init__(self, cfg: GatewayConfig, *, wait: bool = True, name: str = "terrapin-verify"):
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_child, args=(child, cfg), name=name, daemon=True)
        self.proc.start()
        child.close()
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        kind, payload = self._recv(timeout)
        if kind != "ready":
            raise WorkerDied(f"verify worker failed to start:\n{payload}")

    def _recv(self, timeout: float | None = None):
        waited = 0.0
        while not self._conn.poll(0.5):
            waited += 0.5
            if not self.proc.is_alive():
                raise self._died()
            if timeout is not None and waited >= timeout:
                raise WorkerDied("verify worker does not answer")
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            raise WorkerDied("verify worker closed its pipe") from None

    def ready(self) -> bool:
        """A result is waiting (answers come in the order the batches went in)."""
        return self._conn.poll(0)

    def submit(self, items: list[Item]) -> None:
        try:
            self._conn.send(("batch", items))
        except OSError as exc:
            raise WorkerDied(f"verify worker is gone: {exc}") from None

    def result(self) -> BatchResult:
        kind, payload = self._recv()
        if kind != "result":
            raise self._failed(payload)
        return payload

    def reload(self) -> None:
        try:
            self._conn.send(("reload", None))
        except OSError as exc:
            raise WorkerDied(f"verify worker is gone: {exc}") from None

    def check_alive(self) -> None:
        """Raise WorkerDied if the process has exited (one waitpid(WNOHANG))."""
        if not self.proc.is_alive():
            raise self._died()

    def _died(self) -> WorkerDied:
        why = self._last_words()
        if why is not None:
            return self._failed(why)
        p = self.proc
        return WorkerDied(f"verify worker {p.name} (pid {p.pid}) died: exit code {p.exitcode}")

    def _failed(self, why: str) -> WorkerDied:
        p = self.proc
        return WorkerDied(f"verify worker {p.name} (pid {p.pid}) failed: {why.rstrip()}")

    def _last_words(self) -> str | None:
        """The error an exited worker sent before it went (results still waiting
        ahead of it are dropped: they are never PUBACKed, the broker resends them)."""
        with contextlib.suppress(EOFError, OSError):
            while self._conn.poll(0):
                kind, payload = self._conn.recv()
                if kind == "error":
                    return payload
        return None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(("stop", None))
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self._conn.close()


def shard_of(address: bytes | None, n: int) -> int:
    """Which worker checks a board's readings: always the same one per board,
    so per-board state (key cache, highest seq, rate limit) lives in one place."""
    return address[-1] % n if address else 0


class ProcessorPool:
    """Several worker processes, readings sharded by board (pipeline.workers = N).

    Every worker writes its own transactions to the same SQLite file (WAL;
    writers take turns); the batch is PUBACKed only when all have committed.
    """

    def __init__(self, cfg: GatewayConfig, n: int):
        self.workers = [
            ProcessorProcess(cfg, wait=False, name=f"terrapin-verify-{i}") for i in range(n)
        ]
        try:
            for w in self.workers:
                w.wait_ready()
        except BaseException:
            self.close()
            raise
        # For each batch in flight, oldest first: the workers that got a part of it.
        self._pending: deque[list[ProcessorProcess]] = deque()

    def submit(self, items: list[Item]) -> None:
        n = len(self.workers)
        parts: list[list[Item]] = [[] for _ in range(n)]
        for item in items:
            parts[shard_of(item[1], n)].append(item)
        busy = []
        for w, part in zip(self.workers, parts, strict=True):
            if part:
                w.submit(part)
                busy.append(w)
        self._pending.append(busy)

    def ready(self) -> bool:
        """Every part of the oldest batch in flight is done."""
        return bool(self._pending) and all(w.ready() for w in self._pending[0])

    def result(self) -> BatchResult:
        """The oldest batch's merged result (waits for it)."""
        return merge([w.result() for w in self._pending.popleft()])

    def reload(self) -> None:
        for w in self.workers:
            w.reload()

    def check_alive(self) -> None:
        """Every worker, including those no board is sharded to (the server calls
        this on a timer, whatever the load)."""
        for w in self.workers:
            w.check_alive()

    def pids(self) -> list[int]:
        """Worker process ids in shard order (shard_of() gives a board's index)."""
        return [w.proc.pid for w in self.workers]

    def close(self) -> None:
        for w in self.workers:
            w.close()


def merge(results: list[BatchResult]) -> BatchResult:
    if not results:
        return BatchResult(acks=[])
    if len(results) == 1:
        return results[0]
    out = BatchResult(acks=[])
    for r in results:
        out.acks += r.acks
        out.stored += r.stored
        out.duplicate += r.duplicate
        for name, k in r.rejected.items():
            out.rejected[name] = out.rejected.get(name, 0) + k
        out.boards.update(r.boards)  # shards hold disjoint boards
        out.values += r.values
    return out
