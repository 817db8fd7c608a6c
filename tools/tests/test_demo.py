"""`terrapin demo` end to end, as a user runs it (a subprocess), with small settings.

Each run: Mosquitto with passwords + ACL, the gateway, the chain (embedded or
anvil), virtual boards running the real firmware on the MicroPython unix port.
The bundles it writes are checked again by `terrapin verify` as a subprocess;
with --rpc, against anvil after the demo has exited. No process it started may
outlive it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from terrapin.tools.devkit.broker import free_port

TERRAPIN = [sys.executable, "-m", "terrapin.tools.cli.main"]
ANVIL_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"

pytestmark = [pytest.mark.timeout(180)]


def terrapin(*args: str, env: dict | None = None, timeout: float = 150):
    return subprocess.run(
        [*TERRAPIN, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "120", **(env or {})},
        check=False,
    )


def processes_under(path: Path) -> list[str]:
    """Live processes whose command line or working directory is inside `path`."""
    found = []
    root = str(path.resolve())
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if root in cmd or cwd.startswith(root):
            found.append(f"{pid}: {cmd.strip()} (cwd {cwd})")
    return found


def check_summary(out: Path, boards: int, readings: int) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True
    r = summary["readings"]
    assert r["signed"] == boards * readings, r
    assert r["stored"] == r["signed"], "every reading the boards signed is stored exactly once"
    assert [b["stored"] for b in summary["boards"]] == [readings] * boards
    assert len({b["address"] for b in summary["boards"]}) == boards
    assert summary["batches"]["anchored"] >= 1
    assert sum(summary["batches"]["readings"]) == boards * readings
    # The demo's own injected envelopes, each rejected with its reason code.
    assert summary["rejections"]["by_reason"] == {"BAD_SIGNATURE": 1, "TOPIC_MISMATCH": 1}
    claims = summary["claims"]
    assert len(claims) == 1 and claims[0]["ok"] and int(claims[0]["amount"]) > 0
    owners = summary["rewards"]["owners"]
    assert int(owners[claims[0]["owner"]]["balance"]) == int(claims[0]["amount"])
    earned = sum(int(v["epoch_amount"]) for v in owners.values())
    assert 0 < earned <= 1000 * 10**18
    assert all(b["bind"] and b["bind"]["tx"] for b in summary["boards"]), "bound on chain"
    assert {"bind boards", "anchor batches", "publish epoch root", "claim"} <= set(summary["gas"])
    assert len(summary["bundles"]) == boards
    # The epoch's manifest is written beside the bundles; the demo verified it on chain.
    (manifest,) = summary["manifests"]
    assert Path(manifest).is_file() and summary["rewards"]["manifest_verified_on_chain"]
    return summary


def test_demo_on_the_embedded_chain(micropython_exe, mosquitto_exe, tmp_path):
    out = tmp_path / "demo"
    result = terrapin("demo", "--boards", "2", "--readings", "3", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MicroPython unix port" in result.stdout
    assert "every step passed" in result.stdout
    # The last line: the dashboard's URL, and that it stopped with the demo (how to keep it).
    last = " ".join(result.stdout.strip().splitlines()[-2:])
    assert re.search(r"dashboard: http://\S+/ \(it stopped with the demo; --keep-running", last)
    # The rewards table's last column is the owner's wallet, not what is left to claim.
    assert re.search(r"earned \S+\s+claimed \S+\s+in wallet", result.stdout), result.stdout
    summary = check_summary(out, 2, 3)
    manifest = summary["manifests"][0]
    assert summary["verify_command"] in " ".join(result.stdout.split())
    assert not processes_under(out), processes_under(out)

    # Secrets stay on the boards' flash: no key, no broker password in what the host shows.
    from terrapin.firmware import keystore

    host_side = result.stdout + result.stderr + (out / "summary.json").read_text()
    host_side += (out / "network" / "demo.log").read_text()
    for flash in out.glob("network/boards/*/flash"):
        priv = keystore.load_key(str(flash))
        password = json.loads((flash / "config.json").read_text())["broker"]["password"]
        assert priv and password
        for secret in (priv.hex(), priv.hex().upper(), password):
            assert secret not in host_side

    # Each bundle passes the offline checks (the embedded chain is gone), which is exit 3
    # and says in words that nothing was checked on chain.
    for bundle in summary["bundles"]:
        check = terrapin("verify", bundle, timeout=60)
        assert check.returncode == 3, check.stdout + check.stderr
        assert "proof -> root" in check.stdout
        assert "NOTHING was checked on chain" in check.stdout
    # ... and a tampered one does not.
    data = json.loads(Path(summary["bundles"][0]).read_text())
    data["seq"] += 1
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(data))
    assert terrapin("verify", str(bad), timeout=60).returncode == 1

    # The manifest checks offline (exit 3: the chain is gone); tampered, it fails (exit 1).
    epoch = str(summary["rewards"]["epoch"])
    check = terrapin("rewards", "verify", "--epoch", epoch, "--manifest", manifest, timeout=60)
    assert check.returncode == 3, check.stdout + check.stderr
    doc = json.loads(Path(manifest).read_text())
    doc["batches"][0]["readings"][0]["flags"] = 16
    bad.write_text(json.dumps(doc, indent=1) + "\n")
    check = terrapin("rewards", "verify", "--epoch", epoch, "--manifest", str(bad), timeout=60)
    assert check.returncode == 1 and "recomputed 0" in check.stdout + check.stderr, check.stdout

    # A second run into the same --out replaces the previous network.
    again = terrapin("demo", "--boards", "1", "--readings", "1", "--out", str(out))
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads((out / "summary.json").read_text())["readings"]["stored"] == 1


def test_demo_against_anvil_then_verify_after_exit(
    micropython_exe, mosquitto_exe, anvil_exe, tmp_path
):
    from terrapin.tools.devkit.chainkit import Anvil

    node = Anvil(anvil_exe, tmp_path).start()
    out = tmp_path / "demo"
    try:
        result = terrapin(
            "demo", "--boards", "2", "--readings", "3", "--out", str(out),
            "--rpc", node.url, "--key-env", "DEMO_TEST_KEY",
            env={"DEMO_TEST_KEY": ANVIL_KEY},
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        summary = check_summary(out, 2, 3)
        assert summary["chain"]["network"] == node.url and summary["chain"]["chain_id"] == 31337
        assert not processes_under(out), processes_under(out)
        # The demo has exited; its bundles still check against the node, on chain too.
        for bundle in summary["bundles"]:
            anchor = summary["chain"]["anchor"]
            check = terrapin("verify", bundle, "--rpc", node.url, "--anchor", anchor, timeout=60)
            assert check.returncode == 0, check.stdout + check.stderr
            assert "anchoring transaction" in check.stdout and "contract views" in check.stdout
        assert f"--rpc {node.url} --anchor {anchor}" in summary["verify_command"]
        # ...and so does the epoch's manifest: rewards recomputed from it and the chain.
        command = summary["rewards_verify_command"].split()
        check = terrapin(*command[command.index("rewards") :], timeout=120)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "verified on chain" in check.stdout
    finally:
        node.stop()


def test_demo_with_a_dead_rpc_fails_clearly_and_leaves_nothing_running(mosquitto_exe, tmp_path):
    out = tmp_path / "demo"
    dead = f"http://127.0.0.1:{free_port()}"
    result = terrapin(
        "demo", "--boards", "1", "--readings", "1", "--out", str(out), "--rpc", dead,
        env={"TERRAPIN_CHAIN_KEY": ANVIL_KEY},
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"cannot reach the JSON-RPC node at {dead}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is False and "cannot reach" in summary["error"]
    # Mosquitto had been started before the chain step failed: it is gone.
    assert (out / "network" / "gateway" / "mosquitto" / "run" / "mosquitto.conf").exists()
    assert not processes_under(out), processes_under(out)


def test_demo_without_a_key_for_rpc_says_which_variable(mosquitto_exe, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NO_SUCH_DEMO_KEY"}
    result = subprocess.run(
        [*TERRAPIN, "demo", "--out", str(tmp_path / "d"), "--rpc", "http://127.0.0.1:9",
         "--key-env", "NO_SUCH_DEMO_KEY"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "$NO_SUCH_DEMO_KEY" in result.stderr and "anvil" in result.stderr


def test_demo_without_mosquitto_stops_with_the_apt_hint(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from terrapin.tools.cli.demo import demo
    from terrapin.tools.demo import net as demo_net

    monkeypatch.setattr(demo_net, "find_mosquitto", lambda: None)
    result = CliRunner().invoke(demo, ["--out", str(tmp_path / "d")])
    assert result.exit_code != 0
    assert "mosquitto is not installed" in str(result.exception)
    assert "apt-get install mosquitto" in result.exception.hint


def test_demo_boards_fall_back_to_cpython_and_say_so(mosquitto_exe, tmp_path):
    out = tmp_path / "demo"
    result = terrapin(
        "demo", "--boards", "1", "--readings", "2", "--out", str(out),
        env={"TERRAPIN_MICROPYTHON": str(tmp_path / "no-such-micropython")},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "on CPython instead" in " ".join(result.stdout.split())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["board_runtime"].startswith("CPython")
    assert summary["readings"]["stored"] == 2
    assert not processes_under(out), processes_under(out)


def test_demo_keep_running_serves_status_until_interrupted(
    micropython_exe, mosquitto_exe, tmp_path
):
    import re
    import signal
    import time
    import urllib.request

    out = tmp_path / "demo"
    log = tmp_path / "stdout.txt"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [*TERRAPIN, "demo", "--boards", "1", "--readings", "2", "--out", str(out),
             "--keep-running"],
            stdout=f, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C stops it" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        url = re.search(r"status (http://\S+/api/status)", log.read_text()).group(1)
        with urllib.request.urlopen(url, timeout=5) as resp:
            status = json.loads(resp.read())
        assert status["connected"] and status["counts"]["stored"] >= 2
        stages = status["stages"]
        assert stages["Anchorer"]["batches"] and stages["Batcher"]["batch_seconds"] > 0
        owners = stages["RewardsView"]["owners"]
        assert len(owners) == 1 and int(next(iter(owners.values()))["cumulative"]) > 0
        # The dashboard the demo's last lines name, on the same listener: its board listed
        # with what it measured, and the boards page served.
        text = log.read_text()
        dashboard = re.search(r"dashboard: (http://\S+/)", text).group(1)
        assert (
            f"dashboard {dashboard}," in text
            and f"dashboard: {dashboard} (up until Ctrl-C)" in text
        )
        deadline = time.monotonic() + 20  # the board's status follows its (re)connect
        while True:
            with urllib.request.urlopen(dashboard + "api/boards", timeout=5) as resp:
                boards = json.loads(resp.read())["boards"]
            mine = [b for b in boards if b["owner"]]  # (the demo's own bad envelopes: unbound)
            assert len(mine) == 1 and mine[0]["readings"] >= 2 and mine[0]["latest"]["records"]
            if mine[0]["online"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert mine[0]["firmware"] and mine[0]["online"] is True, mine[0]
        with urllib.request.urlopen(dashboard, timeout=5) as resp:
            assert b"<title>Boards" in resp.read()
        # The rewards page's figures: the one owner claimed all it earned, on chain.
        with urllib.request.urlopen(dashboard + "api/rewards", timeout=5) as resp:
            rewards = json.loads(resp.read())
        (owner_tokens,) = rewards["owner_tokens"].values()
        assert owner_tokens["claimed"] == owner_tokens["earned"] != "0", rewards
        # Amounts in token units on every line: no base-unit integer (10**18 per token).
        assert not re.search(r"(?<![\w.])\d{19,}(?![\w.])", text), text
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "stopping the network" in log.read_text()
    assert not processes_under(out), processes_under(out)


def test_demo_interrupted_mid_run_stops_everything(micropython_exe, mosquitto_exe, tmp_path):
    import signal
    import time

    out = tmp_path / "demo"
    log = tmp_path / "stdout.txt"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [*TERRAPIN, "demo", "--boards", "2", "--readings", "1000", "--out", str(out)],
            stdout=f, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        # Interrupt while the boards are publishing (1000 readings would take minutes).
        while len(list(out.glob("network/boards/*/app-1.log"))) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        time.sleep(1.0)
        assert processes_under(out), "boards and Mosquitto should be running now"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "interrupted" in log.read_text()
    assert not processes_under(out), processes_under(out)
