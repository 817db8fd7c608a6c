"""Firmware updates on the unix target: a good bundle is applied and kept, a
tampered one refused, one whose firmware crashes at boot rolled back."""

from __future__ import annotations

import json
import shutil
import sys
import time
import zlib

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
    """The board's OTA pointer state as the firmware reads it (two checksummed copies)."""
    from terrapin.firmware import ota_state as board_state

    return board_state.read(str(flash))


def small_bundle(key, release, name="x.py") -> bytes:
    """A one-file bundle (no .mpy ABI): enough for the installer's rules."""
    files = {f"terrapin/firmware/{name}": b"RELEASE = %d\n" % release}
    return host.build_bundle(files, version=f"0.{release}.0", release=release, key=key, mpy=None)


def boot(board_ota, root: str) -> dict:
    """firmware/ota.boot on CPython: it puts the slot on sys.path and drops the
    terrapin modules (a board's fresh start); undo that for this test process."""
    modules, path = dict(sys.modules), list(sys.path)
    try:
        return board_ota.boot(root)
    finally:
        sys.path[:] = path
        for name in [n for n in sys.modules if n not in modules]:
            del sys.modules[name]
        sys.modules.update(modules)


def state_files(flash) -> dict:
    return {p.name: p.read_bytes() for p in sorted((flash / "ota").glob("state*"))}


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


def test_pointer_state_read_after_a_power_cut(tmp_path):
    from terrapin.firmware import ota as board_ota
    from terrapin.firmware import ota_state as board_state

    (tmp_path / "ota").mkdir()
    root = str(tmp_path)
    assert board_ota.state(root)["active"] is None  # nothing installed: factory
    board_state.save(root, {"active": "b", "version": "0.2.0", "release": 2, "trial": None})
    old = state_files(tmp_path)
    board_state.save(root, {**board_ota.state(root), "version": "0.3.0", "release": 3})
    # Cut after copy a was replaced, before copy b: the newer whole copy counts.
    (tmp_path / "ota" / "state.b").write_bytes(old["state.b"])
    assert board_ota.state(root)["release"] == 3
    # Cut while writing a's temporary file: the torn .tmp is ignored.
    (tmp_path / "ota" / "state.a.tmp").write_text('{"active": "a", "rel')
    assert board_ota.state(root)["release"] == 3
    # A board written by older firmware (plain ota/state.json) keeps its floor.
    for name in ("state.a", "state.b", "state.a.tmp"):
        (tmp_path / "ota" / name).unlink()
    legacy = {"active": "a", "version": "0.7.0", "release": 7, "trial": None}
    (tmp_path / "ota" / "state.json").write_text(json.dumps(legacy))
    assert board_state.floor(board_ota.state(root)) == 7
    board_state.save(root, board_ota.state(root))
    assert not (tmp_path / "ota" / "state.json").exists()
    assert board_ota.state(root)["release"] == 7


def test_lower_release_over_an_unconfirmed_trial_is_refused(tmp_path, release_key):
    """The attack: release 3 is on trial (not confirmed), then an older signed
    release 2 is pushed. Old code compared with the confirmed release (0) only and
    staged 2 over 3; the trial now counts as the floor."""
    from terrapin.firmware import ota as board_ota

    (tmp_path / "ota").mkdir()
    root, pub = str(tmp_path), bytes.fromhex(host.public_hex(release_key))
    for release in (3, 2):
        (tmp_path / f"r{release}.tpota").write_bytes(small_bundle(release_key, release))
    assert board_ota.install(root, str(tmp_path / "r3.tpota"), pub)["release"] == 3
    with pytest.raises(board_ota.OTAError, match="not newer than 3"):
        board_ota.install(root, str(tmp_path / "r2.tpota"), pub)
    st = board_ota.state(root)
    assert st["trial"]["release"] == 3 and st["trial"]["version"] == "0.3.0"
    # Rolled back (two failed trial boots), 3 still counts: 2 stays refused.
    for _ in range(3):
        boot(board_ota, root)
    assert board_ota.state(root)["rolled_back"]["release"] == 3
    with pytest.raises(board_ota.OTAError, match="not newer than 3"):
        board_ota.install(root, str(tmp_path / "r2.tpota"), pub)


