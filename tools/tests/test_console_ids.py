"""TP1 request ids: the board echoes `#<id>` in its answer, the host takes only the
answer to its own request (issue 18: late `info` answers from boot-time polls
were taken as the answers to later commands)."""

from __future__ import annotations

import base64
import json

import pytest

from terrapin.firmware import console as fwconsole
from terrapin.tools.board.serialconsole import BoardError, NoAnswer, answer_of, parse_line


def answers(tmp_path, *lines: str) -> list[str]:
    out = bytearray()
    con = fwconsole.Console(str(tmp_path), out.extend)
    for line in lines:
        con.feed(line.encode() + b"\r\n")
    return bytes(out).decode().splitlines()


def test_board_echoes_the_request_id_in_ok_and_err(tmp_path):
    ok, err, plain = answers(tmp_path, "TP1 #a7 info", "TP1 #Z9 frobnicate", "TP1 info")
    assert ok.startswith("TP1 OK #a7 {") and json.loads(ok[len("TP1 OK #a7 ") :])["proto"] == 1
    assert err == "TP1 ERR #Z9 BAD_COMMAND unknown command frobnicate"
    assert plain.startswith("TP1 OK {")  # without an id, TP1 as before


@pytest.mark.parametrize("rid", ["#", "#" + "1" * 17, "#a-b", "#\u00e9"])
def test_a_bad_request_id_is_refused_without_echoing_it(tmp_path, rid):
    (line,) = answers(tmp_path, f"TP1 {rid} info")
    assert line == "TP1 ERR BAD_COMMAND request id must be 1-16 letters or digits"


def test_an_over_long_line_is_refused_with_its_id(tmp_path):
    (line,) = answers(tmp_path, "TP1 #k9 config-set " + "A" * 3000)
    assert line == "TP1 ERR #k9 TOO_LONG line longer than 1536 bytes"
    (line,) = answers(tmp_path, "TP1 config-set " + "A" * 3000)
    assert line == "TP1 ERR TOO_LONG line longer than 1536 bytes"


def test_host_matches_answers_by_id():
    kind, rid, rest = parse_line(b'TP1 OK #ab1 {"x": 1}\r\n')
    assert (kind, rid, rest) == (b"OK", "ab1", b'{"x": 1}')
    assert answer_of("ab1", kind, rid, rest, "info") == {"x": 1}
    assert answer_of("ab2", kind, rid, rest, "info") is None  # stale: an earlier request's
    assert answer_of("ab2", b"OK", None, b"{}", "info") is None  # no id: not ours either
    with pytest.raises(BoardError) as err:
        answer_of("ab3", *parse_line(b"TP1 ERR #ab3 LOCKED trust keys are locked")[:3], "x")
    assert err.value.code == "LOCKED"
    old = parse_line(b"TP1 ERR BAD_COMMAND unknown command #ab4")
    with pytest.raises(BoardError, match="does not know TP1 request ids"):
        answer_of("ab4", *old, "config-set")
    assert parse_line(b"boot log line") is None


def test_late_answers_are_never_taken_for_a_later_request(board):
    """Over a real serial path to the firmware on the unix port: answers to
    earlier requests (polls without ids, a request that timed out) arrive first."""
    con = board.console()
    try:
        con.wait_ready(15)
        for _ in range(3):  # boot-time polls the host gave up on
            con.link.write(b"TP1 info\n")
        with pytest.raises(NoAnswer):
            con.request("keygen", timeout=0.001)  # its answer comes, but late
        cfg = base64.b64encode(json.dumps({"sample_period_s": 7}).encode()).decode()
        answer = con.request("config-set", cfg, timeout=30)
        assert answer["keys"] == ["sample_period_s"], (answer, board.context())
        assert con.stale >= 3, board.context()
        assert json.loads((board.flash / "config.json").read_text())["sample_period_s"] == 7
        info = con.request("info")
        assert "proto" in info and info["addr"], info  # keygen ran; info is info's answer
    finally:
        con.link.close()
