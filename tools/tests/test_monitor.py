"""Monitor: the board's console over pty/TCP with status lines decoded."""

from __future__ import annotations

import json
import socket

from terrapin.tools.board.monitor import decode_line, describe, monitor
from terrapin.tools.board.serialconsole import Link, open_port
from terrapin.tools.cli.main import main

STATUS = {
    "state": "online",
    "fw": "0.1.0",
    "addr": "ab" * 20,
    "pub": "04" + "cd" * 64,
    "seq": 42,
    "outbox": 3,
    "dropped": 0,
    "heap_free": 40960,
    "time_synced": True,
    "errors": ["sensor bme280: no answer at 0x76"],
}


def test_status_line_decoding():
    text, ev = decode_line(b"TP1 EV " + json.dumps(STATUS).encode() + b"\r\n")
    assert ev == STATUS
    assert text == (
        "online · board abababab… · fw 0.1.0 · seq 42 · outbox 3 · dropped 0 · clock synced"
        " · heap free 40.0 KB · errors: sensor bme280: no answer at 0x76"
    )
    assert decode_line(b"plain log line\r\n") == ("plain log line", None)
    assert decode_line(b"TP1 EV {broken\n") == ("TP1 EV {broken", None)
    assert describe({"state": "boot"}) == "boot"


def test_monitor_shows_decoded_status_over_serial(start_board, capsys):
    for kind in ("pty", "tcp"):
        board = start_board(kind, "--status-every", "0.4", name="flash-" + kind)
        link = board.link()
        seen = []

        def online(seen=seen):
            return sum(1 for _, ev in seen if ev and ev["state"] == "online") >= 2

        try:
            monitor(
                link, lambda text, ev, seen=seen: seen.append((text, ev)), duration=15, stop=online
            )
        finally:
            link.close()
        events = [ev for _, ev in seen if ev is not None and ev["state"] != "boot"]
        assert len(events) >= 2, (kind, seen, board.context())
        assert all(ev["state"] == "online" and ev["fw"] == "0.1.0" for ev in events), seen
        assert any(text.startswith("online · fw 0.1.0 · heap free ") for text, _ in seen)

        if kind == "pty":
            continue  # the command itself once, over TCP
        assert main(["device", "monitor", "--port", board.port, "--for", "1.5", "--json"]) == 0
        lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert any(x["state"] == "online" for x in lines), board.context()


def test_monitor_hides_the_uplink_frames_of_a_shared_line():
    """On a UART0 shared with the serial uplink, TPX frames are not console lines."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    link = Link(open_port(f"socket://127.0.0.1:{port}"))
    conn, _ = server.accept()
    try:
        status = b"TP1 EV " + json.dumps(STATUS).encode() + b"\r\n"
        conn.sendall(b"TPX W 128\n" + b"boot log\r\n" + b"TPX D EAAEAAA=\n" + status)
        seen: list[tuple[str, dict | None]] = []
        monitor(
            link, lambda text, ev: seen.append((text, ev)), duration=3, stop=lambda: len(seen) >= 2
        )
    finally:
        link.close()
        conn.close()
        server.close()
    assert seen[0][0] == "boot log"
    assert seen[1][1] == STATUS
    assert not any(text.startswith("TPX") for text, _ in seen), seen
