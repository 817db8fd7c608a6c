"""One thin board class per target, all with the same interface.

    board.provision(home, broker)   boot once: key made on the board; allow-list it
    board.start(*args)              boot (power on) with firmware/main.py options
    board.power_cut()               kill -9: the power goes at whatever point it was
    board.reset(*args)              power cut, then boot again
    board.wait_exit(timeout)        the exit code of this boot
    board.console()                 everything it printed, every boot
    board.read_file(path)           a file of its flash
    board.signed()                  every seq it signed (its console's "stored seq N")

unix:   the firmware on the MicroPython unix port, one process per boot.
socket: the same firmware, reached only through a TCP serial socket (what QEMU's
        `-serial tcp::PORT,server` gives); its MQTT stream goes over that serial
        line to the host bridge (serialbridge.py), as a board without WiFi.
serial: a real ESP32 on --port (reset by DTR/RTS, power by --relay-cmd).
qemu:   Espressif's qemu-system-xtensa -M esp32 with the console on -serial tcp.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from terrapin.tools.micropython import micropython_command

from .bench import REPO, GatewayHome, reload_broker

MAIN = REPO / "firmware" / "main.py"
SERIAL_MAIN = Path(__file__).resolve().parent / "mp_serial_board.py"
_STORED = re.compile(r"^\[debug\] stored seq (\d+) ", re.M)
_ADDR = re.compile(r"^\[info\] board address ([0-9a-f]{40})", re.M)
_PUB = re.compile(r"^\[info\] public key (04[0-9a-f]{128})", re.M)
BOARD_PASSWORD = "hil-bench-board-password"  # the bench's own broker; not a secret


class BoardBase:
    target = "?"

    def __init__(self, name: str, workdir: Path, broker: tuple[str, int], **config: object):
        self.name = name
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "config.json"
        self.flash = self.dir / "flash"
        self.broker_host, self.broker_port = broker
        self.overrides = dict(config)
        self.address = ""
        self.pubkey = ""
        self.boots = 0
        self.exit_codes: list[int] = []
        self.write_config()

    # -- config and provisioning ------------------------------------------------
    def write_config(self, **over: object) -> None:
        self.overrides.update(over)
        cfg: dict = {
            "broker": {
                "host": self.broker_host,
                "port": self.broker_port,
                "keepalive_s": 10,
            },
            "sample_period_s": 0.05,
            "sensors": [{"driver": "simulated"}],
            "ack_timeout_s": 2,
            "backoff_max_s": 2,
            "status_period_s": 5,
            "log": "debug",
        }
        if self.address:
            cfg["broker"].update(user=self.address, password=BOARD_PASSWORD)
        cfg.update(self.overrides)
        self.config_path.write_text(json.dumps(cfg))

    def provision(self, home: GatewayHome, broker) -> None:
        """First boot makes the key on the board; the gateway allow-lists it."""
        self.start("--max-readings", "0", "--exit-when-drained")
        self.wait_exit(30)
        text = self.console()
        addr, pub = _ADDR.search(text), _PUB.search(text)
        if not addr or not pub:
            raise AssertionError(f"{self.name}: no address on the console:\n{text[-2000:]}")
        self.address, self.pubkey = addr.group(1), pub.group(1)
        home.add_board(self.address, self.pubkey, BOARD_PASSWORD)
        reload_broker(broker)
        self.write_config()

    # -- what every target derives from the console ------------------------------
    def signed(self) -> list[int]:
        """Every seq the board reported as signed and written to its outbox (all boots)."""
        return [int(m) for m in _STORED.findall(self.console())]

    def stats(self) -> dict:
        """The TP-STATS line of the last boot that printed one."""
        lines = [ln for ln in self.console().splitlines() if ln.startswith("TP-STATS ")]
        if not lines:
            raise AssertionError(f"{self.name}: no TP-STATS line:\n{self.console()[-2000:]}")
        return json.loads(lines[-1][9:])

    def read_file(self, path: str) -> bytes:
        return (self.flash / path).read_bytes()

    def reset(self, *args: str) -> None:
        self.power_cut()
        self.start(*args)

    def console_tail(self, n: int = 30) -> str:
        return "\n".join(self.console().splitlines()[-n:])

    # target-specific
    def start(self, *args: str) -> None:
        raise NotImplementedError

    def power_cut(self) -> None:
        raise NotImplementedError

    def wait_exit(self, timeout: float) -> int:
        raise NotImplementedError

    def running(self) -> bool:
        raise NotImplementedError

    def console(self) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        self.power_cut()


class UnixBoard(BoardBase):
    """The firmware on the MicroPython unix port; one process per boot."""

    target = "unix"
    heapsize = "100k"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.proc: subprocess.Popen[bytes] | None = None

    def _log(self, n: int) -> Path:
        return self.dir / f"console-{n}.log"

    def start(self, *args: str) -> None:
        self.boots += 1
        cmd = micropython_command(
            str(MAIN), "--config", str(self.config_path), "--flash", str(self.flash), *args,
            heapsize=self.heapsize,
        )  # fmt: skip
        with open(self._log(self.boots), "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def power_cut(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.exit_codes.append(-9)
        self.proc = None

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None, "board not started"
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name}: still running after {timeout:.0f} s:\n{self.console_tail()}"
            ) from None
        self.exit_codes.append(code)
        self.proc = None
        return code

    def console(self) -> str:
        return "".join(
            self._log(n).read_text(errors="replace")
            for n in range(1, self.boots + 1)
            if self._log(n).exists()
        )


_MPY_READY = False


def compile_firmware() -> None:
    """firmware/main.py compiles the checkout to .mpy on its first run (then exits 2:
    no --config). The socket target's board script imports those .mpy files."""
    global _MPY_READY
    if not _MPY_READY:
        subprocess.run(micropython_command(str(MAIN)), cwd=REPO, capture_output=True, timeout=120)
        _MPY_READY = True


