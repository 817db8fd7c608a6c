"""The serial target: a board on a serial port, driven over pyserial and TP1."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time

import pytest

from terrapin.hil.boards import BoardBase
from terrapin.tools.board.serialconsole import BoardError, RequestIds, answer_of, parse_line
from terrapin.tools.devkit.appboard import BOARD_PASSWORD
from terrapin.tools.devkit.appboard import STORED as _STORED
from terrapin.tools.devkit.gatewayhome import GatewayHome, reload_broker


class SerialBoard(BoardBase):
    """A board on a serial port, driven like a hobbyist's: pyserial and the TP1 console.

    The board must run the firmware app with its TP1 console (a real ESP32 after
    `terrapin device flash/deploy/provision`, or a virtual app board on a pty)
    and already have a config with working WiFi. The bench then:
    provision: `TP1 info` (or `keygen`) for the address and key, allow-lists it,
               `config-set` the bench's broker (the proxy), user and password,
               debug log; `reboot`.
    start(n):  `config-set sample_period_s` to the bench period and reboot; once
               the console shows n `stored seq` lines of this boot, sampling is
               switched off again (config-set + reboot: a real board has no
               --max-readings).
    wait_exit: until a `TP1 EV` status line after that says the outbox is empty.
    power_cut: --terrapin-relay-cmd off / on; reset: EN pulsed through RTS.
    --no-clock (unix only) is skipped: a real board's clock comes from NTP.
    """

    target = "serial"
    period_s = 0.5  # an ESP32 signs in ~50-90 ms; leave it room
    idle_period_s = 86400
    boot_timeout_s = 30.0  # until the app answers TP1 after a boot (QemuBoard: longer)
    request_timeout_s = 15.0  # one TP1 answer (keygen on an emulated ESP32 is slow)
    console_poll_s = 1.0  # the first `info` poll's wait for the console after a boot
    # The wait doubles up to this: an ESP32 drops console input beyond its 260-byte
    # stdin ring while the app is not reading it, so polls must not pile up there.
    console_poll_max_s = 4.0
    drain_s = 5.0  # after the console answers, how long each older poll's answer may take
    config_chunk = 1024  # config bytes per TP1 line (QemuBoard: fewer)

    def __init__(self, *a, port: str, relay_cmd: str | None = None, **kw):
        self.port = port
        self.relay_cmd = relay_cmd
        self.ser = None
        self._lines: list[bytes] = []
        self._answers: list[tuple[bytes, str | None, bytes]] = []  # (kind, id, rest)
        self.stale_answers = 0  # late answers to earlier requests, dropped
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._hold = threading.Event()  # the raw REPL has the line: the reader waits
        self._held = threading.Event()
        self.sampling_until: int | None = None  # stop after this many signed
        self.status: dict = {}
        self.status_at = 0.0
        super().__init__(*a, **kw)
        self.console_path = self.dir / "console.log"
        self._ids = RequestIds()

    def write_config(self, **over: object) -> None:
        self.overrides.update(over)  # the board's config is set over TP1, not written here

    # -- the serial line ----------------------------------------------------------
    def _open(self) -> None:
        if self.ser is not None:
            return
        from terrapin.tools.board.serialconsole import open_port

        self.ser = open_port(self.port, timeout=0.1)
        # Each opening gets its own reader, bound to that port and stop event:
        # one left over from an earlier opening can never read the new port.
        self._stop = threading.Event()
        self._reader = threading.Thread(
            target=self._read, args=(self.ser, self._stop), daemon=True, name="serialboard"
        )
        self._reader.start()

    def _read(self, ser, stop: threading.Event) -> None:
        buf = b""
        with open(self.console_path, "ab") as log:
            while not stop.is_set():
                if self._hold.is_set():
                    self._held.set()
                    time.sleep(0.02)
                    continue
                try:
                    data = ser.read(4096)
                except Exception:  # the port went away (board unplugged or reset)
                    time.sleep(0.1)
                    continue
                buf += data.replace(b"\r", b"")
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self._line(line, log)

    def _line(self, line: bytes, log) -> None:
        if line.startswith(b"TP1 EV "):
            with contextlib.suppress(ValueError):
                self.status = json.loads(line[7:])
                self.status_at = time.monotonic()
            return
        if line.startswith((b"TP1 OK", b"TP1 ERR")):
            parsed = parse_line(line)
            with self._cond:
                self._answers.append(parsed)
                self._cond.notify_all()
            return
        log.write(line + b"\n")
        log.flush()
        if self.sampling_until is not None and _STORED.match(line.decode(errors="replace")):
            with self._cond:
                self._lines.append(line)
                if len(self._lines) >= self.sampling_until:
                    self._cond.notify_all()

    def request(self, command: str, *args: str, timeout: float | None = None) -> dict:
        """One TP1 request with its own id; its JSON answer, or AssertionError naming
        the board's error. Late answers to earlier requests are dropped, never taken."""
        try:
            return self._request(command, *args, timeout=timeout)
        except BoardError as exc:  # a command the running app leaves to console mode
            if exc.code != "CONSOLE_MODE":
                raise AssertionError(f"{self.name}: TP1 {command}: {exc}") from None
        self._console_mode()
        return self._request(command, *args, timeout=timeout)

    def _console_mode(self) -> None:
        """`console`, then `info` polls until the board answers from console mode
        (docs/PROTOCOL.md section 11c); the next `reboot` runs the app again. The
        answer to `console` may not make it out before the reset (as `reboot`'s)."""
        with contextlib.suppress(AssertionError):
            self._request("console", timeout=min(self.request_timeout_s, 30.0))
        self.boots += 1
        deadline = time.monotonic() + self.boot_timeout_s
        info = self._wait_reset()
        while info.get("mode") == "app":  # an answer from before the reset
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: `console` did not reset the board")
            time.sleep(0.5)
            info = self.wait_console(timeout=deadline - time.monotonic())

    def _request(self, command: str, *args: str, timeout: float | None = None) -> dict:
        timeout = self.request_timeout_s if timeout is None else timeout
        rid = self._send(command, *args)
        answer = self._await({rid}, time.monotonic() + timeout, command)
        if answer is None:
            raise AssertionError(
                f"{self.name}: no answer to TP1 {command} on {self.port} within {timeout:.0f} s:\n"
                + self.console_tail()
            )
        return answer

    def _send(self, command: str, *args: str) -> str:
        self._open()
        assert self.ser is not None
        rid = self._ids.next()
        # The leading newline ends any piece of a line the board holds (its input
        # ring dropped the rest): the request is then a line of its own.
        self.ser.write(("\nTP1 " + " ".join((f"#{rid}", command, *args)) + "\n").encode())
        return rid

    def _await(self, ids: set[str], deadline: float, command: str) -> dict | None:
        """The answer to any request in `ids` (None at the deadline); others are stale.
        The answered id leaves `ids`."""
        with self._cond:
            while True:
                while not self._answers:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self._cond.wait(left)
                kind, got, rest = self._answers.pop(0)
                if got in ids:
                    ids.discard(got)
                    try:
                        return answer_of(got, kind, got, rest, command)
                    except BoardError as exc:
                        if exc.code == "CONSOLE_MODE":
                            raise  # request() takes the board into console mode
                        raise AssertionError(f"{self.name}: TP1 {command}: {exc}") from None
                self.stale_answers += 1

    def _config_set(self, cfg: dict) -> None:
        """The config in `config_chunk` pieces (config-begin/chunk/end, checked by
        its SHA-256, as `terrapin device provision` sends it): short lines for a
        board whose UART receive buffer a long line would overrun."""
        import base64
        import hashlib

        raw = json.dumps(cfg).encode()
        if len(raw) <= self.config_chunk:
            self.request("config-set", base64.b64encode(raw).decode())
            return
        self.request("config-begin")
        for i in range(0, len(raw), self.config_chunk):
            self.request("config-chunk", base64.b64encode(raw[i : i + self.config_chunk]).decode())
        self.request("config-end", hashlib.sha256(raw).hexdigest())

    def _reboot(self) -> None:
        with contextlib.suppress(AssertionError):
            self.request("reboot", timeout=5)
        self.boots += 1
        self._wait_reset()

    def _wait_reset(self) -> dict:
        """The console back after a reset the board did itself (`reboot`, `console`)."""
        return self.wait_console(timeout=self.boot_timeout_s)

    def wait_console(self, timeout: float) -> dict:
        """Until the app answers TP1 again after a boot: `info` polls, the wait between
        them doubling from console_poll_s to console_poll_max_s, and an answer to any of
        them counts (a slow board answers each one late). Then the drain: the answers to
        the other polls still on their way are awaited, so the next request never lands
        behind a backlog in the board's small input buffer (drain-and-sync)."""
        deadline = time.monotonic() + timeout
        polls: set[str] = set()
        wait = self.console_poll_s
        while time.monotonic() < deadline:
            polls.add(self._send("info"))
            until = min(deadline, time.monotonic() + wait)
            wait = min(wait * 2, self.console_poll_max_s)
            with contextlib.suppress(AssertionError):  # an ERR answer: not up yet
                info = self._await(polls, until, "info")
                if info is not None:
                    self._drain(polls)
                    return info
        raise AssertionError(f"{self.name}: the console did not come back:\n{self.console_tail()}")

    def _drain(self, polls: set[str]) -> None:
        """Take the answers to `polls` (each counted stale) until none is left or
        none came for drain_s: a poll sent while the board was resetting is lost."""
        while polls:
            try:
                got = self._await(polls, time.monotonic() + self.drain_s, "info")
            except AssertionError:
                got = {}  # an ERR answer to an old poll still drains it
            if got is None:
                return
            self.stale_answers += 1

    # -- the board interface ----------------------------------------------------------
    def provision(self, home: GatewayHome, broker) -> None:
        info = self.wait_console(timeout=self.boot_timeout_s)  # its answer is `info`
        if not info.get("addr"):
            info = self.request("keygen")
        self.address, self.pubkey = info["addr"], info["pub"]
        home.add_board(self.address, self.pubkey, BOARD_PASSWORD)
        reload_broker(broker)
        cfg = {
            "broker": {
                "host": self.broker_host,
                "port": self.broker_port,
                "user": self.address,
                "password": BOARD_PASSWORD,
                "keepalive_s": 10,
            },
            "sample_period_s": self.idle_period_s,
            "ack_timeout_s": 2,
            "backoff_max_s": 2,
            "status_period_s": 2,
            "log": "debug",
            **self.overrides,
        }
        self._config_set(cfg)
        self._reboot()

    def start(self, *args: str) -> None:
        if "--no-clock" in args:
            pytest.skip(
                f"target {self.target}: the board sets its clock itself (--no-clock is unix)"
            )
        n = int(args[args.index("--max-readings") + 1]) if "--max-readings" in args else -1
        with self._cond:
            self._lines.clear()
            self.sampling_until = n if n > 0 else None
        if n == 0:
            self._config_set({"sample_period_s": self.idle_period_s})
        else:
            self._config_set({"sample_period_s": self.period_s})
        self._reboot()

    def running(self) -> bool:
        return self.sampling_until is not None

    def wait_exit(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        if self.sampling_until is not None:
            with self._cond:
                while len(self._lines) < self.sampling_until:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise AssertionError(
                            f"{self.name}: signed {len(self._lines)} of {self.sampling_until} "
                            f"this boot:\n{self.console_tail()}"
                        )
                    self._cond.wait(min(left, 1))
            self.sampling_until = None
            self._config_set({"sample_period_s": self.idle_period_s})
            self._reboot()
        since = time.monotonic()
        while not (self.status_at > since and self.status.get("outbox") == 0):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: outbox not drained ({self.status.get('outbox')} pending):\n"
                    + self.console_tail()
                )
            time.sleep(0.1)
        self.exit_codes.append(0)
        return 0

    def stats(self) -> dict:
        st = self.status
        if "outbox" not in st:
            raise AssertionError(f"{self.name}: no TP1 status line seen")
        return {"pending": st["outbox"], "corrupt": st.get("corrupt", 0), "dropped": st["dropped"]}

    def power_cut(self) -> None:
        if not self.relay_cmd:
            pytest.skip(
                "target serial: a power cut needs --terrapin-relay-cmd (a relay on the supply)"
            )
        subprocess.run(self.relay_cmd.format(state="off"), shell=True, check=True)
        time.sleep(0.5)
        subprocess.run(self.relay_cmd.format(state="on"), shell=True, check=True)
        self.boots += 1
        self.exit_codes.append(-9)
        self.wait_console(timeout=self.boot_timeout_s)  # a request sent while it boots is lost

    def reset(self, *args: str) -> None:
        self._open()
        assert self.ser is not None
        self.ser.dtr = False
        self.ser.rts = True  # EN low
        time.sleep(0.1)
        self.ser.rts = False
        self.boots += 1
        self.start(*args)

    def console(self) -> str:
        return self.console_path.read_text(errors="replace") if self.console_path.exists() else ""

    def read_file(self, path: str) -> bytes:
        """A file of the board's flash, over MicroPython's raw REPL (as mpremote and
        `terrapin device deploy` do): Ctrl-C stops the app, the file comes back in
        base64, then a soft reset starts the app again, so this counts as a boot."""
        import base64

        from terrapin.tools.board.serialconsole import Link, RawRepl

        self._open()
        assert self.ser is not None
        self._held.clear()
        self._hold.set()
        self._held.wait(2)
        try:
            repl = RawRepl(Link(self.ser))
            repl.enter()
            try:
                # In 3 KB pieces: the stopped app's objects still fill the heap.
                out = repl.exec(
                    "import binascii\n"
                    f"with open({path.lstrip('/')!r}, 'rb') as f:\n"
                    " while True:\n"
                    "  b = f.read(3072)\n"
                    "  if not b: break\n"
                    "  print(binascii.b2a_base64(b).decode(), end='')"
                )
            except Exception as exc:
                problem = f"{self.name}: cannot read {path} on the board: {exc}"
                raise AssertionError(problem) from None
            finally:
                repl.soft_reset()
        finally:
            self._hold.clear()
        self.boots += 1
        self.wait_console(timeout=self.boot_timeout_s)
        return base64.b64decode(out)

    def stop(self) -> None:
        self._stop.set()
        if self._reader is not None:
            self._reader.join(2)
            self._reader = None
        if self.ser is not None:
            with contextlib.suppress(Exception):
                self.ser.close()
            self.ser = None
