"""The firmware's figures on MicroPython's ESP32 image, in Espressif's QEMU.

`terrapin bench firmware --target qemu` boots the flash image `make qemu-image`
builds (MicroPython's ESP32_GENERIC .bin + the deployed firmware) in
qemu-system-xtensa, stops the app with Ctrl-C before it starts (the raw REPL,
as `terrapin device deploy` uses it) and runs one probe on the 32-bit image:

    esp32_heap_free_boot     gc.mem_free() after a collect, before any firmware
    esp32_app_alloc_bytes    gc.mem_alloc() growth with every module the app uses
                             imported at once (APP_MODULES), after a collect: the
                             app's resident heap (nothing is unloaded at run time,
                             so everything it ever imports stays)
    esp32_sign_peak_bytes    the heap one reading's encode + sign + MQTT publish
                             needs: the least free heap (after a collect) in
                             which it still succeeds, found by holding back a
                             ballast of 512-byte pieces, bisected to 512 bytes
    esp32_sign_ms_emulated   median of 5 signs, in the emulator's milliseconds
    esp32_app_qstrs          the names MicroPython interned for the app (they are
                             never freed; past 620 a 6th string-table pool of 640
                             entries is allocated: 4.5 KB on the image)
    esp32_app_by_module      each module's share of esp32_app_alloc_bytes (growth
                             after its import and a collect, in APP_MODULES order;
                             a module that grows the string table carries the step)

Emulation, labelled as such: the CPU runs close to the chip's speed here, but
every flash operation is far slower than on a board (a stat ~0.1-0.3 s, a
rename seconds), so import times are not board figures; heap figures are the
image's own. The QEMU command line is qemu_command(), which the HIL bench's
qemu target uses too (hil_tests/qemuboard.py).
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from terrapin.gateway.errors import TerrapinError
from terrapin.tools.micropython import UNIX_APP_GUARD as _UNIX_APP_GUARD

MACHINE = "esp32"
LOG_TAIL = 2000  # characters of the emulator's log quoted in a start failure
# Every module the app imports, in boot order, at once for esp32_app_alloc_bytes:
# config and key (boot), the runtime, and the TP1 console's app side
# (consoleport: the rest of the console runs in console mode, without the
# app). ota.py and ota_state run in main.py before the app (an image on trial
# is marked good by a file the next boot's ota.boot() reads), ota_install for
# an update only. A board loads one uplink's modules (UPLINKS): each set is
# measured, the larger one is the figure.
# A module missing from the firmware is skipped and named (SKIP lines).
APP_MODULES = (
    "compat", "jsonsafe", "sockerr", "config",
    "cborenc", "keccak", "secp256k1", "cose", "seqstore", "keystore",
    "mqtt", "outbox", "ack", "schedule", "uplink",
    "status", "consoleport", "sensors", "sensors.simulated", "board.esp32",
    "app",
)  # fmt: skip
UPLINKS = {"wifi": ("wifijoin", "board.tcpopen"), "serial": ("seriallink",)}


def app_modules(uplink: str) -> tuple[str, ...]:
    """APP_MODULES with one uplink's modules, imported where the uplink opens."""
    at = APP_MODULES.index("uplink") + 1
    return APP_MODULES[:at] + UPLINKS[uplink] + APP_MODULES[at:]


def larger_set(per_uplink: dict[str, dict[str, object]]) -> dict[str, object]:
    """The figures of the uplink set with the larger resident app, plus each set's
    app bytes (esp32_app_alloc_bytes_by_uplink) and which set that is."""
    name = max(per_uplink, key=lambda k: int(per_uplink[k]["esp32_app_alloc_bytes"]))  # type: ignore[call-overload]
    figures = dict(per_uplink[name])
    figures["esp32_app_set"] = name
    figures["esp32_app_alloc_bytes_by_uplink"] = {
        k: v["esp32_app_alloc_bytes"] for k, v in per_uplink.items()
    }
    return figures


PACKAGE = "terrapin.firmware"

