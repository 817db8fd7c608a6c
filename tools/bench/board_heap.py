"""The true peak heap of a whole board run, measured from outside.

The unix port cannot report a peak itself: `micropython.mem_peak()` exists
(MICROPY_MEM_STATS) but counts every allocation and never subtracts what the
collector frees (ten 30 KB buffers, each dropped and collected, give a "peak"
of 301 KB in a 100 KB heap), and `gc.mem_alloc()` read without collecting
counts garbage, read after collecting misses every transient.

So the bench finds the smallest `-X heapsize` at which the whole run still
succeeds (every reading taken and acked, no MemoryError, none caught either)
by bisection, to `STEP` bytes. Every allocation of a run that succeeds fit,
so the peak it needed (transients of signing and publishing included, and
the fragmentation it caused, as on a board) is at most the heap's capacity;
the run one step smaller failed, so the peak is above that capacity. The
capacity of a heapsize is what `gc.mem_alloc() + gc.mem_free()` counts (the
heapsize less the collector's own tables), the unit of the live-heap figures.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from terrapin.gateway.errors import TerrapinError
from terrapin.tools.micropython import micropython_command

STEP = 1024  # bytes of -X heapsize between the failing and the passing run


@dataclass
class HeapBracket:
    heapsize: int  # smallest -X heapsize that passed
    failed_heapsize: int  # the largest that failed (heapsize - failed <= STEP)
    peak: int  # capacity of `heapsize`: the peak is at most this
    peak_above: int  # capacity of `failed_heapsize`: the peak is more than this


def capacity(heapsize: int) -> int:
    """Bytes the collector can hand out with `-X heapsize=<heapsize>`."""
    code = "import gc; print(gc.mem_alloc() + gc.mem_free())"
    out = subprocess.run(
        micropython_command("-c", code, heapsize=str(heapsize)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if out.returncode != 0:
        raise TerrapinError(f"could not read the capacity of a {heapsize}-byte heap")
    return int(out.stdout.split()[-1])


def smallest_heap(passes: Callable[[int], bool], low: int, high: int) -> HeapBracket:
    """The smallest heapsize (to STEP) at which `passes(heapsize)` holds.

    `high` must pass; `low` is tried and halved until it fails."""
    if not passes(high):
        raise TerrapinError(f"the run does not pass even in a {high}-byte heap")
    while passes(low):
        high, low = low, low // 2
        if low < STEP:
            raise TerrapinError("the run passes in any heap: it measures nothing")
    while high - low > STEP:
        mid = (low + high) // 2
        if passes(mid):
            high = mid
        else:
            low = mid
    return HeapBracket(high, low, capacity(high), capacity(low))
