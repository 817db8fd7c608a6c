"""Board figures for `terrapin bench firmware`: the real firmware on the unix port.

`board_figures(readings)` runs one virtual board (tools/bench/board_run.py:
Mosquitto, an ack responder, a board that has already made its key, period
5 ms, window 16) several times over, each run booting and taking `readings`
readings:

- the plain run, in the ESP32's heap in unix-port terms (`mp_heap_bytes`,
  tools/micropython.py ESP32_HEAP), gives the board's own
  `TP-STATS` figures: mp_live_heap_bytes (the largest live heap right after
  the once-per-reading gc.collect(): what the firmware keeps, no transients),
  mp_live_heap_after_100_bytes, mp_live_heap_last_bytes, mp_mem_errors, and
  flash_bytes_per_reading / flash_overhead_bytes_per_reading (outbox bytes
  written per reading, and the part beyond the envelope) / envelope_bytes_mean;
- the timed run (the same board with TIMING_PATCH, which prints every
  reading's time): mp_reading_ms, the median over every reading of the run of
  sample + encode + sign + outbox write + publish (the board's ticks_us), and
  sampling_readings_per_s, readings per second from the end of the first
  reading to the end of the last (at most 1000 / sampling_period_ms);
- the heap runs (tools/bench/board_heap.py): mp_peak_heap_bytes, the true
  peak over the whole run, transients of signing and publishing included: the
  capacity of the smallest -X heapsize (`mp_min_heapsize_bytes`, to 1 KB) in
  which the run still succeeds; the run one step smaller failed, so the peak
  lies within mp_peak_heap_bound_bytes below it.
- mp_reading_sign_only_ms: cose.sign1 alone in the same interpreter, median
  of 60 (the reading's baseline; apart from the crypto bench's mp_sign_ms,
  which is ECDSA alone).

`terrapin bench firmware` merges these figures beside the crypto core's
through `provider()` (registered in tools/bench/firmware.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from terrapin.gateway.errors import TerrapinError
from terrapin.tools.bench.board_heap import HeapBracket, smallest_heap
from terrapin.tools.bench.board_run import (
    PERIOD_MS,
    REPO,
    TIMING_PATCH,
    BoardRun,
    BoardRunner,
    harness,
)
from terrapin.tools.micropython import ESP32_HEAP_BYTES, micropython_command

FULL_HEAP = ESP32_HEAP_BYTES  # the ESP32's free heap in unix-port terms

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


def run_peak_heap(runner: BoardRunner, low: int, patch: str | None = None) -> HeapBracket:
    """The smallest heap a whole run of `runner` (with `patch` applied, if any)
    succeeds in; `low`: a heapsize expected to fail (e.g. the live heap)."""
    script = None if patch is None else harness(patch)
    return smallest_heap(lambda size: runner.run(size, script) is not None, low, FULL_HEAP)


def reading_times(run: BoardRun, readings: int) -> tuple[float, float]:
    """(median ms of a reading, readings per second) of a TIMING_PATCH run."""
    rows = run.tagged("TP-T")
    if len(rows) != readings:
        raise TerrapinError(f"the timed run printed {len(rows)} reading times of {readings}")
    times = sorted(int(us) for us, _ in rows)
    span_us = int(rows[-1][1])
    return times[len(times) // 2] / 1000, (readings - 1) / max(span_us / 1e6, 1e-9)


def board_figures(readings: int = 1000) -> dict:
    """Figures of the virtual board over runs of `readings` readings (see the module doc)."""
    if readings < 10:
        raise TerrapinError("the board bench needs at least 10 readings")
    work = Path(tempfile.mkdtemp(prefix="terrapin-bench-board-"))
    try:
        runner = BoardRunner(work, readings)
        try:
            plain = runner.run(FULL_HEAP)
            timed = runner.run(FULL_HEAP, harness(TIMING_PATCH))
            if plain is None or timed is None:
                raise TerrapinError(f"the virtual board ran out of memory in {FULL_HEAP} bytes")
            heap = run_peak_heap(runner, plain.stats["live_peak"])
        finally:
            runner.close()
        sign_ms = _sign_ms()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stats, n = plain.stats, readings
    reading_ms, rate = reading_times(timed, readings)
    return {
        "mp_reading_ms": reading_ms,
        "mp_reading_sign_only_ms": sign_ms,
        "mp_peak_heap_bytes": heap.peak,
        "mp_peak_heap_bound_bytes": heap.peak - heap.peak_above,
        "mp_min_heapsize_bytes": heap.heapsize,
        "mp_live_heap_bytes": stats["live_peak"],
        "mp_live_heap_after_100_bytes": stats["live_at_100"],
        "mp_live_heap_last_bytes": stats["live_last"],
        "mp_heap_bytes": FULL_HEAP,
        "mp_mem_errors": stats["mem_errors"],
        "flash_bytes_per_reading": round(stats["bytes_written"] / n, 1),
        "flash_overhead_bytes_per_reading": round(
            (stats["bytes_written"] - stats["envelope_bytes"]) / n, 2
        ),
        "envelope_bytes_mean": round(stats["envelope_bytes"] / n, 1),
        "readings": n,
        "sampling_readings_per_s": round(rate, 1),
        "sampling_period_ms": PERIOD_MS,
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
