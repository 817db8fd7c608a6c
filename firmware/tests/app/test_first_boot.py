"""First boot looks up no built-in module on the filesystem (issue 18: a first
boot took 110-150 s on the ESP32 image in QEMU, where a flash stat costs
0.1-0.3 s, and most of those stats were MicroPython searching sys.path for
os.py, struct.py, json.py, ... before each `import` of an extensible built-in).

main.py registers the built-ins in sys.modules first. The proof here: files
named like those built-ins sit in the board's root (the first sys.path folder);
a firmware that searched for them would run them."""

from __future__ import annotations

import json
import subprocess

from terrapin.tools.board.deploy import DirTarget, deploy
from terrapin.tools.micropython import ESP32_HEAP, micropython_command

SHADOWED = ("os", "struct", "binascii", "json", "hashlib", "time", "select", "random", "errno")


def test_first_boot_never_searches_the_flash_for_builtins(tmp_path, micropython_exe):
    deploy(DirTarget(tmp_path))
    for name in SHADOWED:  # found first if anything searched the filesystem
        (tmp_path / f"{name}.py").write_text(f"print('SHADOW {name}')\nfrom u{name} import *\n")
    (tmp_path / "config.json").write_text(
        json.dumps({"broker": {"host": "127.0.0.1", "port": 9}, "log": "debug"})
    )
    out = subprocess.run(
        micropython_command(
            "main.py", "--config", "config.json", "--flash", ".", "--max-readings", "0",
            "--exit-when-drained", heapsize=ESP32_HEAP,
        ),
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    log = out.stdout + out.stderr
    assert "(new key made on this board)" in log, log  # the whole first boot ran
    assert out.returncode == 0, log
    assert "SHADOW" not in log, log
    assert (tmp_path / "key.bin").exists()