def test_a_trial_is_kept_only_by_its_own_marker(tmp_path, release_key):
    """The running app marks a trial good at its first ACK with ota/confirm (it
    holds no OTA code); the next boot confirms that trial before anything else
    and drops the marker. A marker left from a boot that ran no trial confirms
    nothing later: the next bundle's trial still has to report itself."""
    from terrapin.firmware import ota as board_ota

    (tmp_path / "ota").mkdir()
    root, pub = str(tmp_path), bytes.fromhex(host.public_hex(release_key))
    marker = tmp_path / "ota" / "confirm"
    for release in (3, 4):
        (tmp_path / f"r{release}.tpota").write_bytes(small_bundle(release_key, release))
    marker.write_bytes(b"1")  # stale: written while the factory image ran
    assert boot(board_ota, root)["trial"] is False and not marker.exists()
    board_ota.install(root, str(tmp_path / "r3.tpota"), pub)
    assert boot(board_ota, root)["trial"] is True  # trial boot 1: no report yet
    marker.write_bytes(b"1")  # its first ACK (app.acked)
    info = boot(board_ota, root)
    assert info["trial"] is False and info["version"] == "0.3.0" and not marker.exists()
    assert board_ota.state(root)["release"] == 3
    # The next trial is not confirmed by anything that came before it: two boots
    # without a report and it is rolled back to 3.
    board_ota.install(root, str(tmp_path / "r4.tpota"), pub)
    for _ in range(3):
        info = boot(board_ota, root)
    assert info["version"] == "0.3.0" and info["rolled_back"] == "0.4.0"


def _flip_release_digit(data: bytes) -> bytes:
    # '5' (0x35) -> '1' (0x31): one flipped bit that still parses as JSON.
    at = data.index(b'"release": 5') + len(b'"release": ')
    return data[:at] + bytes([data[at] ^ 0x04]) + data[at + 1 :]


