"""Publishes stored readings to Home Assistant ([homeassistant] enabled in gateway.toml).

The server calls `publish(result.values)` after a batch's transaction committed, next
to the ACKs, so only stored readings ever reach Home Assistant: a rejected one never
does, a duplicate is not published twice. For each board, in seq order, each reading
newer than the last one published goes to the board's state topic (retained: Home
Assistant shows the last value after its restart), and a sensor seen for the first
time since the gateway started gets its discovery config first (retained, QoS 1).
The mapping is gateway/homeassistant.py; docs/GATEWAY.md, "Home Assistant".
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from terrapin.gateway import homeassistant as ha

log = logging.getLogger("terrapin.gateway.homeassistant")

# publish(topic, payload, retain)
Publish = Callable[[str, bytes, bool], None]
MAX_SENSORS_PER_BOARD = 16  # a reading holds at most 16 records (docs/PROTOCOL.md)


class HomeAssistantPublisher:
    def __init__(
        self,
        settings: Any,
        publish: Publish,
        *,
        board_status: Callable[[str], dict | None] | None = None,
        label: Callable[[str], str] | None = None,
        version: str = "",
    ):
        """`settings`: the [homeassistant] section; `board_status(board hex)`: the board's
        last status message (its firmware version goes into the device block);
        `label(board hex)`: its allow-list label, the device's name in Home Assistant."""
        self.discovery_prefix = settings.discovery_prefix
        self.state_prefix = settings.state_prefix
        self._publish = publish
        self._board_status = board_status
        self._label = label
        self.version = version
        self.announced: dict[str, set[str]] = {}  # board -> record names with a config
        self.last_seq: dict[str, int] = {}
        self.published = 0
        self.skipped_names = 0

    def publish(self, values: list[tuple[str, int, int, list]]) -> None:
        for board, seq, t, records in sorted(values, key=lambda v: (v[0], v[1])):
            if seq <= self.last_seq.get(board, -1):
                continue  # an older reading (an outbox replay): the state keeps the newer
            self._announce(board, records)
            self._publish(
                ha.state_topic(self.state_prefix, board),
                ha.state_payload(seq, t, [tuple(r) for r in records]),
                True,
            )
            self.last_seq[board] = seq
            self.published += 1

    def _announce(self, board: str, records: list) -> None:
        known = self.announced.setdefault(board, set())
        for name, unit, _value in records:
            if name in known:
                continue
            if not ha.SAFE_NAME.match(name) or len(known) >= MAX_SENSORS_PER_BOARD:
                self.skipped_names += 1
                log.warning(
                    "home assistant: record %r of board %s not published (name must be "
                    "1-64 of A-Z a-z 0-9 _ . -; at most %d sensors a board)",
                    name[:80],
                    board,
                    MAX_SENSORS_PER_BOARD,
                )
                known.add(name)  # warn once
                continue
            status = (self._board_status(board) if self._board_status else None) or {}
            firmware = status.get("fw") if isinstance(status.get("fw"), str) else None
            config = ha.discovery_config(
                board,
                name,
                unit,
                state_prefix=self.state_prefix,
                label=self._label(board) if self._label else "",
                firmware=firmware,
                version=self.version,
            )
            self._publish(
                ha.discovery_topic(self.discovery_prefix, board, name),
                json.dumps(config, sort_keys=True).encode(),
                True,
            )
            known.add(name)
            log.info("home assistant: announced %s of board %s", name, board)


def for_gateway(cfg: Any, ingest: Any, stats: Any) -> HomeAssistantPublisher | None:
    """The publisher of a Gateway (server.py), or None unless [homeassistant] enabled.
    Publishes through the gateway's own MQTT session (the broker ACL lets its user)."""
    settings = getattr(cfg, "homeassistant", None)
    if settings is None or not settings.enabled:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("terrapin")
    except PackageNotFoundError:
        ours = ""

    def publish(topic: str, payload: bytes, retain: bool) -> None:
        ingest.client.publish(topic, payload, qos=1, retain=retain)

    log.info(
        "home assistant: discovery under %s/, values under %s/",
        settings.discovery_prefix,
        settings.state_prefix,
    )
    return HomeAssistantPublisher(
        settings,
        publish,
        board_status=stats.board_status.get,
        label=lambda board: label_of(cfg.store.path, board),
        version=ours,
    )


def label_of(db_path: Any, board: str) -> str:
    """The board's allow-list label ("" if none or unreadable): read once per sensor
    announced, with its own read-only connection."""
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=2.0)
        try:
            row = conn.execute(
                "SELECT label FROM devices WHERE address = ?", (bytes.fromhex(board),)
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return ""
    return row[0] if row and row[0] else ""
