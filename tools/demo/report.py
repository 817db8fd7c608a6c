"""The demo's progress lines and its closing summary (rich), and the JSON summary."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.table import Table

from terrapin.gateway.errors import TerrapinError

TOKEN = 10**18


class Step:
    def __init__(self, text: str) -> None:
        self.text = text
        self.detail = ""
        self.status: Any = None

    def progress(self, note: str) -> None:
        """Show how far the step is, next to its spinner."""
        if self.status is not None:
            self.status.update(f"{self.text} ... {note}")


class Steps:
    """`with steps.step("Starting Mosquitto") as s: ...; s.detail = "..."` prints a
    spinner while it runs, then a tick (or a cross) with the time it took."""

    def __init__(self, console: Console):
        self.console = console
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, text: str) -> Iterator[Step]:
        s = Step(text)
        t0 = time.monotonic()
        try:
            with self.console.status(text + " ...") as status:
                s.status = status
                yield s
        except TerrapinError:
            self.console.print(f"[red]✗[/] {text}")
            raise
        except Exception as exc:  # a bug or an unexpected answer: one line, traceback in the log
            self.console.print(f"[red]✗[/] {text}")
            logging.getLogger("terrapin.demo").exception("step failed: %s", text)
            raise TerrapinError(
                f"{text}: {type(exc).__name__}: {exc}", hint="the traceback is in demo.log"
            ) from exc
        except BaseException:
            self.console.print(f"[red]✗[/] {text} (interrupted)")
            raise
        dt = time.monotonic() - t0
        self.timings[text] = round(dt, 2)
        detail = f": {s.detail}" if s.detail else ""
        self.console.print(f"[green]✓[/] {text}{detail} [dim]({dt:.1f} s)[/]")


def trp(amount: int | str) -> str:
    """Base units as TRP with 4 decimals (rounded down)."""
    value = int(amount)
    return f"{value // TOKEN:,}.{(value % TOKEN) * 10_000 // TOKEN:04d} TRP"


def short(address: str) -> str:
    a = address if address.startswith("0x") else "0x" + address
    return a[:10] + "…" + a[-4:]


def print_summary(console: Console, s: dict[str, Any]) -> None:
    boards = Table(title="Boards", title_justify="left")
    for name in ("board", "address", "owner", "signed", "stored", "bundle"):
        boards.add_column(name, justify="right" if name in ("signed", "stored") else "left")
    for b in s["boards"]:
        mark = "[green]✓[/]" if b["bundle_ok"] else "[red]✗[/]"
        boards.add_row(
            b["name"], short(b["address"]), short(b["owner"]),
            str(b["signed"]), str(b["stored"]), f"seq {b['bundle_seq']} {mark}",
        )  # fmt: skip
    console.print(boards)

    totals = Table(title="Network", title_justify="left", show_header=False)
    totals.add_column("what")
    totals.add_column("value")
    r = s["readings"]
    totals.add_row("boards", f"{len(s['boards'])} ({s['board_runtime']})")
    totals.add_row(
        "readings",
        f"{r['signed']} signed by the boards, {r['stored']} stored, "
        f"{r['duplicates']} duplicate deliveries",
    )
    rejected = s["rejections"]["by_reason"]
    totals.add_row(
        "rejections (injected test)",
        ", ".join(f"{n} {reason}" for reason, n in sorted(rejected.items())) or "none",
    )
    totals.add_row(
        "batches anchored",
        f"{s['batches']['anchored']} (ids {s['batches']['ids']}) on {s['chain']['network']}, "
        f"chain id {s['chain']['chain_id']}",
    )
    for purpose, gas in s["gas"].items():
        totals.add_row(f"gas: {purpose}", f"{gas:,}")
    console.print(totals)

    rw = s["rewards"]
    day = time.strftime("%Y-%m-%d", time.gmtime(rw["epoch"] * rw["epoch_seconds"]))
    owners = Table(
        title=f"Rewards, epoch {rw['epoch']} (from {day} UTC), root {rw['root'][:18]}…",
        title_justify="left",
    )
    # "in wallet": the owner's token balance (claims land there), not what is left to claim.
    for name in ("owner", "boards", "earned", "claimed", "in wallet"):
        owners.add_column(name, justify="left" if name in ("owner", "boards") else "right")
    for owner, view in rw["owners"].items():
        owners.add_row(
            short(owner), ", ".join(s["owner_boards"].get(owner, [])),
            trp(view["epoch_amount"]), trp(view["claimed"]), trp(view["balance"]),
        )  # fmt: skip
    console.print(owners)
    claim = rw["claim"]
    console.print(
        f"claim: owner {short(claim['owner'])} claimed {trp(claim['amount'])} "
        f"in tx {claim['tx'][:18]}… ([green]ok[/])"
        if claim["ok"]
        else "[red]claim failed[/]"
    )


def print_closing(console: Console, s: dict[str, Any], keep_running: bool = False) -> None:
    console.print(f"proof bundles: {s['bundles_dir']}", soft_wrap=True)
    for b in s["boards"]:
        console.print(f"  {b['bundle']}", soft_wrap=True)
    console.print(f"summary: {s['summary_file']}", soft_wrap=True)
    console.print("check one yourself, without the gateway:")
    console.print(f"  [bold]{s['verify_command']}[/]", soft_wrap=True)
    if s["chain"]["network"] == "embedded":
        where = "lives inside the demo's process" if keep_running else "ended with the demo"
        console.print(
            f"  [dim](the embedded chain {where}: this checks the signature, "
            "digest, leaf and proof offline; run the demo with --rpc URL to check the anchor "
            "on chain afterwards)[/]"
        )
    if s.get("rewards_verify_command"):
        console.print(f"epoch manifest: {s['manifests'][0]}", soft_wrap=True)
        console.print("recompute the epoch's rewards from its manifest and the chain:")
        console.print(f"  [bold]{s['rewards_verify_command']}[/]", soft_wrap=True)
    console.print(f"[green]demo finished in {s['run_time_s']:.1f} s, every step passed[/]")
    if s.get("gateway", {}).get("dashboard"):
        note = (
            "up until Ctrl-C"
            if keep_running
            else "it stopped with the demo; --keep-running (make demo "
            "DEMO_ARGS=--keep-running) keeps it up"
        )
        console.print(
            f"dashboard: [bold]{s['gateway']['dashboard']}[/] [dim]({note})[/]", soft_wrap=True
        )