class SocketBoard(BoardBase):
    """The firmware on the unix port behind a TCP serial socket, uplink over serial."""

    target = "socket"
    heapsize = "100k"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.vb = None
        self.bridge = None
        self.console_path = self.dir / "console.log"

    def start(self, *args: str) -> None:
        from terrapin.tools.virtualboard import VirtualBoard

        from .serialbridge import SerialBridge

        compile_firmware()
        self.boots += 1
        self.vb = VirtualBoard(
            self.dir / "uart",
            script=SERIAL_MAIN,
            args=(str(REPO), "--config", str(self.config_path), "--flash", str(self.flash), *args),
            tcp_port=0,
            heapsize=self.heapsize,
            log_path=self.dir / f"uart-{self.boots}.log",
            restart=False,
            deploy=False,
        ).start()
        # The host side: pyserial on the board's TCP serial socket.
        self.bridge = SerialBridge(self.vb.url, self.console_path).start()

    def running(self) -> bool:
        return self.vb is not None and self.vb.proc is not None and self.vb.proc.poll() is None

    def _shutdown(self) -> None:
        if self.bridge is not None:
            self.bridge.stop()
            self.bridge = None
        if self.vb is not None:
            self.vb.stop()
            self.vb = None

    def power_cut(self) -> None:
        if self.vb is None:
            return
        proc = self.vb.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            self.exit_codes.append(-9)
        self._shutdown()

    def wait_exit(self, timeout: float) -> int:
        assert self.vb is not None, "board not started"
        deadline = time.monotonic() + timeout
        while not self.vb.exit_codes:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: still running after {timeout:.0f} s:\n{self.console_tail()}"
                )
            time.sleep(0.05)
        code = self.vb.exit_codes[-1]
        time.sleep(0.1)  # the bridge reads the last console lines
        self._shutdown()
        self.exit_codes.append(code)
        return code

    def console(self) -> str:
        if self.bridge is not None:
            self.bridge.flush()
        if not self.console_path.exists():
            return ""
        return self.console_path.read_text(errors="replace")

    def stop(self) -> None:
        self.power_cut()


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
    power_cut: --relay-cmd off / on; reset: EN pulsed through RTS.
    --no-clock (unix only) is skipped: a real board's clock comes from NTP.
    """

    target = "serial"
    period_s = 0.5  # an ESP32 signs in ~50-90 ms; leave it room
    idle_period_s = 86400

    def __init__(self, *a, port: str, relay_cmd: str | None = None, **kw):
        self.port = port
        self.relay_cmd = relay_cmd
        self.ser = None
        self._lines: list[bytes] = []
        self._answers: list[bytes] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self.sampling_until: int | None = None  # stop after this many signed
        self.status: dict = {}
        self.status_at = 0.0
        super().__init__(*a, **kw)
        self.console_path = self.dir / "console.log"

    def write_config(self, **over: object) -> None:
        self.overrides.update(over)  # the board's config is set over TP1, not written here

    # -- the serial line ----------------------------------------------------------
    def _open(self) -> None:
        if self.ser is not None:
            return
        from terrapin.tools.serialconsole import open_port

        self.ser = open_port(self.port, timeout=0.1)
        self._stop.clear()
        threading.Thread(target=self._read, daemon=True, name="serialboard").start()

    def _read(self) -> None:
        buf = b""
        with open(self.console_path, "ab") as log:
            while not self._stop.is_set() and self.ser is not None:
                try:
                    data = self.ser.read(4096)
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
            with self._cond:
                self._answers.append(line)
                self._cond.notify_all()
            return
        log.write(line + b"\n")
        log.flush()
        if self.sampling_until is not None and _STORED.match(line.decode(errors="replace")):
            with self._cond:
                self._lines.append(line)
                if len(self._lines) >= self.sampling_until:
                    self._cond.notify_all()

    def request(self, command: str, *args: str, timeout: float = 15.0) -> dict:
        """One TP1 request; its JSON answer, or AssertionError naming the board's error."""
        self._open()
        assert self.ser is not None
        with self._cond:
            self._answers.clear()
        self.ser.write(("TP1 " + " ".join((command, *args)) + "\n").encode())
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._answers:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.name}: no answer to TP1 {command} on {self.port}")
                self._cond.wait(left)
            answer = self._answers.pop(0)
        if answer.startswith(b"TP1 ERR"):
            raise AssertionError(f"{self.name}: TP1 {command}: {answer.decode(errors='replace')}")
        return json.loads(answer[7:] or b"{}")

    def _config_set(self, cfg: dict) -> None:
        import base64

        self.request("config-set", base64.b64encode(json.dumps(cfg).encode()).decode())

    def _reboot(self) -> None:
        with contextlib.suppress(AssertionError):
            self.request("reboot", timeout=5)
        self.boots += 1
        self.wait_console(timeout=30)

    def wait_console(self, timeout: float) -> None:
        """Until the app answers TP1 again after a boot."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(AssertionError):
                self.request("info", timeout=1)
                return
        raise AssertionError(f"{self.name}: the console did not come back:\n{self.console_tail()}")

    # -- the board interface ----------------------------------------------------------
    def provision(self, home: GatewayHome, broker) -> None:
        self.wait_console(timeout=30)
        info = self.request("info")
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
            pytest.skip("target serial: a real board's clock comes from NTP (--no-clock is unix)")
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
            pytest.skip("target serial: a power cut needs --relay-cmd (a relay on the supply)")
        subprocess.run(self.relay_cmd.format(state="off"), shell=True, check=True)
        time.sleep(0.5)
        subprocess.run(self.relay_cmd.format(state="on"), shell=True, check=True)
        self.boots += 1
        self.exit_codes.append(-9)

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
        pytest.skip("target serial: reading the board's flash needs the raw REPL (not wired)")

    def stop(self) -> None:
        self._stop.set()
        if self.ser is not None:
            with contextlib.suppress(Exception):
                self.ser.close()
            self.ser = None
