"""`terrapin bench firmware`: signing speed and heap of the firmware crypto core.

One run measures, side by side, the MicroPython unix port (`-X heapsize` =
tools/micropython.py ESP32_HEAP, the ESP32's free heap in 64-bit terms) and
CPython, on the same firmware files:
- median sign / verify / SHA-256-of-Sig_structure times, encode_payload,
  sign1 (payload -> envelope, with the address computed once beforehand, as a
  board does) and address (Keccak-256, once per boot on a board);
- the same signature made by a textbook signer (affine double-and-add,
  Fermat inverse `pow(x, p-2, p)` at every step) kept here as the baseline,
  and the same textbook signer with the extended-Euclid inverse, to show how
  much of the gain is the comb and Jacobian coordinates alone;
- the first sign, which also fills the comb table (a one-off);
- peak heap of signing a reading (see `peak_heap()`): the primary figure,
  `mp_sign_peak_heap_bytes`, is the whole path a board runs (encode_payload
  + sign1 with cborenc, cose and secp256k1 imported; not keccak, which only
  address() imports, nor the receive side, cose_check); secondary figures
  give the ECDSA module (secp256k1) alone and the core with keccak
  resident too.

The board figures of the whole firmware (tools/bench/board.py, registered
below, which says how each is measured) come in the same JSON:
mp_reading_ms (sample + encode + sign + outbox write + publish on a virtual
board, median over every reading of a `--readings` run, default 1,000)
beside its baseline mp_reading_sign_only_ms (cose.sign1 alone),
mp_peak_heap_bytes (the true peak of the run, transients included) beside
mp_live_heap_bytes (what stays live after each reading's gc.collect()),
sampling_readings_per_s and flash_bytes_per_reading; they need Mosquitto as
well and are left out without it.

Layout: the scripts measured inside each interpreter are in
tools/bench/firmware_probes.py, running them (and the .mpy build, the heap
bisection) in tools/bench/firmware_run.py, the table in
tools/bench/firmware_report.py; this module collects the figures, holds the
provider registry and the command.

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
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from terrapin.gateway.errors import TerrapinError
from terrapin.tools.bench.firmware_report import figures_table
from terrapin.tools.bench.firmware_run import (
    REPO_ROOT,
    compile_core,
    peak_heap,
    run_script,
    timing,
)
from terrapin.tools.micropython import (
    ESP32_APP_BUDGET,
    ESP32_BOOT_SHARE,
    ESP32_HEAP,
    find_micropython,
)

SIGN_TARGET_RATIO = 10  # mp_sign_ms must be <= mp_naive_sign_ms / 10
HEAP_TARGET = 32 * 1024  # bytes
BOARD_HEAP_TARGET = 64 * 1024  # mp_peak_heap_bytes (true peak) of the whole firmware
OUTBOX_OVERHEAD_TARGET = 16  # flash bytes per entry beyond the envelope


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
        return run_script(
            [self.micropython, "-X", f"heapsize={heapsize}"], script, self.workdir, *args
        )


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
    # The whole firmware on a virtual board (tools/bench/board.py).
    from terrapin.tools.bench.board import provider

    return provider(ctx)


register(_board_figures)


def _app_figures(ctx: BenchContext) -> dict[str, Any]:
    # The whole app resident on the unix port, beside its guard (the ESP32 budget
    # in 64-bit terms): tools/bench/board_qemu.py's probe on a deployed folder.
    if ctx.micropython is None:
        return {}
    from terrapin.tools.bench.board_qemu import UNIX_APP_GUARD, UNIX_QSTR_GUARD, unix_probe
    from terrapin.tools.board.deploy import DirTarget, deploy

    folder = ctx.workdir / "app-probe"
    deploy(DirTarget(folder))
    figures = unix_probe(ctx.micropython, folder)  # the larger uplink set
    return {
        "mp_app_alloc_bytes": figures["esp32_app_alloc_bytes"],
        "mp_app_guard_bytes": UNIX_APP_GUARD,
        "mp_app_qstrs": figures["esp32_app_qstrs"],
        "mp_app_qstr_guard": UNIX_QSTR_GUARD,
    }


register(_app_figures)


# -- collecting and the command --------------------------------------------------------


def esp32_targets(figures: dict[str, Any]) -> dict[str, bool]:
    """The heap budget on the ESP32 image (issue 18), from the esp32_* figures."""
    app = figures["esp32_app_alloc_bytes"]
    return {
        "esp32_app_le_64k": app <= ESP32_APP_BUDGET,
        "esp32_app_le_40pct_of_boot_free": app
        <= ESP32_BOOT_SHARE * figures["esp32_heap_free_boot"],
    }


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
        if "mp_app_alloc_bytes" in figures:
            figures.setdefault("targets", {})["app_le_unix_guard"] = (
                figures["mp_app_alloc_bytes"] <= figures["mp_app_guard_bytes"]
            )
            figures["targets"]["app_qstrs_le_guard"] = (
                figures["mp_app_qstrs"] <= figures["mp_app_qstr_guard"]
            )
        if "mp_peak_heap_bytes" in figures:
            figures.setdefault("targets", {}).update(
                {
                    "reading_peak_heap_le_64k": figures["mp_peak_heap_bytes"] <= BOARD_HEAP_TARGET,
                    "reading_live_heap_le_64k": figures["mp_live_heap_bytes"] <= BOARD_HEAP_TARGET,
                    "outbox_overhead_le_16": figures["flash_overhead_bytes_per_reading"]
                    <= OUTBOX_OVERHEAD_TARGET,
                }
            )
    return figures


@click.command()
@click.option(
    "--target",
    type=click.Choice(["unix", "qemu"]),
    default="unix",
    show_default=True,
    help="qemu: also the esp32_* figures from MicroPython's ESP32 image in Espressif's QEMU.",
)
@click.option("--qemu-bin", default="qemu-system-xtensa", show_default=True)
@click.option(
    "--qemu-image",
    type=click.Path(dir_okay=False, path_type=Path),
    default=REPO_ROOT / ".cache" / "qemu" / "esp32-flash.bin",
    show_default=True,
    help="The flash image `make qemu-image` builds.",
)
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
def firmware(
    as_json: bool,
    runs: int,
    naive_runs: int,
    readings: int,
    target: str = "unix",
    qemu_bin: str = "qemu-system-xtensa",
    qemu_image: Path | None = None,
) -> None:
    """Speed and heap of the crypto core (unix port and CPython) and of the whole
    firmware on a virtual board; with --target qemu, on the ESP32 image too."""
    if 0 < readings < 10:
        raise TerrapinError("--readings must be 0 or at least 10")
    image = qemu_image or REPO_ROOT / ".cache" / "qemu" / "esp32-flash.bin"
    if target == "qemu":  # before minutes of benchmarking, not after
        from terrapin.tools.bench.board_qemu import check_emulator

        check_emulator(qemu_bin, image)
    console = Console(stderr=True)
    with console.status("benchmarking the firmware (crypto core, then a virtual board)..."):
        figures = collect(runs, naive_runs, readings)
    if target == "qemu":
        from terrapin.tools.bench.board_qemu import esp32_figures

        with console.status("the ESP32 image in QEMU (emulation: minutes, flash is slow)..."):
            figures.update(esp32_figures(qemu_bin, image))
        figures.setdefault("targets", {}).update(esp32_targets(figures))
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
    Console().print(figures_table(figures))
    for name, met in figures.get("targets", {}).items():
        console.print(f"target {name}: {'met' if met else '[red]MISSED[/]'}")
