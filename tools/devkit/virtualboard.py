"""A virtual board: the firmware on the MicroPython unix port (the one runner every
test, bench, demo and `terrapin sim` uses).

Two ways to wire its console:

- `serial=False`: one process per boot, its console written to a log file per
  boot (console-N.log); the host drives boots itself: start(*args),
  power_cut() (kill -9), wait_exit(). `on_line` sees each console line as it
  arrives (e.g. to timestamp readings).
- `serial=True` (default): behind a serial line, described below.

Behind a serial line, the board process gets a pseudo-terminal as its UART (stdin, stdout and
stderr). A bridge thread copies bytes between that UART and what a host tool
opens:

- a second pseudo-terminal, whose device path (/dev/pts/N) pyserial opens
  like a USB serial adapter (`--port /dev/pts/N`);
- a TCP server socket on 127.0.0.1, the same thing QEMU's
  `-serial tcp::PORT,server` gives (`--port socket://127.0.0.1:PORT`).

Like a UART without flow control, output nobody reads is dropped, and
everything the board prints goes to a log file. When the firmware exits
(reboot, crash) the bridge starts it again, as a board resets.

By default the checkout's firmware is first deployed into the flash
directory (`terrapin device deploy --target unix`), so the board runs the
same .mpy files a real board would; `deploy=False` gives a bare board that
only has the REPL (the state after `terrapin device flash`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path

from terrapin.gateway.errors import TerrapinError
from terrapin.tools.micropython import ESP32_HEAP, micropython_command

REPO = Path(__file__).resolve().parents[2]
FIRMWARE_DIR = REPO / "firmware"
CONSOLE_MAIN = FIRMWARE_DIR / "console_main.py"
APP_MAIN = FIRMWARE_DIR / "main.py"


class VirtualBoardError(TerrapinError):
    """A virtual board did not exit in time or was not started; ends with its console."""


def _pty_pair() -> tuple[int, int]:
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    return master, slave


class VirtualBoard:
    """One virtual board. `flash_dir` is its file system; `start()` boots it.

    `cwd` is where the process runs (default the flash folder, as a board boots
    from its flash; the checkout for firmware/main.py run from source).
    `cpython` runs the script on this CPython instead (no micropython binary).
    """

    def __init__(
        self,
        flash_dir: str | Path,
        *,
        script: str | Path | None = None,
        args: tuple[str, ...] = (),
        tcp_port: int | None = 0,
        heapsize: str = ESP32_HEAP,
        log_path: str | Path | None = None,
        restart: bool = True,
        deploy: bool = True,
        serial: bool = True,
        log_dir: str | Path | None = None,
        log_prefix: str = "console",
        cwd: str | Path | None = None,
        cpython: bool = False,
        on_line: Callable[[bytes], None] | None = None,
    ):
        self.flash_dir = Path(flash_dir)
        self.flash_dir.mkdir(parents=True, exist_ok=True)
        self.script = Path(script) if script else CONSOLE_MAIN
        self.args = args
        self.serial = serial
        self.log_dir = Path(log_dir) if log_dir else self.flash_dir.parent
        self.log_prefix = log_prefix
        self.cwd = Path(cwd) if cwd else self.flash_dir
        self.cpython = cpython
        self.on_line = on_line
        self.heapsize = heapsize
        self.log_path = (
            Path(log_path)
            if log_path
            else self.flash_dir.parent / (self.flash_dir.name + ".console.log")
        )
        self.restart = restart
        self.deploy = deploy
        self._tcp_wanted = tcp_port
        self.tcp_port: int | None = None
        self.pty_path: str | None = None
        self.boots = 0
        self.exit_codes: list[int] = []
        self.proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: socket.socket | None = None
        self._lock = threading.Lock()

    # -- life cycle -----------------------------------------------------------
    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.tcp_port}"

    def start(self, *extra: str) -> VirtualBoard:
        """Boot: with a serial line, the line and the board (restarted as it resets);
        without, one boot with `extra` options after `args`."""
        if not self.serial:
            self._boot(extra)
            return self
        self.args = (*self.args, *extra)
        self._uart_m, self._uart_s = _pty_pair()
        self._host_m, self._host_s = _pty_pair()
        self.pty_path = os.ttyname(self._host_s)
        self._server = None
        if self._tcp_wanted is not None:
            self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._server.bind(("127.0.0.1", self._tcp_wanted))
            self._server.listen(1)
            self._server.setblocking(False)
            self.tcp_port = self._server.getsockname()[1]
        if self.deploy:
            # Like a board that was flashed and deployed: the firmware runs as .mpy
            # from lib/terrapin/firmware (only changed files are copied).
            from terrapin.tools.board.deploy import DirTarget, deploy

            deploy(DirTarget(self.flash_dir))
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._spawn()
        self._thread = threading.Thread(target=self._bridge, name="virtualboard", daemon=True)
        self._thread.start()
        return self

    def _command(self, *extra: str) -> list[str]:
        if self.cpython:
            return [sys.executable, "-u", str(self.script), *self.args, *extra]
        return micropython_command(str(self.script), *self.args, *extra, heapsize=self.heapsize)

    def _env(self) -> dict[str, str]:
        # The ESP32 port's sys.path is ['', '.frozen', '/lib']; the unix port's
        # is not, so say it: `micropython main.py` then finds lib/terrapin. Run
        # from the checkout (cwd elsewhere), the firmware finds its own modules.
        if self.cwd != self.flash_dir:
            return dict(os.environ)
        return {**os.environ, "MICROPYPATH": ".frozen:lib"}

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(
            self._command(),
            env=self._env(),
            stdin=self._uart_s,
            stdout=self._uart_s,
            stderr=self._uart_s,
            cwd=self.cwd,
            close_fds=True,
            start_new_session=self.cpython,
        )
        self.boots += 1

    # -- one process per boot, console to a log file per boot (serial=False) ---------
    def boot_log(self, n: int) -> Path:
        return self.log_dir / f"{self.log_prefix}-{n}.log"

    def _boot(self, extra: tuple[str, ...]) -> None:
        if self.running():
            raise VirtualBoardError(f"{self.flash_dir}: already running; power_cut() first")
        self.boots += 1
        log = self.boot_log(self.boots)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                self._command(*extra),
                env=self._env(),
                stdout=subprocess.PIPE if self.on_line else out,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                start_new_session=True,  # its own process group: the power goes for all
            )
        if self.on_line:
            threading.Thread(target=self._tee, args=(self.proc, log), daemon=True).start()

    def _tee(self, proc: subprocess.Popen, log: Path) -> None:
        with open(log, "ab") as out:
            for line in proc.stdout:
                out.write(line)
                out.flush()
                self.on_line(line)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def power_cut(self) -> bool:
        """kill -9 this boot, wherever it was (True if it was running). Behind a
        serial line the bridge notes the exit code (and boots it again if `restart`)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            if self.serial:
                proc.send_signal(signal.SIGKILL)
            else:
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if not self.serial:
            self.exit_codes.append(-9)
            self.proc = None
        return True

    def terminate(self, timeout: float = 3.0) -> None:
        """SIGTERM (the firmware says goodbye), then the power if it is still on."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                self.exit_codes.append(proc.wait(timeout))
                self.proc = None
                return
            except subprocess.TimeoutExpired:
                pass
        self.power_cut()

    def wait_exit(self, timeout: float) -> int:
        """The exit code of this boot; VirtualBoardError (with the console) on timeout."""
        proc = self.proc
        if proc is None:
            raise VirtualBoardError(f"{self.flash_dir}: not started")
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise VirtualBoardError(
                f"{self.flash_dir}: still running after {timeout:.0f} s:\n{self.console_tail()}"
            ) from None
        self.exit_codes.append(code)
        self.proc = None
        return code

    def console(self, all_boots: bool = True) -> str:
        """What the board printed: every boot, or only the last one."""
        if self.serial:
            return self.console_log()
        first = 1 if all_boots else self.boots
        logs = (self.boot_log(n) for n in range(max(first, 1), self.boots + 1))
        return "".join(p.read_text(errors="replace") for p in logs if p.exists())

    def console_tail(self, n: int = 30) -> str:
        return "\n".join(self.console().splitlines()[-n:])

    def stop(self) -> None:
        if not self.serial:
            self.power_cut()
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        for fd in (self._uart_m, self._uart_s, self._host_m, self._host_s):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._client is not None:
            self._client.close()
        if self._server is not None:
            self._server.close()
        self._log.close()

    def __enter__(self) -> VirtualBoard:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def console_log(self) -> str:
        """What the board printed so far (for test failure messages)."""
        self._log.flush()
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def wait_boots(self, n: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.boots < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"board booted {self.boots} times, expected {n}")
            time.sleep(0.05)

    # -- the bridge -----------------------------------------------------------
    def _to_host(self, data: bytes) -> None:
        self._log.write(data)
        self._log.flush()
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._host_m, data)  # dropped when nobody reads the pty
        client = self._client
        if client is not None:
            try:
                client.sendall(data)
            except OSError:
                self._drop_client()

    def _to_board(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._uart_m, view)
                view = view[n:]
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                return

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                self._sel.unregister(client)
            client.close()

    def _bridge(self) -> None:
        sel = self._sel = selectors.DefaultSelector()
        sel.register(self._uart_m, selectors.EVENT_READ, "uart")
        sel.register(self._host_m, selectors.EVENT_READ, "pty")
        if self._server is not None:
            sel.register(self._server, selectors.EVENT_READ, "accept")
        while not self._stop.is_set():
            for key, _ in sel.select(timeout=0.05):
                if key.data == "uart":
                    data = self._read(self._uart_m)
                    if data:
                        self._to_host(data)
                elif key.data == "pty":
                    data = self._read(self._host_m)
                    if data:
                        self._to_board(data)
                elif key.data == "accept":
                    conn, _ = self._server.accept()
                    conn.setblocking(True)
                    # Small request/answer exchanges: no Nagle delay (QEMU sets it too).
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self._drop_client()  # one client at a time, like QEMU
                    self._client = conn
                    sel.register(conn, selectors.EVENT_READ, "client")
                elif key.data == "client":
                    try:
                        data = key.fileobj.recv(4096)
                    except OSError:
                        data = b""
                    if data:
                        self._to_board(data)
                    else:
                        self._drop_client()
            proc = self.proc
            if proc is not None and proc.poll() is not None and not self._stop.is_set():
                self.exit_codes.append(proc.returncode)
                # Bytes still in the UART belong to the old boot.
                data = self._read(self._uart_m)
                if data:
                    self._to_host(data)
                if self.restart:
                    time.sleep(0.2)
                    self._spawn()
                else:
                    self.proc = None
        sel.close()

    @staticmethod
    def _read(fd: int) -> bytes:
        try:
            return os.read(fd, 4096)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise
