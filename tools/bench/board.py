"""Board figures for `terrapin bench firmware`: the real firmware on the unix port.

`board_figures(runs)` starts a Mosquitto (TCP_NODELAY) and a minimal ack
responder, runs one virtual board for `runs` readings (period 5 ms) in a
100 KB heap and reads the board's own `TP-STATS` line:

- mp_reading_ms: median time of one reading on the board: sample + encode +
  sign + outbox write + publish (unix port, from the board's ticks_us);
- mp_reading_sign_only_ms: its baseline, measured in the same run: cose.sign1
  alone in the same interpreter (named apart from the crypto bench's
  mp_sign_ms, which is ECDSA alone);
- mp_peak_heap_bytes: the largest live heap over the run, measured right
  after the once-per-reading gc.collect() (what the firmware keeps);
  (Each signature also churns ~300 KB of short-lived big integers, which
  the collector reclaims several times per reading; that is not "kept".)
- flash_bytes_per_reading: outbox bytes written per reading, with
  flash_overhead_bytes_per_reading the part beyond the envelope itself.

`terrapin bench firmware` merges these figures beside the crypto core's
through `provider()` (registered in tools/bench/firmware.py).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.protocol.ack import encode_ack
from terrapin.gateway.protocol.envelope import decode_envelope, decode_payload
from terrapin.gateway.protocol.topics import READING_FILTER, ack_topic, topic_address
from terrapin.tools.devkit.broker import Mosquitto
from terrapin.tools.micropython import micropython_command

REPO = Path(__file__).resolve().parents[2]
MAIN = REPO / "firmware" / "main.py"

_SIGN_SNIPPET = """
import sys, time
sys.path.insert(0, %r)
from firmware import cose, secp256k1
priv = bytes(range(1, 33))
kid = cose.address(secp256k1.public_key(priv))
records = [("t", "Cel", 21.5), ("h", "%%RH", 40.0), ("p", "Pa", 101325.0)]
payload = cose.encode_payload(1, 1700000000, records)
times = []
for i in range(60):
    t0 = time.ticks_us()
    cose.sign1(priv, kid, payload)
    times.append(time.ticks_diff(time.ticks_us(), t0))
times.sort()
print("SIGN_US", times[len(times) // 2])
"""


class _Responder:
    """Acks every reading at once (no checks: this measures the board)."""

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


def _run_board(work: Path, port: int, readings: int, heap: str) -> dict:
    cfg = {
        "broker": {"host": "127.0.0.1", "port": port},
        "sample_period_s": 1,
        "sensors": [{"driver": "simulated"}],
        "ack_timeout_s": 5,
        "window": 16,
        "log": "info",
    }
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(cfg))
    cmd = micropython_command(
        str(MAIN),
        "--config",
        str(work / "config.json"),
        "--max-readings",
        str(readings),
        "--exit-when-drained",
        "--stats",
        "--period-ms",
        "5",
        heapsize=heap,
    )
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60 + readings / 20)
    for line in out.stdout.splitlines():
        if line.startswith("TP-STATS "):
            stats = json.loads(line[9:])
            if out.returncode == 0 and stats["readings"] == readings:
                return stats
    raise TerrapinError(
        f"the virtual board did not finish {readings} readings in a {heap} heap",
        hint=(out.stdout + out.stderr)[-1500:],
    )


def _sign_ms() -> float:
    # The checkout's .mpy cache exists once a board has run (main.py builds it).
    caches = sorted((REPO / ".cache").glob("mpy-*"))
    path = str(caches[-1]) if caches else str(REPO)
    out = subprocess.run(
        micropython_command("-c", _SIGN_SNIPPET % path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    for line in out.stdout.splitlines():
        if line.startswith("SIGN_US "):
            return int(line.split()[1]) / 1000
    raise TerrapinError("could not time cose.sign1 on the unix port", hint=out.stderr[-800:])


def board_figures(runs: int = 1000) -> dict:
    """Figures of the virtual board over `runs` readings (see the module doc)."""
    if runs < 10:
        raise TerrapinError("the board bench needs at least 10 readings")
    work = Path(tempfile.mkdtemp(prefix="terrapin-bench-board-"))
    broker = Mosquitto(work / "broker", persistence=False)  # TCP_NODELAY set by tools/broker
    broker.start()
    responder = _Responder(broker.host, broker.port)
    try:
        t0 = time.monotonic()
        small = _run_board(work / "b100k", broker.port, runs, "100k")
        wall = time.monotonic() - t0
        sign_ms = _sign_ms()
    finally:
        responder.close()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    n = small["readings"]
    return {
        "mp_reading_ms": small["reading_us_median"] / 1000,
        "mp_reading_sign_only_ms": sign_ms,
        "mp_peak_heap_bytes": small["live_peak"],
        "mp_live_heap_after_100_bytes": small["live_at_100"],
        "mp_live_heap_last_bytes": small["live_last"],
        "mp_heap_bytes": 100 * 1024,
        "mp_mem_errors": small["mem_errors"],
        "flash_bytes_per_reading": round(small["bytes_written"] / n, 1),
        "flash_overhead_bytes_per_reading": round(
            (small["bytes_written"] - small["envelope_bytes"]) / n, 2
        ),
        "envelope_bytes_mean": round(small["envelope_bytes"] / n, 1),
        "readings": n,
        "readings_per_s": round(n / wall, 1),
    }


def provider(ctx) -> dict:  # type: ignore[no-untyped-def]
    """Figure provider for `terrapin bench firmware` (a BenchContext in, figures out):
    the board figures over `ctx.readings` readings, or nothing when the unix
    port or Mosquitto is missing (the crypto figures still come)."""
    from terrapin.tools.devkit.broker import find_mosquitto

    if ctx.micropython is None or find_mosquitto() is None or ctx.readings <= 0:
        return {}
    return board_figures(ctx.readings)


if __name__ == "__main__":
    print(json.dumps(board_figures(), indent=2))
