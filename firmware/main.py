# Firmware entry point.
#
# On a board this file is /main.py and the package is deployed as .mpy under
# /lib (lib/terrapin/firmware/ or lib/terrapin/); MicroPython runs it at boot.
#
# On the unix port, from a checkout (a virtual board):
#     micropython -X heapsize=100k firmware/main.py --config PATH [options]
# The checkout's firmware is first compiled to .mpy by firmware/checkout.py,
# run in a child interpreter (so nothing of it stays in this heap).
#
# This file stays small: a script's own code is kept in RAM while it runs,
# so everything that is needed once lives in functions of other modules.

import gc
import sys


def _builtins():
    # MicroPython looks on the filesystem for a module before it uses an
    # extensible built-in (os, struct, json, ...), and at every `import` of
    # it: 3 stats per sys.path folder, 30-odd imports per boot. On the ESP32
    # image in QEMU a stat costs 0.1-0.3 s, so this was most of the minutes a
    # first boot took (docs/FIRMWARE.md, "First boot"). The u-names are the
    # built-ins themselves; once in sys.modules, `import os` is a lookup.
    for name in _BUILTINS:
        try:
            sys.modules[name] = __import__("u" + name)
        except ImportError:
            pass  # not in this port (or CPython, where this file never runs)


_BUILTINS = (
    "os", "struct", "binascii", "json", "hashlib", "time", "select", "random",
    "errno", "array", "socket", "io", "ssl", "re",
)  # fmt: skip
_builtins()

import os  # noqa: E402 - after the built-ins are registered: no filesystem search


def _ota_boot(name, root, reset):
    # A deployed board: pick the OTA image (trial, confirmed or factory) and
    # install a bundle fetched over MQTT before anything else of the firmware
    # is imported (firmware/ota.py); reset() then starts it on a clean heap.
    try:
        ota = __import__(name + ".ota", None, None, ("boot",))
        info = ota.boot(root, reset=reset)
        if info["slot"] or info["rolled_back"] or info["pending"]:
            print("[info] firmware image %s" % info)
    except Exception as exc:  # a broken OTA state must not brick the board
        print("[error] ota boot: %r" % (exc,))
    pkg = sys.modules.get(name)
    for mod in ("ota", "ota_state"):
        sys.modules.pop(name + "." + mod, None)
        if pkg is not None and mod in pkg.__dict__:
            delattr(pkg, mod)  # its RAM back


def _package():
    # The deployed package's import name, or None (a checkout).
    if "lib" not in sys.path:
        sys.path.insert(0, "lib")  # a deployed board folder on the unix port
    for name in ("terrapin.firmware", "terrapin"):
        try:
            __import__(name + ".compat")
        except ImportError:
            continue
        if sys.platform not in ("linux", "darwin"):
            import machine

            _ota_boot(name, "", machine.reset)
        return name
    return None


_target = "unix" if sys.platform in ("linux", "darwin") else "esp32"
_name = _package()
if _name is None:  # a checkout (firmware/checkout.py compiles it to .mpy)
    _name = "firmware"
    _dir = sys.argv[0].rsplit("/", 1)[0] if "/" in sys.argv[0] else "."
    if getattr(sys, "executable", "") and not os.getenv("TERRAPIN_SOURCE"):
        # In a child interpreter: nothing of the compile step stays here.
        _root = _dir + "/../"
        if _dir in ("firmware", os.getcwd() + "/firmware"):
            _root = ""  # the repo is the working folder: shorter module paths (qstrs)
        exe = sys.executable  # type: ignore[attr-defined]  # the unix port has it
        if os.system("'%s' '%s/checkout.py'" % (exe, _dir)) == 0:
            sys.path.insert(0, _root + ".cache/mpy-%d" % sys.implementation._mpy)
        else:
            sys.path.append(_root or ".")
    else:
        import checkout  # type: ignore[import-not-found]  # firmware/checkout.py, sys.path[0]

        checkout.setup()
        del checkout
        sys.modules.pop("checkout", None)  # give its RAM back
gc.collect()
code = __import__(_name + ".board." + _target, None, None, ("main",)).main()
if code:
    sys.exit(code)
