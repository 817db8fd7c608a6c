"""The dashboard in a real headless Chromium, on the bench's real parts: a board (the
firmware on the MicroPython unix port by default) signs readings and sends them
through Mosquitto to the `terrapin gateway run` process, which anchors them on anvil.
The boards page lists the board, its page charts exactly the readings it just sent,
a proof downloaded from the page passes `terrapin verify` against the chain, and no
page logs a console error. Screenshots go to .cache/dashboard/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from terrapin.hil.endstate import stored_seqs, wait_anchored
from terrapin.tools.cli.main import main
from terrapin.tools.devkit.browser import BrowserMissing, chromium

pytestmark = [pytest.mark.mosquitto, pytest.mark.micropython, pytest.mark.anvil]

READINGS = 20


@pytest.fixture
def browser():
    try:
        with chromium() as b:
            yield b
    except BrowserMissing as exc:  # skipped here, a failure under CI (the skip rule)
        pytest.skip(f"{exc} ({exc.hint})")


def test_dashboard_shows_and_proves_what_a_board_just_sent(
    board, gateway_home, chain, browser, target, tmp_path: Path, capsys
) -> None:
    board.start("--max-readings", str(READINGS), "--exit-when-drained")
    assert board.wait_exit(90 * board.wait_scale) == 0, board.console_tail()
    signed = board.signed()
    assert len(signed) >= READINGS, board.console_tail()
    wait_anchored(gateway_home.db_path, [board], 60)
    # What the gateway holds from the board: every reading its console named, and on a
    # serial or qemu board more (each reboot of its provisioning and of the sampling
    # switch takes one reading at once; a qemu board's first boot, on the image's
    # config, signs some without naming them).
    stored = stored_seqs(gateway_home.db_path, board)
    assert set(signed) <= set(stored), (signed, stored)
    base = f"http://127.0.0.1:{gateway_home.api_port}/"
    address = "0x" + board.address

    page = browser.open(base)
    page.wait_for_selector(f'tr[data-board="{address}"]')
    browser.screenshot(page, f"boards-{target}")

    page = browser.open(base + "boards/" + address)
    page.wait_for_selector(".chart[data-points] canvas")
    charts = page.eval_on_selector_all(
        ".chart", "cs => cs.map(c => [c.dataset.series, +c.dataset.points, +c.dataset.lastSeq])"
    )
    assert charts, "no chart on the board page"
    for series, points, last in charts:  # every sensor: every reading the gateway stored
        assert (points, last) == (len(stored), max(stored)), (series, points, last, stored)
    page.wait_for_selector(f"tr[data-seq='{max(signed)}'] a.proof")
    browser.screenshot(page, f"board-{target}")

    with page.expect_download() as download:
        page.click(f"tr[data-seq='{max(signed)}'] a.proof")
    proof = tmp_path / "proof.json"
    download.value.save_as(proof)
    assert json.loads(proof.read_text())["seq"] == max(signed)
    capsys.readouterr()
    code = main(["verify", str(proof), "--rpc", chain.rpc_url, "--anchor", chain.section["anchor"]])
    out = capsys.readouterr().out
    assert code == 0, out

    page = browser.open(base + "batches")
    page.wait_for_selector("tr[data-batch]")
    browser.screenshot(page, f"batches-{target}")
    page = browser.open(base + "rewards")
    page.wait_for_selector("#summary .card")
    assert browser.errors == [], browser.errors
