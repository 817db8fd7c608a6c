"""Readings through a real Mosquitto (generated passwords + ACL) into the store."""

from __future__ import annotations

import json
import urllib.request

from terrapin.gateway.store import Store


def test_readings_are_stored_once_and_acked(gw_home, gw_running, gw_board):
    seqs = list(range(1, 41))
    for s in seqs:
        gw_board.publish(gw_board.envelope(s), s)
    assert gw_board.wait_settled(seqs, 10), f"not acked: {sorted(set(seqs) - gw_board.acked)}"
    assert gw_board.acked == set(seqs)
    # The same envelopes again: duplicates, acked again, not stored twice.
    gw_board.acked.clear()
    for s in seqs[:10]:
        gw_board.publish(gw_board.outbox.get(s) or gw_board.envelope(s), s)
    counts = gw_running.counts
    store = Store(gw_home.config.store.path)
    try:
        assert store.count_readings(gw_board.address) == 40
    finally:
        store.close()
    assert counts["stored"] == 40
    url = f"http://127.0.0.1:{gw_home.api_port}/api/status"
    status = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert status["boards"][gw_board.hex]["last_seq"] == 40
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{gw_home.api_port}/metrics").read().decode()
    assert "terrapin_gateway_stored_total 40" in metrics
