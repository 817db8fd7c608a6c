"""Firmware updates on the unix target: a good bundle is applied and kept, a
tampered one refused, one whose firmware crashes at boot rolled back."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from coincurve import PrivateKey

from terrapin.tools.board import ota as host
from terrapin.tools.board.deploy import FIRMWARE_DIR, DirTarget
from terrapin.tools.board.provision import send_config
from terrapin.tools.board.serialconsole import BoardError
from terrapin.tools.cli.main import main


@pytest.fixture(scope="module")
def release_key() -> PrivateKey:
    return PrivateKey()


@pytest.fixture(scope="module")
def board_mpy(tmp_path_factory):
    return DirTarget(tmp_path_factory.mktemp("mpy")).mpy()


def firmware_src(tmp_path, name, crash=False):
    src = tmp_path / name
    shutil.copytree(FIRMWARE_DIR, src, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    if crash:
        text = (src / "console.py").read_text()
        (src / "console.py").write_text('raise RuntimeError("new firmware dies at boot")\n' + text)
    return src


def bundle(tmp_path, board_mpy, key, version, release, crash=False) -> bytes:
    files = host.firmware_files(board_mpy, firmware_src(tmp_path, version, crash))
    return host.build_bundle(files, version=version, release=release, key=key, mpy=board_mpy.raw)


def ota_state(flash) -> dict:
    return json.loads((flash / "ota" / "state.json").read_text())


def wait_info(con, want, timeout=30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = con.wait_ready(timeout)
        if want(info) or time.monotonic() > deadline:
            return info
        time.sleep(0.2)


@pytest.mark.parametrize("kind", ["pty", "tcp"])
def test_good_bundle_applied_then_crashing_one_rolled_back(
    kind, start_board, tmp_path, release_key, board_mpy
):
    board = start_board(kind)
    con = board.console()
    try:
        con.wait_ready()
        send_config(con, {"ota_pubkey": host.public_hex(release_key)})

        good = bundle(tmp_path, board_mpy, release_key, "0.2.0", 1)
        assert host.push_serial(con, good) == {"version": "0.2.0", "release": 1}
        con.request("reboot")
        info = wait_info(con, lambda i: i["fw"] == "0.2.0")
        assert info["fw"] == "0.2.0", board.context()
        state = ota_state(board.flash)
        assert state["trial"] is None and state["version"] == "0.2.0"  # confirmed
        slot = state["active"]
        assert (board.flash / "ota" / slot / "terrapin" / "firmware" / "console.mpy").exists()

        with pytest.raises(BoardError) as replay:  # same release again: no downgrade/replay
            host.push_serial(con, good)
        assert replay.value.code == "OTA_REJECTED" and "not newer" in replay.value.text

        boots = board.vb.boots
        crash = bundle(tmp_path, board_mpy, release_key, "0.3.0", 2, crash=True)
        assert host.push_serial(con, crash)["version"] == "0.3.0"
        con.request("reboot")
        info = wait_info(con, lambda i: i["ota"]["rolled_back"] == "0.3.0")
        assert info["ota"]["rolled_back"] == "0.3.0", board.context()
        assert info["fw"] == "0.2.0"
        crashed = [c for c in board.vb.exit_codes[boots - 1 :] if c not in (0, 3)]
        assert len(crashed) == 2, (board.vb.exit_codes, board.context())
        assert "new firmware dies at boot" in board.vb.console_log()
        state = ota_state(board.flash)
        assert state["active"] == slot and state["version"] == "0.2.0" and state["trial"] is None
        assert state["rolled_back"]["version"] == "0.3.0"
    finally:
        con.link.close()


def test_tampered_bundles_are_refused(tmp_path, release_key, board_mpy, capsys, micropython_exe):
    flash = tmp_path / "flash"  # a virtual board's flash, nothing installed yet
    flash.mkdir()
    pub = host.public_hex(release_key)
    good = bundle(tmp_path, board_mpy, release_key, "0.2.0", 1)
    manifest = json.dumps(host.read_manifest(good), sort_keys=True, separators=(",", ":"))
    header = len(host.MAGIC) + 4 + len(manifest)
    cases = {
        "body": (bytearray(good), header + 64 + 10, "sha256 mismatch"),
        "manifest": (bytearray(good), len(host.MAGIC) + 20, "signature does not verify"),
        "signature": (bytearray(good), header + 5, "signature does not verify"),
    }
    for name, (data, offset, message) in cases.items():
        data[offset] ^= 0x01
        path = tmp_path / f"{name}.tpota"
        path.write_bytes(bytes(data))
        args = ["device", "ota", "push", "--target", "unix", "--dir", str(flash), str(path)]
        assert main([*args, "--pubkey", pub]) == 1, name
        err = capsys.readouterr().err
        assert message in err, (name, err)
        assert not (flash / "ota" / "state.json").exists()  # nothing switched
        assert not list(flash.glob("ota/*/terrapin"))  # the staged copy was removed

    other = PrivateKey()
    foreign = bundle(tmp_path, board_mpy, other, "0.9.0", 9)
    (tmp_path / "foreign.tpota").write_bytes(foreign)
    args = ["device", "ota", "push", "--target", "unix", "--dir", str(flash)]
    assert main([*args, str(tmp_path / "foreign.tpota"), "--pubkey", pub]) == 1
    assert "signature does not verify" in capsys.readouterr().err

    (tmp_path / "good.tpota").write_bytes(good)
    assert main([*args, str(tmp_path / "good.tpota"), "--pubkey", pub, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "0.2.0"
    assert ota_state(flash)["trial"]["version"] == "0.2.0"


def test_ota_cli_keygen_and_build(tmp_path, capsys, micropython_exe):
    key = tmp_path / "release.key"
    assert main(["device", "ota", "keygen", "--out", str(key)]) == 0
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    pub = capsys.readouterr().out.split("ota_pubkey: ")[1].strip()
    out = tmp_path / "fw.tpota"
    args = ["device", "ota", "build", "--key", str(key), "--version", "1.0.0", "--release", "5"]
    assert main([*args, "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    manifest = host.read_manifest(out.read_bytes())
    assert manifest["version"] == "1.0.0" and manifest["release"] == 5
    assert summary["files"] == len(manifest["files"])
    assert any(f["path"] == "terrapin/firmware/ota.mpy" for f in manifest["files"])
    assert main(["device", "ota", "keygen", "--out", str(key)]) == 1  # never overwrites
    assert pub == host.public_hex(host.load_release_key(key))


def test_signed_bundle_cannot_write_outside_its_slot(
    tmp_path, release_key, capsys, micropython_exe
):
    flash = tmp_path / "flash"
    flash.mkdir()
    evil = host.build_bundle(
        {"../../main.py": b"print('owned')\n"},
        version="6.6.6",
        release=7,
        key=release_key,
        mpy=None,
    )
    (tmp_path / "evil.tpota").write_bytes(evil)
    args = ["device", "ota", "push", "--target", "unix", "--dir", str(flash)]
    assert (
        main([*args, str(tmp_path / "evil.tpota"), "--pubkey", host.public_hex(release_key)]) == 1
    )
    assert "escapes the slot" in capsys.readouterr().err
    assert not (tmp_path / "main.py").exists() and not (flash / "main.py").exists()


def test_pointer_file_read_after_a_power_cut(tmp_path):
    from terrapin.firmware import ota as board_ota

    (tmp_path / "ota").mkdir()
    assert board_ota.state(str(tmp_path))["active"] is None  # nothing installed: factory
    confirmed = {"active": "b", "version": "0.2.0", "release": 2, "trial": None}
    # Cut after the new file was written, before the rename: the complete .tmp counts.
    (tmp_path / "ota" / "state.json.tmp").write_text(json.dumps(confirmed))
    assert board_ota.state(str(tmp_path)) == confirmed
    (tmp_path / "ota" / "state.json").write_text('{"active": "a", "rel')  # torn write
    assert board_ota.state(str(tmp_path)) == confirmed
