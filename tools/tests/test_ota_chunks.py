"""The pure parts of firmware updates over MQTT: the board's chunk assembler and
offer parser (firmware/ota_mqtt.py) against the publisher's encoder
(tools/board/ota_publish.py), on CPython and on the MicroPython unix port."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from terrapin.firmware.ota_mqtt import MAX_CHUNK, Assembler, parse_offer
from terrapin.tools.board import ota_publish
from terrapin.tools.micropython import ESP32_HEAP

REPO = Path(__file__).resolve().parents[2]


def offer_bytes(**over) -> bytes:
    bundle = b"x" * 1000
    offer = ota_publish.offer_for_parts(bundle, version="0.2.0", release=3)
    offer.update(over)
    return json.dumps(offer).encode()


def assemble(bundle: bytes, chunk: int, serve) -> tuple[Assembler, io.BytesIO]:
    """Run the board's request/answer loop against `serve(offset, length) -> payload`."""
    digest = hashlib.sha256(bundle).digest()
    slot = io.BytesIO()
    asm = Assembler(slot, len(bundle), digest, chunk)
    for _ in range(10 * (len(bundle) // chunk + 2)):
        want = asm.want()
        if want is None:
            break
        asm.feed(memoryview(serve(*want)))
    return asm, slot


def test_publisher_offer_is_what_the_board_parses():
    bundle = os.urandom(5000)
    offer = ota_publish.offer_for_parts(bundle, version="1.2.3", release=7)
    got = parse_offer(json.dumps(offer).encode())
    assert got["digest"] == hashlib.sha256(bundle).digest()
    assert (got["version"], got["release"], got["size"], got["chunk"]) == (
        "1.2.3",
        7,
        5000,
        MAX_CHUNK,
    )
    # A chunk (topic + header + 384 bytes) fits the board's 512-byte MQTT buffer.
    topic = "terrapin/v1/" + "ab" * 20 + "/ota/chunk"
    packet = 3 + 2 + len(topic) + 2 + 12 + MAX_CHUNK
    assert packet <= 512


@pytest.mark.parametrize(
    "over, why",
    [
        ({"v": 2}, "offer format"),
        ({"release": 0}, "release"),
        ({"release": True}, "release"),
        ({"size": -1}, "size"),
        ({"size": 10**7}, "version or size"),
        ({"chunk": "384"}, "chunk"),
        ({"version": ""}, "version or size"),
        ({"version": "x" * 33}, "version or size"),
        ({"sha256": "ab"}, "sha256"),
    ],
)
def test_bad_offers_are_refused(over, why):
    with pytest.raises(ValueError, match=why):
        parse_offer(offer_bytes(**over))
    with pytest.raises(ValueError):
        parse_offer(b"not json")


def test_chunk_size_is_clamped_to_the_board_buffer():
    assert parse_offer(offer_bytes(chunk=4096))["chunk"] == MAX_CHUNK
    assert parse_offer(offer_bytes(chunk=1))["chunk"] == 16


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 3000), chunk=st.integers(16, MAX_CHUNK), seed=st.integers(0, 2**32))
def test_chunks_in_order_rebuild_the_bundle(size, chunk, seed):
    bundle = hashlib.sha256(seed.to_bytes(8, "big")).digest() * (size // 32 + 1)
    bundle = bundle[:size]
    bid = hashlib.sha256(bundle).digest()[:8]
    asm, slot = assemble(
        bundle, chunk, lambda off, n: ota_publish.encode_chunk(bid, off, bundle[off : off + n])
    )
    assert asm.want() is None and asm.intact()
    assert slot.getvalue() == bundle


def test_wrong_chunks_are_ignored_and_asked_again():
    bundle = os.urandom(1000)
    bid = hashlib.sha256(bundle).digest()[:8]
    answers = []

    def serve(off, n):
        good = ota_publish.encode_chunk(bid, off, bundle[off : off + n])
        k = len(answers)
        answers.append(off)
        if k == 1:
            return ota_publish.encode_chunk(b"other id", off, bundle[off : off + n])
        if k == 2:
            return ota_publish.encode_chunk(bid, off + 1, bundle[off : off + n])  # wrong offset
        if k == 3:
            return good[:-1]  # short
        if k == 4:
            return good + b"!"  # long
        return good

    asm, slot = assemble(bundle, 256, serve)
    assert asm.intact() and slot.getvalue() == bundle
    assert answers[1:5] == [256] * 4  # the same offset asked for until the right chunk came


def test_served_bytes_that_are_not_the_offered_bundle_fail_the_hash():
    bundle = os.urandom(700)
    served = bytearray(bundle)
    served[500] ^= 1
    bid = hashlib.sha256(bundle).digest()[:8]
    asm, _ = assemble(
        bundle, 100, lambda off, n: ota_publish.encode_chunk(bid, off, bytes(served[off : off + n]))
    )
    assert asm.want() is None and not asm.intact()


def test_requests_and_reports_decode_on_the_host():
    bid = b"12345678"
    assert ota_publish.decode_get(struct.pack(">8sIH", bid, 768, 384)) == (bid, 768, 384, "")
    report = struct.pack(">8sIH", bid, 0xFFFFFFFF, 4) + b"SignatureError: x"
    assert ota_publish.decode_get(report) == (bid, ota_publish.REPORT, 4, "SignatureError: x")
    with pytest.raises(ValueError):
        ota_publish.decode_get(b"short")


MP_SCRIPT = """
import sys, io, hashlib, json
sys.path.append(%r)
from firmware.ota_mqtt import Assembler, parse_offer
bundle = bytes(range(256)) * 7 + b"end"
digest = hashlib.sha256(bundle).digest()
offer = parse_offer(json.dumps({"v": 1, "version": "0.2.0", "release": 2, "size": len(bundle),
    "sha256": "".join("%%02x" %% b for b in digest), "chunk": 384}).encode())
slot = io.BytesIO()
asm = Assembler(slot, offer["size"], offer["digest"], offer["chunk"])
n = 0
while asm.want():
    off, ln = asm.want()
    asm.feed(memoryview(digest[:8] + off.to_bytes(4, "big") + bundle[off:off + ln]))
    n += 1
print(json.dumps({"ok": asm.intact(), "same": slot.getvalue() == bundle, "chunks": n}))
"""


def test_assembler_on_the_micropython_unix_port(micropython_exe):
    proc = subprocess.run(
        [micropython_exe, "-X", f"heapsize={ESP32_HEAP}", "-c", MP_SCRIPT % str(REPO)],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    got = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert got == {"ok": True, "same": True, "chunks": 5}


def test_all_boards_come_from_the_gateway_allow_list(tmp_path):
    import sqlite3

    from terrapin.gateway.errors import TerrapinError

    db = tmp_path / "gw.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE devices (address BLOB PRIMARY KEY, pubkey BLOB, added_at REAL)")
    con.executemany("INSERT INTO devices(address) VALUES (?)", [(b"\x22" * 20,), (b"\x11" * 20,)])
    con.commit()
    con.close()
    assert ota_publish.all_boards(db) == ["11" * 20, "22" * 20]
    with pytest.raises(TerrapinError):
        ota_publish.all_boards(tmp_path / "missing.db")


def test_publish_command_needs_boards_a_bundle_and_a_broker(tmp_path, capsys):
    from terrapin.tools.cli.main import main
    from terrapin.tools.devkit.broker import free_port

    toml = tmp_path / "gateway.toml"
    toml.write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {free_port()}\n')
    (tmp_path / "ota.secret").write_text("ota-password\n")  # the OTA user's, from init
    bundle = tmp_path / "fw.tpota"
    bundle.write_bytes(b"TPOTA1\n" + (2).to_bytes(4, "big") + b"{}" + bytes(64))
    args = ["device", "ota", "publish", str(bundle), "--config", str(toml)]
    assert main([*args, "--address", "12" * 20]) == 1
    assert "not a Terrapin OTA bundle" in capsys.readouterr().err
    manifest = b'{"release":1,"version":"0.2.0"}'
    bundle.write_bytes(b"TPOTA1\n" + len(manifest).to_bytes(4, "big") + manifest + bytes(64))
    assert main(args) == 1
    assert "--address" in capsys.readouterr().err
    assert main([*args, "--address", "nothex"]) == 1
    assert "not a board address" in capsys.readouterr().err
    assert main([*args, "--address", "12" * 20, "--timeout", "1"]) == 1
    assert "cannot reach the broker" in capsys.readouterr().err
