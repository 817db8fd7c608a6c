"""/metrics of a live gateway (real Mosquitto, the embedded chain, batch + anchor
stages), read with Prometheus's own parser and linted by promtool: per-board last
seen, readings, rejections by reason, anchoring (pending, oldest unanchored, batches,
last block) and the anchorer's last error as a state an alert can see."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import shutil
import sqlite3
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from terrapin.gateway.metrics import error_label
from terrapin.tools.cli.main import main
from terrapin.tools.devkit.gatewayhome import REPO, GatewayHome, chain_section, reload_broker
from terrapin.tools.devkit.gatewayproc import GatewayThread
from terrapin.tools.devkit.simboard import SimBoard

_CHAINS = itertools.count(1)


def scrape(home: GatewayHome) -> str:
    url = f"http://127.0.0.1:{home.api_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return resp.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} as Prometheus parses the exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(parsed: dict, name: str, **labels: str) -> float | None:
    return parsed.get((name, frozenset(labels.items())))


def wait_for(check, timeout: float = 60.0, what: str = "") -> dict:
    deadline = time.monotonic() + timeout
    while True:
        parsed = check()
        if parsed is not None:
            return parsed
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


@contextlib.contextmanager
def running_gateway(tmp_path, rewards: bool):
    """A gateway thread with the batch and anchor stages (and rewards, with 2 s epochs,
    so its metrics show within a test), a Mosquitto and one connected SimBoard."""
    from terrapin.tools.devkit.gatewayhome import start_broker

    # The process keeps one embedded chain per [chain] section (chain_for): a section of
    # its own (gas_limit) gives this gateway a fresh chain, not the last test's.
    home = GatewayHome(tmp_path / "gw", chain_section(gas_limit=120_000 + next(_CHAINS)))
    if rewards:
        text = home.config_path.read_text().replace(
            'stages = ["batch", "anchor"]', 'stages = ["batch", "anchor", "rewards"]'
        )
        home.config_path.write_text(text + "\n[rewards]\nepoch_seconds = 2\npoll_seconds = 0.5\n")
    broker = start_broker(home)
    key, password = home.add_sim_board()
    reload_broker(broker)
    gw = GatewayThread(home.config).start(timeout=60)
    board = SimBoard("127.0.0.1", home.mqtt_port, key, password=password).start()
    try:
        yield home, board, gw
    finally:
        board.stop()
        gw.stop()
        broker.stop()


@pytest.fixture
def chain_gateway(tmp_path, mosquitto_exe):
    with running_gateway(tmp_path, rewards=False) as (home, board, gw):
        yield home, board, gw


@pytest.fixture
def rewards_gateway(tmp_path, mosquitto_exe):
    with running_gateway(tmp_path, rewards=True) as (home, board, gw):
        yield home, board, gw


def test_metrics_show_boards_anchoring_and_a_stuck_anchorer(chain_gateway, monkeypatch, capsys):
    home, board, gw = chain_gateway
    addr = board.address.hex()
    for seq in range(1, 6):
        board.publish(board.envelope(seq), seq)
    assert board.wait_settled(range(1, 6), timeout=30)
    bad = bytearray(board.envelope(6))
    bad[-1] ^= 1  # the signature's last byte: BAD_SIGNATURE
    board.publish(bytes(bad), 6)

    def anchored():
        p = samples(scrape(home))
        done = (value(p, "terrapin_anchor_batches", state="confirmed") or 0) + (
            value(p, "terrapin_anchor_batches", state="anchored") or 0
        )
        rejected = value(p, "terrapin_board_rejections_total", board=addr, reason="BAD_SIGNATURE")
        if done >= 1 and value(p, "terrapin_anchor_pending_readings") == 0 and rejected:
            return p
        return None

    p = wait_for(anchored, what="the 5 readings anchored and the bad one counted")
    assert value(p, "terrapin_board_readings_total", board=addr) == 5
    assert 0 <= value(p, "terrapin_board_last_seen_age_seconds", board=addr) < 60
    assert value(p, "terrapin_board_info", board=addr, label="") == 1
    assert value(p, "terrapin_gateway_rejected_total", reason="BAD_SIGNATURE") == 1
    assert value(p, "terrapin_anchor_oldest_unanchored_age_seconds") == 0
    assert value(p, "terrapin_anchor_last_block") >= 1
    assert value(p, "terrapin_stage_running", stage="anchor") == 1
    assert value(p, "terrapin_stage_error", stage="anchor") == 0
    assert value(p, "terrapin_anchor_failures_total", kind="reverted") == 0
    assert value(p, "terrapin_gateway_store_readable") == 1

    # The anchorer meets a state it cannot fix (the chain holds another root for a batch
    # it believes in flight): it logs "anchoring stopped" and retries; /metrics says so.
    conn = sqlite3.connect(home.db_path)
    with conn:
        conn.execute("UPDATE batches SET status = 'sent', root = ? WHERE id = 0", (b"\x01" * 32,))
    conn.close()
    for seq in range(7, 10):
        board.publish(board.envelope(seq), seq)
    assert board.wait_settled(range(7, 10), timeout=30)

    def stuck():
        p = samples(scrape(home))
        if value(p, "terrapin_stage_error", stage="anchor") == 1:
            return p
        return None

    try:
        p = wait_for(stuck, what="the anchorer's error in /metrics")
    except AssertionError as exc:  # say what the stages said
        raise AssertionError(f"{exc}; stages: {gw.gateway.snapshot()['stages']}") from None
    errors = [k for k in p if k[0] == "terrapin_stage_error_info"]
    assert len(errors) == 1 and ("stage", "anchor") in errors[0][1]
    message = dict(errors[0][1])["error"]
    assert message.startswith("batch 0 on chain holds root") and "ours is 0x0101" in message
    assert "retrying" not in message
    time.sleep(1.0)
    p = samples(scrape(home))
    assert value(p, "terrapin_anchor_pending_readings") >= 3
    assert value(p, "terrapin_anchor_oldest_unanchored_age_seconds") >= 1.0

    # `terrapin gateway status` shows the same: pending readings, the last batch, the
    # error, in 80 columns without cutting a word, times as local time and age.
    monkeypatch.setenv("COLUMNS", "80")
    capsys.readouterr()
    assert main(["gateway", "status", "--config", str(home.config_path)]) == 0
    out = capsys.readouterr().out
    print(out)
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), out
    assert re.search(
        r"^anchoring  pending \d+ readings, oldest \d\d:\d\d:\d\d \(\d+ s ago\)", out, re.M
    )
    words = " ".join(out.split())
    assert re.search(r"batches: (\d pending, )?1 sent, 0 confirmed, no batch anchored yet", words)
    assert "LAST ERROR (anchor): batch 0 on chain holds root 0x" in out
    assert "ours is 0x01010101…0101 (retrying every 60 s without limit)" in words
    assert not re.search(r"\b1[6-9]\d{8}\b", out)  # no epoch seconds anywhere
    assert board.address.hex()[:8] in out and "rejected   BAD_SIGNATURE 1" in out


def test_metrics_pass_promtool_lint(chain_gateway):
    if shutil.which("promtool") is None:
        pytest.skip("promtool is missing: `make check-apt` installs Debian's prometheus")
    home, board, _gw = chain_gateway
    board.publish(board.envelope(1), 1)
    assert board.wait_settled([1], timeout=30)
    text = scrape(home)
    proc = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    # promtool lints names, units and help; it exits non-zero on any problem it finds.
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_metrics_without_a_database(tmp_path):
    from terrapin.gateway.metrics import render
    from terrapin.gateway.stats import Stats

    snap = Stats().snapshot()
    text = render(snap, tmp_path / "missing.db").decode()
    p = samples(text)
    assert value(p, "terrapin_gateway_store_readable") == 0
    assert value(p, "terrapin_gateway_stored_total") == 0
    assert not [k for k in p if k[0].startswith("terrapin_anchor_")]


def test_error_label_is_stable_across_retries():
    a = error_label("chain unreachable: refused (attempt 3, retrying without limit)\nmore")
    b = error_label("chain unreachable: refused (attempt 4, retrying without limit)")
    assert a == b == "chain unreachable: refused"
    assert len(error_label("x" * 1000)) == 160


ALERTS = REPO / "ops" / "prometheus" / "alerts.yml"
ALERT_TESTS = REPO / "ops" / "prometheus" / "alerts_test.yml"
DASHBOARD = REPO / "ops" / "grafana" / "terrapin.json"
METRIC_NAME = re.compile(r"\bterrapin_[a-z_]+\b")


def names_in(text: str) -> set[str]:
    return set(METRIC_NAME.findall(text))


def ops_expressions() -> dict[str, list[str]]:
    """Every PromQL expression of the alert rules and of the dashboard's panels."""
    import yaml

    rules = yaml.safe_load(ALERTS.read_text())
    alerts = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    alerts += [r["annotations"]["description"] for g in rules["groups"] for r in g["rules"]]
    dash = json.loads(DASHBOARD.read_text())
    panels = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    panels += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
    return {"alerts": alerts, "dashboard": panels}