PROBE = """
import gc, sys, time
for n in ('os', 'struct', 'binascii', 'json', 'hashlib', 'select', 'random', 'errno', 'io'):
    try:
        sys.modules[n] = __import__('u' + n)  # as main.py does: no flash search per import
    except ImportError:
        pass
gc.collect()
free0 = gc.mem_free()
alloc0 = gc.mem_alloc()
print('FREE', free0)
for m in %(modules)r:
    try:
        __import__(%(package)r + '.' + m)
    except ImportError as e:
        if m.split('.')[-1] not in str(e):
            raise  # a module that is there failed to import
        print('SKIP', m)
    gc.collect()
    print('MOD', m, gc.mem_alloc() - alloc0)
gc.collect()
print('APP', gc.mem_alloc() - alloc0)
import micropython
micropython.qstr_info()  # 'qstr pool: n_pool=.., n_qstr=N, ...'
from terrapin.firmware import cose
from terrapin.firmware.mqtt import MQTTClient
priv = bytes(range(1, 33))
kid = bytes(20)
c = MQTTClient('probe')
c.write = lambda mv: len(mv)
c.connected = True
topic = b'terrapin/v1/' + b'0' * 40 + b'/reading'
cose.sign1(priv, kid, cose.encode_payload(1, 0, [('t', 'Cel', 21.5)]))  # the comb table
def fits(n):
    # The free heap left with n bytes held back, and whether one reading's
    # encode + sign + publish still succeeded in it.
    ballast = [None] * (n // 512)  # sized once: no list growth leaving holes
    try:
        for i in range(len(ballast)):
            ballast[i] = bytearray(512)  # pieces: they fill a fragmented heap's gaps
    except MemoryError:
        return False, 0
    gc.collect()
    room = gc.mem_free()
    try:
        env = cose.sign1(priv, kid, cose.encode_payload(2, 1700000000, [('t', 'Cel', 21.5)]))
        c.publish(topic, env, 1)
        ok = True
    except MemoryError:
        ok = False
    ballast = env = None
    gc.collect()
    return ok, room
gc.collect()
lo, hi = 0, gc.mem_free()
peak = gc.mem_free()
while hi - lo > 512:
    mid = (lo + hi) // 2
    ok, room = fits(mid)
    if ok:
        lo = mid
        peak = min(peak, room)
    else:
        hi = mid
print('PEAK', peak)
ts = []
for i in range(5):
    t = time.ticks_us()
    cose.sign1(priv, kid, cose.encode_payload(3 + i, 0, [('t', 'Cel', 21.5)]))
    ts.append(time.ticks_diff(time.ticks_us(), t))
ts.sort()
print('SIGNUS', ts[2])
"""


# The unix port's guard for the same budget (64 KB on the board x the measured
# 64/32-bit ratio): tools/micropython.py, the one place of these figures.
UNIX_APP_GUARD = _UNIX_APP_GUARD
# Names interned for the app (esp32_app_qstrs) on the unix port: the image
# interns 13-16 more for the same set (628 there for 615 here, then 602 for
# 586; 2026-12-07), and past 620 it allocates a 6th string-table pool of 4.5 KB
# there. 600 here keeps the image at or below ~616.
UNIX_QSTR_GUARD = 600


def unix_probe(micropython: str, flash_dir: Path, heapsize: str = "400k") -> dict[str, object]:
    """PROBE on the unix port over a deployed folder (board.unix for board.esp32),
    once per uplink set: the larger set's figures (larger_set)."""
    return larger_set({u: _unix_probe(micropython, flash_dir, heapsize, u) for u in UPLINKS})


