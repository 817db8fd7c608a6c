"""The fuzzing engine behind `terrapin fuzz` and tools/tests/test_fuzz.py.

A target (tools/devkit/fuzz_targets.py) makes input number i from a seeded
random generator and feeds it to one parser. A *crash* is anything the parser
may not do with hostile input: raise an exception other than its documented
typed error, break a stated invariant, or take longer than `time_limit`
seconds (a SIGALRM timer bounds every input, so a hang is caught too).

Inputs are made in chunks of CHUNK; chunk k's generator is seeded from
(seed, target, k), so a run is the same on any machine and any number of
processes, and a crash is reproduced from the input file written for it.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 5000
# Inputs run under CPython's default recursion limit, whatever the calling process set
# (web3's py_ecc raises it to 100000 at import); a target that models such a process
# raises it around its own run (the bundle target, as `terrapin verify`).
RECURSION_LIMIT = 1000
TIME_LIMIT = 5.0  # s per input: typical inputs take well under 1 ms; room for a loaded machine


class Hang(BaseException):
    """Raised by the alarm inside a parser that ran past the time limit
    (a BaseException, so a parser's `except Exception` cannot swallow it)."""


class Invariant(Exception):
    """A parser accepted an input but broke a rule it states (a wrong answer)."""


@dataclass
class Crash:
    target: str
    chunk: int
    index: int
    data: bytes
    error: str

    def name(self, seed: int) -> str:
        return f"{self.target}-s{seed}-c{self.chunk}-i{self.index}"


@dataclass
class Result:
    target: str
    inputs: int = 0
    crashes: list[Crash] = field(default_factory=list)
    seconds: float = 0.0  # wall time
    slowest: float = 0.0  # slowest single input, s

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0


def _on_alarm(signum, frame):
    raise Hang()


@contextmanager
def _alarm_handler():
    """Our SIGALRM handler while inputs run; whoever had the timer before (pytest-timeout)
    gets it back with the time it had left."""
    old = signal.signal(signal.SIGALRM, _on_alarm)
    left, _ = signal.getitimer(signal.ITIMER_REAL)
    began = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if left:
            signal.setitimer(signal.ITIMER_REAL, max(left - (time.monotonic() - began), 0.001))


def chunk_rng(seed: int, target: str, chunk: int) -> random.Random:
    return random.Random(f"{seed}/{target}/{chunk}")


def run_chunk(target_name: str, seed: int, chunk: int, count: int, time_limit: float):
    """(inputs, crashes, slowest) of one chunk; runs in a worker process or inline."""
    from terrapin.tools.devkit.fuzz_targets import target

    t = target(target_name)
    rng = chunk_rng(seed, target_name, chunk)
    crashes: list[Crash] = []
    slowest = 0.0
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(RECURSION_LIMIT)
    with _alarm_handler():
        for i in range(count):
            data = t.generate(rng)
            start = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, time_limit)
            try:
                t.run(data)
                error = None
            except t.expected:
                error = None
            except Hang:
                error = f"hang: more than {time_limit} s"
            except BaseException as exc:  # any other exception is the finding
                if isinstance(exc, KeyboardInterrupt):
                    raise
                error = "".join(traceback.format_exception(exc)[-12:])
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            slowest = max(slowest, time.perf_counter() - start)
            if error is not None:
                crashes.append(Crash(target_name, chunk, i, t.to_bytes(data), error))
    sys.setrecursionlimit(limit)
    return count, crashes, slowest


def _chunk_job(args):
    return run_chunk(*args)


def fuzz(
    target_name: str,
    count: int,
    seed: int = 0,
    processes: int | None = None,
    time_limit: float = TIME_LIMIT,
) -> Result:
    """Feed `count` generated inputs to one target, over `processes` (default: all cores)."""
    jobs = []
    for chunk, start in enumerate(range(0, count, CHUNK)):
        jobs.append((target_name, seed, chunk, min(CHUNK, count - start), time_limit))
    processes = processes or os.cpu_count() or 1
    result = Result(target_name)
    began = time.perf_counter()
    if processes == 1 or len(jobs) == 1:
        _collect(result, map(_chunk_job, jobs))
    else:
        ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        with ProcessPoolExecutor(processes, mp_context=ctx) as pool:
            futures = {pool.submit(_chunk_job, job): job for job in jobs}
            for future in as_completed(futures):
                try:
                    _collect(result, [future.result()])
                except BrokenProcessPool:  # a worker died: SIGSEGV, stack overflow, OOM
                    _, _, chunk, n, _ = futures[future]
                    why = "a worker process died in this chunk (rerun it with -j 1 to see where)"
                    result.inputs += n
                    result.crashes.append(Crash(target_name, chunk, -1, b"", why))
    result.seconds = time.perf_counter() - began
    result.crashes.sort(key=lambda c: (c.chunk, c.index))
    return result


def _collect(result: Result, outputs) -> None:
    for n, crashes, slowest in outputs:
        result.inputs += n
        result.crashes.extend(crashes)
        result.slowest = max(result.slowest, slowest)


def write_crashes(result: Result, seed: int, directory: Path, limit: int = 20) -> list[Path]:
    """One `<name>.bin` (the input) and `<name>.txt` (the error) per crash, at most `limit`."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for crash in result.crashes[:limit]:
        base = directory / crash.name(seed)
        base.with_suffix(".bin").write_bytes(crash.data)
        base.with_suffix(".txt").write_text(crash.error)
        written.append(base.with_suffix(".bin"))
    return written


def replay(target_name: str, data: bytes, time_limit: float = TIME_LIMIT) -> str | None:
    """Run one saved input through a target: None if handled, else the error text."""
    from terrapin.tools.devkit.fuzz_targets import target

    t = target(target_name)
    with _alarm_handler():
        signal.setitimer(signal.ITIMER_REAL, time_limit)
        try:
            t.run(t.from_bytes(data))
        except t.expected:
            return None
        except Hang:
            return f"hang: more than {time_limit} s"
        except Exception as exc:
            return "".join(traceback.format_exception(exc)[-12:])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    return None