CORRUPTIONS = {
    "release-bit": _flip_release_digit,
    "first-bit": lambda d: bytes([d[0] ^ 0x01]) + d[1:],
    "truncated": lambda d: d[: len(d) // 2],
    "empty": lambda d: b"",
}


@pytest.mark.parametrize("which", ["each", "all"])
@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_corrupted_ota_state_never_allows_a_downgrade(tmp_path, release_key, how, which):
    """The attack: the pointer state is corrupted (bit flip, torn or emptied file)
    on one copy or on every copy, then an older signed release is offered. Old code
    read a broken ota/state.json as "factory, release 0" and took any release."""
    from terrapin.firmware import ota as board_ota

    pub = bytes.fromhex(host.public_hex(release_key))
    for release in (2, 5, 6):
        (tmp_path / f"r{release}.tpota").write_bytes(small_bundle(release_key, release))

    def confirmed_5(flash):
        (flash / "ota").mkdir(parents=True)
        board_ota.install(str(flash), str(tmp_path / "r5.tpota"), pub)
        boot(board_ota, str(flash))
        assert board_ota.confirm(str(flash))
        return state_files(flash)

    names = sorted(confirmed_5(tmp_path / "probe"))
    targets = [[n] for n in names] if which == "each" else [names]
    for i, target in enumerate(targets):
        flash = tmp_path / f"flash{i}"
        root = str(flash)
        before = confirmed_5(flash)
        for name in target:
            (flash / "ota" / name).write_bytes(CORRUPTIONS[how](before[name]))
        damaged = state_files(flash)
        with pytest.raises(board_ota.OTAError) as refused:
            board_ota.install(root, str(tmp_path / "r2.tpota"), pub)
        from terrapin.firmware import ota_state as board_state

        st = board_ota.state(root)
        if len(target) == len(names):  # nothing whole is left: fail closed
            assert "damaged" in str(refused.value), refused.value
            assert st["damaged"], st
            info = boot(board_ota, root)  # factory image, and the state is not rewritten
            assert info["slot"] is None and info["damaged"]
            assert not board_ota.confirm(root)
            with pytest.raises(board_ota.OTAError, match="damaged"):
                board_ota.install(root, str(tmp_path / "r6.tpota"), pub)
            assert state_files(flash) == damaged  # never reset to release 0
        else:  # the other copy carries the floor
            assert "not newer than 5" in str(refused.value), refused.value
            assert board_state.floor(st) == 5 and st["version"] == "0.5.0"
            assert board_ota.install(root, str(tmp_path / "r6.tpota"), pub)["release"] == 6
            repaired = state_files(flash)  # the install rewrote both copies whole
            assert all(board_state.decode(d) is not None for d in repaired.values()), repaired


def test_disagreeing_state_copies_fail_closed(tmp_path, release_key):
    from terrapin.firmware import ota as board_ota
    from terrapin.firmware import ota_state as board_state

    (tmp_path / "ota").mkdir()
    root = str(tmp_path)
    board_state.save(root, {"active": "a", "version": "0.5.0", "release": 5, "trial": None})
    a = (tmp_path / "ota" / "state.a").read_bytes()
    # A whole copy (right CRC) with the same generation and a lower release.
    body = a[: a.index(b"\n")].replace(b'"release": 5', b'"release": 1')
    (tmp_path / "ota" / "state.b").write_bytes(body + b"\n%08x\n" % zlib.crc32(body))
    st = board_ota.state(root)
    assert "disagree" in st["damaged"]
    (tmp_path / "r2.tpota").write_bytes(small_bundle(release_key, 2))
    with pytest.raises(board_ota.OTAError, match="damaged"):
        board_ota.install(
            root, str(tmp_path / "r2.tpota"), bytes.fromhex(host.public_hex(release_key))
        )


def test_downgrade_attacks_on_the_unix_port(tmp_path, release_key, capsys, micropython_exe):
    """The same attacks against the firmware on the MicroPython unix port (the CLI
    runs firmware/ota.install there): a lower release over an unconfirmed trial,
    then over one and over both corrupted state copies."""
    flash = tmp_path / "flash"
    flash.mkdir()
    pub = host.public_hex(release_key)

    def push(release):
        path = tmp_path / f"r{release}.tpota"
        path.write_bytes(small_bundle(release_key, release))
        args = ["device", "ota", "push", "--target", "unix", "--dir", str(flash), str(path)]
        code = main([*args, "--pubkey", pub])
        return code, capsys.readouterr().err

    assert push(3)[0] == 0
    code, err = push(2)
    assert code == 1 and "not newer than 3" in err, err
    assert ota_state(flash)["trial"]["release"] == 3
    a = flash / "ota" / "state.a"
    a.write_bytes(bytes([a.read_bytes()[0] ^ 1]) + a.read_bytes()[1:])
    code, err = push(2)
    assert code == 1 and "not newer than 3" in err, err
    b = flash / "ota" / "state.b"
    b.write_bytes(b.read_bytes()[:20])
    damaged = state_files(flash)
    for release in (2, 4):
        code, err = push(release)
        assert code == 1 and "damaged" in err, err
    assert state_files(flash) == damaged


def test_locked_board_refuses_an_attacker_release_key_and_bundle(
    start_board, tmp_path, release_key
):
    """The attack: after provisioning is closed, someone at the serial console sets
    ota_pubkey to their own key and pushes a bundle signed with it, whose code
    would read key.bin. Old code took the key and installed the bundle."""
    attacker = PrivateKey()
    board = start_board("pty")
    con = board.console()
    try:
        con.wait_ready()
        send_config(con, {"ota_pubkey": host.public_hex(release_key)})
        con.request("keygen", timeout=30)
        con.request("done")
        with pytest.raises(BoardError) as locked:
            send_config(con, {"ota_pubkey": host.public_hex(attacker)})
        assert locked.value.code == "LOCKED", board.context()
        cfg = json.loads((board.flash / "config.json").read_text())
        assert cfg["ota_pubkey"] == host.public_hex(release_key)
        steal = b"print(open('key.bin', 'rb').read())\n"
        evil = host.build_bundle(
            {"terrapin/firmware/console.py": steal},
            version="6.6.6",
            release=99,
            key=attacker,
            mpy=None,
        )
        with pytest.raises(BoardError) as refused:
            host.push_serial(con, evil)
        assert refused.value.code == "OTA_REJECTED" and "signature" in refused.value.text
        assert not list((board.flash / "ota").glob("state*"))  # nothing staged
        assert not list(board.flash.glob("ota/*/terrapin"))
    finally:
        con.link.close()