def exported_names(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        if family.type == "counter":  # a family without samples yet still says its name
            names.add(family.name + "_total")
        names.update(s.name for s in family.samples)
    return names


def test_alerts_and_dashboard_use_only_metrics_a_live_gateway_exports(rewards_gateway):
    home, board, _gw = rewards_gateway
    wanted = set().union(*(names_in(e) for exprs in ops_expressions().values() for e in exprs))
    assert "terrapin_anchor_oldest_unanchored_age_seconds" in wanted  # the parse found them
    for seq in range(1, 4):
        board.publish(board.envelope(seq), seq)
    assert board.wait_settled(range(1, 4), timeout=30)

    def all_there():
        missing = wanted - exported_names(scrape(home))
        return None if missing else True

    try:
        wait_for(all_there, timeout=60, what="every metric the ops files use")
    except AssertionError:
        missing = sorted(wanted - exported_names(scrape(home)))
        raise AssertionError(f"ops/ uses metrics /metrics does not export: {missing}") from None


def test_dashboard_is_grafana_json():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert p["type"] in {"timeseries", "stat", "table"} and p["targets"], p["title"]
        assert (
            set(p["gridPos"]) == {"h", "w", "x", "y"}
            and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        )
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_alert_rules_pass_promtool():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is missing: `make check-apt` installs Debian's prometheus")
    check = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # The unit tests: each alert fires on its input series at the expected time, with
    # the expected labels and text, and stays quiet on the healthy ones.
    unit = subprocess.run(
        [promtool, "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True, timeout=60
    )
    assert unit.returncode == 0 and "SUCCESS" in unit.stdout, unit.stdout + unit.stderr
