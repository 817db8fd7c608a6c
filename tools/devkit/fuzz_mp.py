"""The board's ACK decoder fuzzed on the MicroPython unix port (`terrapin fuzz --micropython`).

CPython makes the inputs (the `ack` target's generator, same seeds) and writes
them to one file; the unix port, with the ESP32's 100 KB heap, decodes each
with firmware/ack.py and reports any exception other than AckError. The whole
run is bounded by one timeout (a hang fails it).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from terrapin.tools.devkit.fuzz import CHUNK, chunk_rng
from terrapin.tools.devkit.fuzz_targets import target
from terrapin.tools.micropython import FIRMWARE_DIR, run_micropython

_SCRIPT = """
import sys
sys.path.insert(0, ".")
from firmware import ack
f = open(sys.argv[1], "rb")
n = bad = 0
while True:
    head = f.read(4)
    if len(head) < 4:
        break
    data = f.read(int.from_bytes(head, "big"))
    try:
        ack.decode(data)
    except ack.AckError:
        pass
    except Exception as e:
        bad += 1
        print("crash", n, type(e).__name__, e)
    n += 1
print("done", n, bad)
"""


@dataclass
class MicroPythonResult:
    inputs: int = 0
    crashes: list[str] = field(default_factory=list)
    seconds: float = 0.0  # the unix port's run, inputs already made

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0


def fuzz_ack_on_micropython(count: int, seed: int = 0, timeout: float = 900) -> MicroPythonResult:
    t = target("ack")
    with tempfile.TemporaryDirectory(prefix="terrapin-fuzz-mp-") as tmp:
        inputs = Path(tmp) / "inputs.bin"
        script = Path(tmp) / "fuzz_ack.py"
        script.write_text(_SCRIPT)
        with inputs.open("wb") as f:
            for chunk, start in enumerate(range(0, count, CHUNK)):
                rng = chunk_rng(seed, "ack", chunk)
                for _ in range(min(CHUNK, count - start)):
                    data = t.generate(rng)
                    f.write(len(data).to_bytes(4, "big") + data)
        began = time.perf_counter()
        proc = run_micropython(str(script), str(inputs), cwd=FIRMWARE_DIR.parent, timeout=timeout)
        seconds = time.perf_counter() - began
    lines = proc.stdout.decode(errors="replace").splitlines()
    crashes = [line for line in lines if line.startswith("crash ")]
    done = [line for line in lines if line.startswith("done ")]
    if proc.returncode != 0 or not done:
        crashes.append(f"exit {proc.returncode}: {proc.stderr.decode(errors='replace')[-500:]}")
    inputs_run = int(done[0].split()[1]) if done else 0
    return MicroPythonResult(inputs_run, crashes, seconds)
