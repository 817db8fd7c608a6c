"""Run the Processor (check -> store -> ack) in a worker process, or in-thread.

Both classes have `submit(items)` then `result() -> BatchResult`, one batch
at a time, so the server can collect the next batch while this one is being
checked and committed. The worker process ignores SIGINT/SIGTERM (the server
decides when to stop) and exits when its pipe closes, e.g. when the server
was killed; an uncommitted batch is simply never PUBACKed.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import traceback

from .config import GatewayConfig
from .pipeline import BatchResult, Item, Processor

log = logging.getLogger("terrapin.gateway.worker")


class WorkerDied(RuntimeError):
    pass


class LocalProcessor:
    """The Processor in the caller's thread (pipeline.workers = 0; tests)."""

    def __init__(self, cfg: GatewayConfig):
        self.processor = Processor(cfg)
        self._batch: list[Item] | None = None

    def submit(self, items: list[Item]) -> None:
        self._batch = items

    def result(self) -> BatchResult:
        batch, self._batch = self._batch, None
        return self.processor.handle(batch or [])

    def reload(self) -> None:
        self.processor.reload_boards()

    def check_alive(self) -> None:
        pass

    def close(self) -> None:
        self.processor.close()


def _child(conn, cfg: GatewayConfig) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from .logs import setup_logging

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
    except Exception:
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc()))
    finally:
        processor.close()


class ProcessorProcess:
    """The Processor in a spawned worker process (pipeline.workers = 1, the default)."""

    def __init__(self, cfg: GatewayConfig, timeout: float = 60.0):
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_child, args=(child, cfg), name="terrapin-verify", daemon=True
        )
        self.proc.start()
        child.close()
        kind, payload = self._recv(timeout)
        if kind != "ready":
            raise WorkerDied(f"verify worker failed to start:\n{payload}")

    def _recv(self, timeout: float | None = None):
        waited = 0.0
        while not self._conn.poll(0.5):
            waited += 0.5
            if not self.proc.is_alive():
                raise WorkerDied(f"verify worker exited with code {self.proc.exitcode}")
            if timeout is not None and waited >= timeout:
                raise WorkerDied("verify worker does not answer")
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            raise WorkerDied("verify worker closed its pipe") from None

    def submit(self, items: list[Item]) -> None:
        try:
            self._conn.send(("batch", items))
        except OSError as exc:
            raise WorkerDied(f"verify worker is gone: {exc}") from None

    def result(self) -> BatchResult:
        kind, payload = self._recv()
        if kind != "result":
            raise WorkerDied(f"verify worker failed:\n{payload}")
        return payload

    def reload(self) -> None:
        try:
            self._conn.send(("reload", None))
        except OSError as exc:
            raise WorkerDied(f"verify worker is gone: {exc}") from None

    def check_alive(self) -> None:
        if not self.proc.is_alive():
            raise WorkerDied(f"verify worker exited with code {self.proc.exitcode}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(("stop", None))
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self._conn.close()