def _unix_probe(micropython: str, flash_dir: Path, heapsize: str, uplink: str) -> dict[str, object]:
    modules = tuple("board.unix" if m == "board.esp32" else m for m in app_modules(uplink))
    code = "import sys\nsys.path.insert(0, 'lib')\n" + PROBE % {
        "modules": modules,
        "package": PACKAGE,
    }
    out = subprocess.run(
        [micropython, "-X", f"heapsize={heapsize}", "-c", code],
        cwd=flash_dir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if out.returncode != 0:
        raise TerrapinError("the unix-port probe failed: " + out.stderr[-500:])
    return parse_probe(out.stdout)


class QemuStartError(TerrapinError):
    """QEMU did not start or the board in it did not come up; the text ends with
    the tail of the emulator's own log (its reason is there, e.g. a flash size)."""


def qemu_command(
    qemu_bin: str,
    flash: Path,
    console_port: int,
    uplink_port: int,
    monitor_port: int,
    *,
    machine: str = MACHINE,
    extra: tuple[str, ...] | list[str] = (),
) -> list[str]:
    """The QEMU command line: the flash as the SPI flash, UART0 and UART1 as TCP
    serial servers (`wait=off`: the host connects after start), the monitor on TCP;
    `extra` (--terrapin-qemu-args) last, so it can add to or override what is here.
    cache=unsafe: no fsync per emulated flash write (a power cut is kill -9 of
    QEMU, whose writes are already in the host's page cache)."""

    def tcp(port: int) -> str:
        return f"tcp:127.0.0.1:{port},server=on,wait=off"

    return [
        qemu_bin, "-nographic", "-machine", machine,
        "-drive", f"file={flash},if=mtd,format=raw,cache=unsafe",
        # The timer-group watchdog fires under slow emulation; the firmware's
        # own watchdog (config watchdog_s) is what a real board relies on.
        "-global", "driver=timer.esp32.timg,property=wdt_disable,value=true",
        "-nic", "none",
        "-serial", tcp(console_port),  # UART0
        "-serial", tcp(uplink_port),  # UART1
        "-monitor", tcp(monitor_port),
        *extra,
    ]  # fmt: skip


def split_args(text: str | None) -> tuple[str, ...]:
    """--terrapin-qemu-args "-icount 3 -d guest_errors" -> the words, shell-quoted."""
    return tuple(shlex.split(text or ""))


def log_tail(log: Path, limit: int = LOG_TAIL) -> str:
    """The end of the emulator's log, for failure messages."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return f"--- no emulator log at {log} ---"
    text = text[-limit:].rstrip() or "(empty)"
    return f"--- emulator log {log} ---\n{text}"


def wait_listening(port: int, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    """Until QEMU listens on `port`; QemuStartError with its log if it exits or stalls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise QemuStartError(
                f"qemu exited with code {proc.returncode} while starting\n{log_tail(log)}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise QemuStartError(f"qemu did not open 127.0.0.1:{port} in {timeout:.0f} s\n{log_tail(log)}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_probe(out: str) -> dict[str, object]:
    """The probe's `KEY value` lines -> the esp32_* figures (plus
    esp32_modules_skipped, the APP_MODULES the firmware does not have)."""
    got = {}
    skipped = []
    by_module: dict[str, int] = {}
    before = 0
    qstrs = None
    for line in out.splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "SKIP":
            skipped.append(value)
        name, _, total = value.partition(" ")
        if key == "MOD" and total.isdigit():
            by_module[name] = int(total) - before  # the lines carry running totals
            before = int(total)
        if line.startswith("qstr pool:") and "n_qstr=" in line:
            qstrs = int(line.split("n_qstr=")[1].split(",")[0])
        if key in ("FREE", "APP", "PEAK", "SIGNUS") and value.lstrip("-").isdigit():
            got[key] = int(value)
    missing = [k for k in ("FREE", "APP", "PEAK", "SIGNUS") if k not in got]
    if missing:
        raise TerrapinError(f"the ESP32 probe printed no {', '.join(missing)}: {out[-500:]!r}")
    figures: dict[str, object] = {
        "esp32_heap_free_boot": got["FREE"],
        "esp32_app_alloc_bytes": got["APP"],
        "esp32_sign_peak_bytes": got["PEAK"],
        "esp32_sign_ms_emulated": round(got["SIGNUS"] / 1000, 1),
    }
    if qstrs is not None:
        figures["esp32_app_qstrs"] = qstrs
    if by_module:
        figures["esp32_app_by_module"] = by_module
    if skipped:
        figures["esp32_modules_skipped"] = skipped
    return figures


def check_emulator(qemu_bin: str, image: Path) -> None:
    """TerrapinError naming what is missing: Espressif's QEMU or the flash image."""
    if shutil.which(qemu_bin) is None:
        raise TerrapinError(
            f"{qemu_bin} is not on PATH (Espressif's QEMU with -machine esp32)",
            hint="docs/HIL.md, 'QEMU', says how to install Espressif's released build",
        )
    if not Path(image).is_file():
        raise TerrapinError(
            f"no flash image at {image}", hint="make qemu-image MICROPYTHON_BIN=ESP32_GENERIC.bin"
        )


def esp32_figures(
    qemu_bin: str, image: Path, call_timeout: float = 600.0, workdir: Path | None = None
) -> dict[str, object]:
    """Boot `image` in QEMU, stop the app, run PROBE over the raw REPL: once per
    uplink set (a fresh boot each), the larger set's figures (larger_set)."""
    check_emulator(qemu_bin, image)
    figures = larger_set(
        {u: _esp32_probe(qemu_bin, image, call_timeout, workdir, u) for u in UPLINKS}
    )
    figures["esp32_figures_from"] = "emulation (Espressif QEMU, -machine esp32)"
    return figures


def _esp32_probe(
    qemu_bin: str, image: Path, call_timeout: float, workdir: Path | None, uplink: str
) -> dict[str, object]:
    from terrapin.tools.board.serialconsole import Link, RawRepl, open_port

    with tempfile.TemporaryDirectory(prefix="terrapin-qemu-", dir=workdir) as tmp:
        flash = Path(tmp) / "flash.bin"
        shutil.copyfile(image, flash)
        log = Path(tmp) / "qemu.log"
        ports = free_port(), free_port(), free_port()
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                qemu_command(qemu_bin, flash, *ports), stdout=out, stderr=subprocess.STDOUT
            )
        try:
            wait_listening(ports[0], proc, 30, log)
            link = Link(open_port(f"socket://127.0.0.1:{ports[0]}"))
            try:
                _stop_app(link, 120, log)
                repl = RawRepl(link)
                repl.enter(timeout=60)
                code = PROBE % {"modules": app_modules(uplink), "package": PACKAGE}
                figures: dict[str, object] = parse_probe(
                    repl.exec(code, timeout=call_timeout).decode(errors="replace")
                )
            finally:
                link.close()
        finally:
            proc.kill()
            proc.wait()
    return figures


def _stop_app(link, timeout: float, log: Path) -> None:
    """Ctrl-C until MicroPython's friendly prompt shows: main.py is stopped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        link.write(b"\x03")
        time.sleep(0.3)
        while link.ser.in_waiting:
            link.fill()
        if b">>> " in link.transcript.received:
            link.drain(0.3)
            return
    raise QemuStartError(f"no MicroPython prompt within {timeout:.0f} s\n{log_tail(log)}")
