"""Running the real firmware as a virtual board for the board bench.

`BoardRunner` owns one Mosquitto, a responder that acks every reading at once
(no checks: this measures the board), and a flash snapshot of a board that has
already made its key: every measured run starts from a copy of it, so each one
is the same boot plus `readings` readings (key generation happens once in a
board's life and is not part of a run).

`BoardRunner.run(heapsize, harness=None)` runs firmware/main.py, or a harness
(HARNESS filled with a patch, see `harness()`), under `-X heapsize=<bytes>`
and returns a `BoardRun`, or None when the board ran out of memory (a
MemoryError at boot, or the firmware's own "out of memory" line: the run is
stopped there rather than left to limp along).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.protocol.ack import encode_ack
from terrapin.gateway.protocol.envelope import decode_envelope, decode_payload
from terrapin.gateway.protocol.topics import READING_FILTER, ack_topic, topic_address
from terrapin.tools.devkit.broker import Mosquitto
from terrapin.tools.micropython import ESP32_HEAP, ESP32_HEAP_BYTES, micropython_command

REPO = Path(__file__).resolve().parents[2]
MAIN = REPO / "firmware" / "main.py"
PERIOD_MS = 5  # the board's sampling period in every run
# A heap too small shows as one of these: firmware/app.py's line for a caught
# MemoryError, an uncaught one's traceback, or a caught one's message (boot
# logs "key: memory allocation failed, ...").
OUT_OF_MEMORY = ("out of memory", "MemoryError", "memory allocation failed")

# The firmware started the way firmware/main.py starts a checkout (cwd = the
# repository: .mpy files from .cache/mpy-<abi>), with PATCH run on the loaded
# firmware.app first. Patches print tagged lines that BoardRun keeps.
HARNESS = """
import gc, os, sys, time
if os.system("'%s' firmware/checkout.py" % sys.executable) == 0:
    sys.path.insert(0, ".cache/mpy-%d" % sys.implementation._mpy)
else:
    sys.path.append(".")
from firmware import app
#PATCH
gc.collect()
from firmware.board import unix
code = unix.main()
if code:
    sys.exit(code)
"""

# Prints `TP-T <reading us> <us since the first reading ended>` for every
# reading: the firmware keeps only its last 64 reading times, the bench wants
# all of them. The print is outside the timed part of a reading.
TIMING_PATCH = """
_once = app.App._once
_first = []
def _timed_once(self, *args):
    n = self.time_n
    code = _once(self, *args)
    if self.time_n != n:
        now = time.ticks_us()
        if not _first:
            _first.append(now)
        print("TP-T", self.times[n % len(self.times)], time.ticks_diff(now, _first[0]))
    return code
app.App._once = _timed_once
"""

# Holds a bytearray of the given size while each reading is taken: a known
# transient, to check that a peak-heap figure sees it.
TRANSIENT_PATCH = """
_sample = app.App.sample
def _sample_with_transient(self):
    buf = bytearray(%d)
    seq = _sample(self)
    buf[0] = 1
    return seq
app.App.sample = _sample_with_transient
"""


def harness(patch: str = "") -> str:
    """The harness source with `patch` applied to firmware.app."""
    return HARNESS.replace("#PATCH", patch)


@dataclass
class BoardRun:
    stats: dict  # the board's TP-STATS line
    lines: list[str]  # its stdout
    wall_s: float

    def tagged(self, tag: str) -> list[list[str]]:
        """The fields of every `<tag> ...` line."""
        return [line.split()[1:] for line in self.lines if line.startswith(tag + " ")]


class _Responder:
    """Acks every reading at once."""

    def __init__(self, host: str, port: int):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-acks")
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.ready = threading.Event()
        self.client.connect(host, port)
        self.client.loop_start()
        if not self.ready.wait(10):
            raise TerrapinError("the bench ack responder could not subscribe")

    def _on_connect(self, client, userdata, flags, reason, props):  # type: ignore[no-untyped-def]
        sock = client.socket()
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(READING_FILTER, qos=1)
        self.ready.set()

    def _on_message(self, client, userdata, msg):  # type: ignore[no-untyped-def]
        addr, _ = topic_address(msg.topic)
        seq = decode_payload(decode_envelope(msg.payload).payload).seq
        client.publish(ack_topic(addr), encode_ack([seq]), qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class BoardRunner:
    """A broker, an ack responder and a keyed board's flash; runs of `readings` readings."""

    def __init__(self, work: Path, readings: int):
        self.work, self.readings, self.count = work, readings, 0
        self.broker = Mosquitto(work / "broker", persistence=False)
        self.broker.start()
        self.responder: _Responder | None = None
        try:
            self.responder = _Responder(self.broker.host, self.broker.port)
            first = self._prepare(work / "first-boot")
            if self._start(first, 0, ESP32_HEAP_BYTES, None, timeout=60) is None:
                raise TerrapinError(f"the virtual board could not make its key in {ESP32_HEAP}")
            self.snapshot = first / "flash"  # the key is made; the outbox is empty
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.responder is not None:
            self.responder.close()
        self.broker.stop()

    def _prepare(self, folder: Path) -> Path:
        folder.mkdir(parents=True)
        cfg = {
            "broker": {"host": "127.0.0.1", "port": self.broker.port},
            "sample_period_s": 1,
            "sensors": [{"driver": "simulated"}],
            "ack_timeout_s": 5,
            "window": 16,
            "log": "info",
        }
        (folder / "config.json").write_text(json.dumps(cfg))
        return folder

    def run(self, heapsize: int, harness: str | None = None) -> BoardRun | None:
        """One run from the snapshot; None when the board ran out of memory."""
        self.count += 1
        folder = self._prepare(self.work / f"run-{self.count}")
        shutil.copytree(self.snapshot, folder / "flash")
        script = MAIN
        if harness is not None:
            script = folder / "harness.py"
            script.write_text(harness)
        run = self._start(folder, self.readings, heapsize, script)
        shutil.rmtree(folder, ignore_errors=True)
        return run

    def _start(
        self,
        folder: Path,
        readings: int,
        heapsize: int,
        script: Path | None,
        timeout: float | None = None,
    ) -> BoardRun | None:
        cmd = micropython_command(
            str(script or MAIN),
            "--config",
            str(folder / "config.json"),
            "--max-readings",
            str(readings),
            "--exit-when-drained",
            "--stats",
            "--period-ms",
            str(PERIOD_MS),
            heapsize=str(heapsize),
        )
        t0 = time.monotonic()
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        timer = threading.Timer(timeout or 60 + readings / 20, proc.kill)
        timer.start()
        lines: list[str] = []
        out_of_memory = False
        try:
            for line in proc.stdout or ():
                lines.append(line.rstrip("\n"))
                if any(mark in line for mark in OUT_OF_MEMORY):
                    out_of_memory = True
                    proc.kill()
                    break
            proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        wall = time.monotonic() - t0
        if out_of_memory:
            return None
        for line in lines:
            if line.startswith("TP-STATS "):
                stats = json.loads(line[9:])
                if stats["mem_errors"]:
                    return None
                if proc.returncode == 0 and stats["readings"] == readings:
                    return BoardRun(stats, lines, wall)
        raise TerrapinError(
            f"the virtual board did not finish {readings} readings in a {heapsize}-byte heap",
            hint="\n".join(lines)[-1500:],
        )
