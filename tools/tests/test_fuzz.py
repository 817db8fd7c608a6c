"""`terrapin fuzz`: every parser that faces the network or a user's file survives
generated hostile input, the engine catches crashes and hangs, and each input
the fuzzer once crashed a parser with stays a golden invalid file
(fixtures/fuzz/<parser>/) that must be refused with the parser's typed error.

The default run feeds SMALL_COUNT inputs per parser; the million per parser is
the `slow` test (and `terrapin fuzz`), docs/FUZZING.md has the figures.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from terrapin.tools.cli.main import main
from terrapin.tools.devkit import fuzz_targets
from terrapin.tools.devkit.fuzz import Invariant, chunk_rng, fuzz, replay
from terrapin.tools.devkit.fuzz_targets import TARGETS, Target, target

SMALL_COUNT = 5000
FIXTURES = Path(__file__).parent / "fixtures" / "fuzz"
GOLDEN_INVALID = sorted(p for p in FIXTURES.glob("*/*") if p.parent.name in TARGETS)


def _report(result) -> str:
    return "\n".join(f"{c.name(0)}: {c.data[:120]!r}\n{c.error}" for c in result.crashes[:3])


@pytest.mark.parametrize("name", TARGETS)
def test_each_parser_survives_generated_inputs(name: str) -> None:
    result = fuzz(name, SMALL_COUNT, seed=0, processes=1)
    assert result.inputs == SMALL_COUNT
    assert not result.crashes, _report(result)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("name", TARGETS)
def test_a_million_inputs_per_parser(name: str) -> None:
    result = fuzz(name, 1_000_000, seed=0)
    assert result.inputs == 1_000_000
    assert not result.crashes, _report(result)


def test_the_same_seed_makes_the_same_inputs() -> None:
    for name in TARGETS:
        t = target(name)
        first = [t.generate(chunk_rng(7, name, 3)) for _ in range(2)]
        again = [t.generate(chunk_rng(7, name, 3)) for _ in range(2)]
        other = t.generate(chunk_rng(8, name, 3))
        assert first == again and first[0] != other


@pytest.mark.parametrize("path", GOLDEN_INVALID, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_golden_invalid_inputs_are_refused_with_the_typed_error(path: Path) -> None:
    name = path.parent.name
    t = target(name)
    data = t.from_bytes(path.read_bytes())
    assert replay(name, path.read_bytes()) is None
    if name == "board-config":
        from terrapin.firmware import config

        board, text = data.split("\n", 1)
        assert config.parse(text, board)[1] + config.parse(text, board)[2]
    elif name in ("console", "bundle", "status"):
        t.run(data)  # no exception: a console answers ERR (not INTERNAL), a status "unreadable"
    else:
        with pytest.raises(t.expected):
            t.run(data)


def test_verify_refuses_a_bundle_nested_too_deep() -> None:
    # 100,000 `[`: the verifier imports web3, whose py_ecc raises the recursion limit to
    # 100000, so json's C scanner overflowed the C stack: `terrapin verify` died of SIGSEGV.
    # A child process, since that crash would take pytest with it.
    bundle_file = FIXTURES / "bundle" / "nested-too-deep.json"
    proc = subprocess.run(
        [sys.executable, "-m", "terrapin.tools.cli.main", "verify", str(bundle_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-500:])  # input unreadable
    assert "nested deeper than" in proc.stderr


def _fake(monkeypatch, run) -> None:
    fake = Target("fake", lambda rng: rng.randbytes(4), run, (ValueError,))
    monkeypatch.setattr(fuzz_targets, "target", lambda name: fake)


def test_an_unexpected_exception_is_a_crash_with_its_input(monkeypatch) -> None:
    def run(data: bytes) -> None:
        if data[0] < 8:
            raise KeyError("boom")  # not the parser's typed error
        raise ValueError("refused")  # the typed error: fine

    _fake(monkeypatch, run)
    result = fuzz("fake", 300, seed=1, processes=1)
    assert result.crashes and all(c.data[0] < 8 for c in result.crashes)
    assert "KeyError: 'boom'" in result.crashes[0].error
    assert len(result.crashes) < 300


def test_a_hang_is_a_crash(monkeypatch) -> None:
    def run(data: bytes) -> None:
        while data:  # a parser stuck in a loop
            time.sleep(0.01)

    _fake(monkeypatch, run)
    timer_before = signal.getitimer(signal.ITIMER_REAL)[0]  # pytest-timeout's, if it runs one
    result = fuzz("fake", 2, seed=1, processes=1, time_limit=0.2)
    assert [c.error for c in result.crashes] == ["hang: more than 0.2 s"] * 2
    if timer_before:  # handed back, less the time the run took
        assert 0 < signal.getitimer(signal.ITIMER_REAL)[0] < timer_before


def test_a_broken_invariant_is_a_crash(monkeypatch) -> None:
    def run(data: bytes) -> None:
        raise Invariant("accepted but wrong")

    _fake(monkeypatch, run)
    assert len(fuzz("fake", 5, seed=1, processes=1).crashes) == 5


def test_the_command_prints_figures_and_exits_1_with_the_input(monkeypatch, tmp_path, capsys):
    assert main(["fuzz", "--parser", "ack", "--count", "300", "-j", "1"]) == 0
    out = capsys.readouterr().out
    assert "ack" in out and " 300 " in out and "inputs/s" in out

    _fake(monkeypatch, lambda data: data.attribute)  # AttributeError: never the typed error
    crash_dir = tmp_path / "crashes"
    code = main(
        ["fuzz", "--parser", "ack", "--count", "20", "-j", "1", "--crash-dir", str(crash_dir)]
    )
    assert code == 1
    saved = sorted(crash_dir.glob("*.bin"))
    assert len(saved) == 20 and "crashes found" in capsys.readouterr().err
    assert main(["fuzz", "--parser", "ack", "--replay", str(saved[0])]) == 1


@pytest.mark.micropython
def test_the_ack_decoder_on_the_micropython_unix_port(micropython_exe) -> None:
    from terrapin.tools.devkit.fuzz_mp import fuzz_ack_on_micropython

    result = fuzz_ack_on_micropython(20_000, seed=0)
    assert result.inputs == 20_000
    assert not result.crashes, result.crashes[:5]


def test_a_worker_that_dies_is_a_crash_not_a_hang(monkeypatch) -> None:
    def run(data: bytes) -> None:
        if data[0] == 0:
            # A worker killed (a C stack overflow is SIGSEGV, the OOM killer SIGKILL; SIGKILL
            # here keeps pytest's faulthandler from printing the worker's stack).
            os.kill(os.getpid(), signal.SIGKILL)

    _fake(monkeypatch, run)  # forked workers inherit the fake
    result = fuzz("fake", 12_000, seed=1, processes=2)
    assert result.inputs == 12_000
    assert result.crashes and "worker process died" in result.crashes[0].error
