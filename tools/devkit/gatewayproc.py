"""The test gateway run for benches and tests: `terrapin gateway run` as a child
process (GatewayProcess), or the same Gateway in a thread (GatewayThread).

Start it, wait until its status API says it is connected to the broker, read
that status, kill -9 it (or one of its verify workers), stop it. Used by
`terrapin bench gateway`, the gateway crash test and the HIL bench. Linux only
(the worker and CPU figures come from /proc).

    gw = GatewayProcess(home).start()  # waits until connected
    try:
        ...
    finally:
        gw.stop()  # SIGTERM, SIGKILL after 20 s; always reaps
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from terrapin.gateway.config import load_config
from terrapin.gateway.errors import TerrapinError

RUN_COMMAND = (sys.executable, "-m", "terrapin.tools.cli.main", "gateway", "run")
READY_TIMEOUT = 60.0  # s from start until connected to the broker
STOP_TIMEOUT = 20.0  # s from SIGTERM until SIGKILL
KILL_TIMEOUT = 10.0  # s for the process to go after SIGKILL
WORKER_EXIT_TIMEOUT = 15.0  # s for the gateway to exit after a worker was killed
_WILDCARD_HOSTS = ("", "0.0.0.0", "::")


class GatewayProcessError(TerrapinError):
    """The gateway process exited, did not connect or has no worker; ends with its log tail."""


class HasConfigPath(Protocol):
    """A gateway folder (e.g. one made by `terrapin gateway init`)."""

    @property
    def config_path(self) -> Path: ...


def run_command(config_path: Path) -> list[str]:
    """The argv of `terrapin gateway run --config CONFIG_PATH` in this interpreter."""
    return [*RUN_COMMAND, "--config", str(config_path)]


class GatewayProcess:
    """`terrapin gateway run` as a child process (kill -9 is real).

    `home` is the config file or a folder object with a `config_path`. The log
    (stdout and stderr, appended across starts) goes to `log`, by default
    gateway.log next to the config. `env` is added to this process's
    environment. `settle` is how long wait_ready() waits after the API first
    says connected, so that the broker's SUBACK has arrived.
    """

    def __init__(
        self,
        home: str | Path | HasConfigPath,
        *,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        settle: float = 0.2,
    ):
        self.config_path = Path(home) if isinstance(home, str | Path) else home.config_path
        self.log_path = log or self.config_path.parent / "gateway.log"
        self.env = {**os.environ, **(env or {})}
        self.settle = settle
        api = load_config(self.config_path).api
        if not api.enabled:
            raise GatewayProcessError(
                f"{self.config_path}: [api] enabled = false; nothing tells when the gateway is up"
            )
        host = "127.0.0.1" if api.host in _WILDCARD_HOSTS else api.host
        self.url = f"http://{host}:{api.port}/api/status"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, wait: bool = True, timeout: float = READY_TIMEOUT) -> GatewayProcess:
        """Start the process; with `wait`, return once it is connected (see wait_ready)."""
        if self.running():
            raise GatewayProcessError(f"the gateway (pid {self.pid}) already runs; stop it first")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                run_command(self.config_path),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.config_path.parent,
            )
        self.starts += 1
        if wait:
            self.wait_ready(timeout)
        return self

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self, timeout: float = 3.0) -> dict:
        """The gateway's /api/status (raises OSError while it does not answer)."""
        with urllib.request.urlopen(self.url, timeout=timeout) as resp:
            return json.loads(resp.read())

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> dict:
        """Until the status API says connected to the broker; returns that status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise GatewayProcessError(
                    f"the gateway exited (code {code}) before it connected; "
                    f"{self.log_path}:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError, ValueError):
                st = self.status()
                if st.get("connected"):
                    time.sleep(self.settle)
                    return st
            time.sleep(0.1)
        raise GatewayProcessError(
            f"the gateway did not connect to the broker in {timeout:.0f} s; "
            f"{self.log_path}:\n{self.log_tail()}"
        )

    def kill(self) -> None:
        """kill -9: no goodbye, no last transaction, no clean disconnect."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(KILL_TIMEOUT)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL if it is still there after `timeout` s; always reaps.

        Returns the exit code of the process it stopped (-9: it ignored SIGTERM),
        None if none was running.
        """
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def worker_pids(self) -> list[int]:
        """The verify worker processes (multiprocessing children, not its resource tracker)."""
        workers = []
        for pid in self._children():
            with contextlib.suppress(OSError):  # it may just have exited
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
                    workers.append(pid)
        return workers

    def kill_worker(self, timeout: float = WORKER_EXIT_TIMEOUT) -> int:
        """kill -9 one verify worker; the gateway must then exit by itself: its exit code."""
        proc, workers = self.proc, self.worker_pids()
        if proc is None or not workers:
            raise GatewayProcessError(
                f"the gateway has no worker process (children {self._children()}); "
                f"{self.log_path}:\n{self.log_tail()}"
            )
        os.kill(workers[0], signal.SIGKILL)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise GatewayProcessError(
                f"the gateway still runs {timeout:.0f} s after its verify worker "
                f"(pid {workers[0]}) was killed; "
                f"{self.log_path}:\n{self.log_tail()}"
            ) from None

    def cpu_seconds(self) -> tuple[float, float] | None:
        """User + system CPU so far of (the gateway process, its children); None if unknown."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        tick = os.sysconf("SC_CLK_TCK")
        try:
            main, kids = (
                sum(_cpu_ticks(p) for p in group) / tick
                for group in ([self.proc.pid], self._children())
            )
        except (OSError, ValueError, IndexError):
            return None
        return main, kids

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no gateway log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _children(self) -> list[int]:
        if self.proc is None or self.proc.poll() is not None:
            return []
        pid = self.proc.pid
        try:
            return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []


def _cpu_ticks(pid: int) -> int:
    """utime + stime of a process in clock ticks (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class GatewayThread:
    """The same gateway in a thread of this process (no process start per test):
    `Gateway(config).run(shutdown)`, workers 0 (check and store in-thread) unless given."""

    def __init__(self, cfg, workers: int | None = 0):
        from terrapin.gateway.server import Gateway

        if workers is not None:
            cfg.pipeline.workers = workers
        self.gateway = Gateway(cfg)
        self.shutdown = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="gateway")

    def _run(self) -> None:
        try:
            self.gateway.run(self.shutdown)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self, timeout: float = 10.0) -> GatewayThread:
        self.thread.start()
        if not self.gateway.ingest.connected.wait(timeout):
            raise GatewayProcessError("the gateway thread did not connect to the broker")
        time.sleep(0.2)  # let the SUBACK arrive
        return self

    def stop(self) -> None:
        self.shutdown.set()
        self.thread.join(15)
        if self.thread.is_alive():
            raise GatewayProcessError("the gateway thread did not stop")
        if self.error:
            raise self.error

    @property
    def counts(self) -> dict:
        return self.gateway.stats.snapshot()["counts"]
