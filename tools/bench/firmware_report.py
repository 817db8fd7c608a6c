"""The human-readable report of `terrapin bench firmware`: one rich table.

Rows for the crypto core (unix port beside CPython), the peak heap figures,
the speedup over the textbook baseline and, when the virtual-board run took
place, the board figures beside their same-run baseline.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from terrapin.tools.micropython import ESP32_HEAP


def figures_table(figures: dict[str, Any]) -> Table:
    """The figures of one run (as `collect()` returns them) as a table."""
    table = Table(title="Firmware crypto core (medians)")
    table.add_column("figure")
    table.add_column(f"unix port, heap {ESP32_HEAP}", justify="right")
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
        ("peak heap: sign a reading (cborenc, cose, secp256k1)", "mp_sign_peak_heap_bytes"),
        ("  of which resident after import", "mp_sign_resident_heap_bytes"),
        ("peak heap: ECDSA sign, secp256k1 alone", "mp_ecdsa_sign_peak_heap_bytes"),
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
            f"reading on a virtual board, median of all {n}: sample, sign, store, publish",
            f"{figures['mp_reading_ms']:.3f} ms",
            "",
        )
        table.add_row(
            "  baseline, same interpreter: sign1 alone",
            f"{figures['mp_reading_sign_only_ms']:.3f} ms",
            "",
        )
        table.add_row(
            "firmware peak heap over the run, transients included (target 64 KB)",
            f"{figures['mp_peak_heap_bytes']} B (within {figures['mp_peak_heap_bound_bytes']} B)",
            "",
        )
        table.add_row(
            "  smallest -X heapsize the run succeeds in",
            f"{figures['mp_min_heapsize_bytes']} B",
            "",
        )
        table.add_row(
            "firmware live heap after each reading's gc.collect(), largest",
            f"{figures['mp_live_heap_bytes']} B",
            "",
        )
        table.add_row(
            "outbox flash per reading (overhead)",
            f"{figures['flash_bytes_per_reading']} B"
            f" ({figures['flash_overhead_bytes_per_reading']} B)",
            "",
        )
        table.add_row(
            f"sampling rate, period {figures['sampling_period_ms']} ms (readings/s)",
            f"{figures['sampling_readings_per_s']}",
            "",
        )
    if "mp_app_alloc_bytes" in figures:
        table.add_section()
        table.add_row(
            "the app, every module it uses, resident (unix port)",
            f"{figures['mp_app_alloc_bytes']} B",
            "",
        )
        table.add_row(
            "  guard: the ESP32's 64 KB in unix-port terms",
            f"{figures['mp_app_guard_bytes']} B",
            "",
        )
        if "mp_app_qstrs" in figures:
            table.add_row(
                "  names interned for it (guard: the image's 620 less its 13-16 more)",
                f"{figures['mp_app_qstrs']} of {figures['mp_app_qstr_guard']}",
                "",
            )
    if "esp32_heap_free_boot" in figures:
        table.add_section()
        for label, key, unit in (
            ("ESP32 image (emulation): free heap at boot", "esp32_heap_free_boot", "B"),
            ("  the app, every module it uses, resident", "esp32_app_alloc_bytes", "B"),
            ("  one reading: encode + sign + publish, allocated", "esp32_sign_peak_bytes", "B"),
            ("  sign1, emulated milliseconds", "esp32_sign_ms_emulated", "ms"),
            ("  names interned for the app (a 6th pool past 620)", "esp32_app_qstrs", ""),
        ):
            if key in figures:
                table.add_row(label, f"{figures[key]} {unit}".rstrip(), "")
    return table
