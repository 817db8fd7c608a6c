"""Entry script of a console-only virtual board (MicroPython unix port).

    micropython -X heapsize=222k firmware/console_main.py [--status-every S] [--provisioning]

Runs in the board's flash directory (the working directory plays the ESP32's
"/"). Behaves on its stdin/stdout like a board's UART:
- TP1 console lines are answered by firmware/console.py;
- Ctrl-C stops "the app" and gives a `>>> ` prompt, Ctrl-A enters the raw
  REPL (the protocol mpremote and `terrapin device deploy` speak), Ctrl-B
  leaves it, Ctrl-D soft-reboots (the process exits with code 3 and
  tools/devkit/virtualboard.py starts it again, as a board resets);
- every S seconds a `TP1 EV {...}` status line.

It boots through firmware/ota.py, so an OTA-installed image is what runs,
and it confirms the image once the console is up.
"""

import gc
import select
import sys

_REBOOT_CODE = 3
_BANNER = b"raw REPL; CTRL-B to exit\r\n>"


def _setup_path():
    # The board layout: the firmware package is lib/terrapin/firmware (.mpy),
    # written by `terrapin device deploy`. Nothing is imported from a checkout:
    # compiling the sources would not fit the 100 KB heap, and a board runs
    # what is on its flash.
    if "lib" not in sys.path:
        sys.path.insert(0, "lib")


def main():
    _setup_path()
    status_every = 0
    provisioning = None
    args = sys.argv[1:]
    i = 0
    while i < len(args):
        if args[i] == "--status-every":
            status_every = float(args[i + 1])
            i += 1
        elif args[i] == "--provisioning":
            provisioning = True
        i += 1
    try:
        from terrapin.firmware import ota
    except ImportError:
        ota = None  # nothing deployed yet: only the REPL, like a freshly flashed board
    out = sys.stdout.buffer

    def write(data):
        out.write(data)

    if ota is None:
        write(b"TP1 EV " + _json({"state": "no-firmware"}) + b"\n")
        _loop(None, 0, write)
        return
    booted = ota.boot(".")
    gc.collect()
    from terrapin.firmware import console  # an OTA image that crashes here is rolled back

    def reboot():
        raise SystemExit(_REBOOT_CODE)

    def status():
        gc.collect()
        return {"heap_free": _heap_free(), "ota": booted}

    con = console.Console(
        ".",
        write,
        provisioning=provisioning,
        reboot=reboot,
        status=status,
        fw_version=booted["version"] or console.VERSION,
    )
    ota.confirm(".")  # the console came up: keep this image
    write(b"TP1 EV " + _json({"state": "boot", "fw": con.fw_version}) + b"\n")
    _loop(con, status_every, write)


def _heap_free():
    # gc.mem_free() is MicroPython's; on CPython (the demo's fallback) report 0.
    mem_free = getattr(gc, "mem_free", None)
    return mem_free() if mem_free else 0


def _stdin_reader():
    # MicroPython's stdin.buffer is unbuffered. CPython's is buffered: read(1)
    # after poll() would pull whole lines into its buffer and poll() would then
    # say nothing is waiting, so read the file descriptor directly there.
    if sys.implementation.name == "micropython":
        return sys.stdin.buffer
    import io

    return io.FileIO(sys.stdin.fileno(), "rb", closefd=False)


def _json(obj):
    import json

    return json.dumps(obj).encode()


def _loop(con, status_every, write):
    import time

    inp = _stdin_reader()
    poll = select.poll()
    poll.register(sys.stdin, select.POLLIN)
    mode = 0  # 0 app (console), 1 friendly REPL, 2 raw REPL
    code = bytearray()
    env = {}
    last = time.time()
    while True:
        if status_every and con is not None and mode == 0 and time.time() - last >= status_every:
            last = time.time()
            write(
                b"TP1 EV "
                + _json({"state": "online", "fw": con.fw_version, "heap_free": _heap_free()})
                + b"\n"
            )
        if not poll.poll(200):
            continue
        b = inp.read(1)
        if not b:
            return  # host side closed
        c = b[0]
        if mode == 2:
            if c == 1:
                code = bytearray()
                write(_BANNER)
            elif c == 2:
                mode = 1
                write(b"\r\nMicroPython (terrapin virtual board)\r\n>>> ")
            elif c == 3:
                code = bytearray()
            elif c == 4:
                if not code:
                    write(b"OK\r\nMPY: soft reboot\r\n")
                    raise SystemExit(_REBOOT_CODE)
                _exec(bytes(code), env, write)
                code = bytearray()
            elif c == 5 and not code:
                if inp.read(2) == b"A\x01":
                    _raw_paste(inp, env, write)
                else:
                    write(b"R\x00")
            else:
                code.append(c)
        elif c == 1:
            mode = 2
            code = bytearray()
            write(b"\r\n" + _BANNER)
        elif c == 3:
            if mode == 0:
                write(b"\r\nKeyboardInterrupt\r\n")
            mode = 1
            write(b"\r\n>>> ")
        elif c == 4 and mode == 1:
            write(b"MPY: soft reboot\r\n")
            raise SystemExit(_REBOOT_CODE)
        elif mode == 0 and con is not None:
            con.feed(b)


def _raw_paste(inp, env, write, window=128):
    """Raw-paste mode: grant the host `window` bytes at a time with \x01."""
    write(b"R\x01" + bytes((window & 0xFF, window >> 8)) + b"\x01")
    code = bytearray()
    since = 0
    while True:
        b = inp.read(1)
        if not b or b[0] == 4:
            break
        code.append(b[0])
        since += 1
        if since == window:
            since = 0
            write(b"\x01")
    write(b"\x04")
    _exec(bytes(code), env, write, ok=b"")


def _exec(code, env, write, ok=b"OK"):
    write(ok)
    try:
        exec(code, env)
        write(b"\x04")
    except BaseException as e:  # noqa: BLE001 - reported to the host like the real REPL
        if isinstance(e, SystemExit):
            raise
        write(b"\x04")
        sys.print_exception(e, sys.stdout)
    write(b"\x04>")
    gc.collect()


main()
