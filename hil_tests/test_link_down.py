"""A board never blocks its main loop on a link (issue 18: while the serial
uplink waited for the host's `TPX K`, the open loop held the main loop ~8-28 s
per try: no sampling, no signing, no console). Here the link never answers:
readings are still signed and stored in the outbox, and the console answers."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from terrapin.hil.boards import REPO, compile_firmware
from terrapin.tools.board.serialconsole import BoardConsole, Link, open_port
from terrapin.tools.devkit.appboard import poll_info
from terrapin.tools.devkit.virtualboard import VirtualBoard
from terrapin.tools.micropython import ESP32_HEAP

SCRIPT = Path(__file__).resolve().parent / "mp_silent_link_board.py"


def test_a_link_that_never_answers_blocks_nothing(tmp_path, micropython_exe):
    compile_firmware()
    flash = tmp_path / "flash"
    flash.mkdir()
    fifo = tmp_path / "link.fifo"
    os.mkfifo(fifo)
    held = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer that never writes
    (flash / "config.json").write_text(
        json.dumps(
            {
                "broker": {"host": "gw.local", "port": 1883},
                "sample_period_s": 0.25,
                "log": "debug",
            }
        )
    )
    vb = VirtualBoard(
        flash,
        script=SCRIPT,
        args=(str(REPO), str(fifo), "--config", "config.json", "--flash", ".", "--console"),
        tcp_port=None,
        # The console beside the app: the ESP32 image's free heap at boot in
        # 64-bit terms (tools/micropython.py, docs/FIRMWARE.md).
        heapsize=ESP32_HEAP,
        deploy=False,
        restart=False,
    ).start()
    link = Link(open_port(vb.pty_path))
    try:
        con = BoardConsole(link)
        con.wait_ready(60)
        slowest, answers = poll_info(con, 12)  # longer than one 8 s open timeout
        log = vb.console_log()
        stored = [int(s) for s in re.findall(r"stored seq (\d+)", log)]
        sent = (flash / "link.out").read_bytes()
        context = f"\n--- console ---\n{log[-2500:]}\n--- link ---\n{sent[-300:]!r}"
        assert sent.startswith(b"TPX O gw.local 1883\n"), context  # it did try to open
        assert b"TPX D" not in sent, context  # and never got a link to send on
        assert slowest < 2.0 and answers >= 20, (slowest, answers, context)
        assert len(stored) >= 30, (len(stored), context)  # 12 s at 0.25 s: ~48
        assert stored == sorted(set(stored)), context
        assert "connected to" not in log and "Traceback" not in log, context
        pending = con.request("info")["outbox"]
        assert pending >= len(stored) - 1, (pending, context)  # kept for the link
    finally:
        link.close()
        vb.stop()
        os.close(held)
