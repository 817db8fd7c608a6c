# Firmware entry point.
#
# On a board this file is /main.py and the package is deployed as .mpy under
# /lib (lib/terrapin/firmware/ or lib/terrapin/); MicroPython runs it at boot.
#
# On the unix port, from a checkout (a virtual board):
#     micropython -X heapsize=100k firmware/main.py --config PATH [options]
# MicroPython needs about four bytes of RAM per byte of source while it
# compiles a module, which a 100 KB heap cannot spare once the firmware is
# loaded. So, like a deploy, the checkout's firmware is first compiled to
# .mpy with mpy-cross (beside the micropython binary, or on PATH) into
# <repo>/.cache/mpy-<abi>/ (only files whose source changed), and run from
# there. TERRAPIN_SOURCE=1 runs the sources instead (needs -X heapsize=120k).

import gc
import os
import sys


def _setup():
    # Find the firmware package (a board's /lib, else the checkout compiled to
    # .mpy); returns its import name. Everything defined here is freed after.
    _ARCHES = (
        "",
        "x86",
        "x64",
        "armv6",
        "armv6m",
        "armv7m",
        "armv7em",
        "armv7emsp",
        "armv7emdp",
        "xtensa",
        "xtensawin",
        "rv32imc",
        "rv64imc",
    )

    def _mtime(path):
        try:
            return os.stat(path)[8]
        except OSError:
            return -1

    def _nonce():
        n = 0
        for b in os.urandom(4):
            n = n * 256 + b
        return "%08x" % n

    def _stamp(path):
        # Size and mtime of a source file (and a mark of the compile options):
        # its .mpy is rebuilt when they change.
        try:
            st = os.stat(path)
            return "%d %d -s" % (st[6], st[8])  # -s: the compile options changed
        except OSError:
            return ""

    def _read(path):
        try:
            with open(path) as f:
                return f.read()
        except OSError:
            return None

    def _compile(src, dst, cross, arch, rel):
        """Compile the .py tree `src` into .mpy files under `dst`. False if it failed.

        `rel` names the sources in tracebacks (short qstrs, as a deploy does)."""
        try:
            os.mkdir(dst)
        except OSError:
            pass
        for entry in os.ilistdir(src):
            name = entry[0]
            if entry[1] == 0x4000:
                if (
                    name not in ("tests", "__pycache__")
                    and _mtime(src + "/" + name + "/__init__.py") >= 0
                ):
                    if not _compile(
                        src + "/" + name, dst + "/" + name, cross, arch, rel + name + "/"
                    ):
                        return False
            elif name.endswith(".py") and name != "main.py":
                out = dst + "/" + name[:-3] + ".mpy"
                stamp = _stamp(src + "/" + name)
                if _mtime(out) < 0 or _read(out + ".stamp") != stamp:
                    tmp = out + ".%s.tmp" % _nonce()  # several boards may start at once
                    cmd = "'%s' %s -s '%s%s' -o '%s' '%s/%s'" % (
                        cross, arch, rel, name, tmp, src, name
                    )  # fmt: skip
                    if os.system(cmd) != 0:
                        return False
                    os.rename(tmp, out)
                    with open(tmp, "w") as f:
                        f.write(stamp)
                    os.rename(tmp, out + ".stamp")
        return True

    def _checkout():
        script = sys.argv[0] if sys.argv and sys.argv[0] else "main.py"
        here = script.rsplit("/", 1)[0] if "/" in script else "."
        root = here + "/.."
        if not os.getenv("TERRAPIN_SOURCE"):
            exe = getattr(sys, "executable", "") or ""
            cross = exe.rsplit("/", 1)[0] + "/mpy-cross" if "/" in exe else ""
            if _mtime(cross) < 0:
                cross = "mpy-cross" if os.system("mpy-cross --version >/dev/null 2>&1") == 0 else ""
            abi = sys.implementation._mpy
            arch = "-march=" + _ARCHES[abi >> 10] if abi >> 10 < len(_ARCHES) else ""
            cache = root + "/.cache/mpy-%d" % abi
            for d in (root + "/.cache", cache):
                try:
                    os.mkdir(d)
                except OSError:
                    pass
            if cross and _compile(here, cache + "/firmware", cross, arch, "firmware/"):
                sys.path.insert(0, cache)
                return
            print("[info] mpy-cross not found: running from source (needs -X heapsize=120k)")
        sys.path.append(root)  # the repo root, so `firmware` is a package

    def _ota_boot(name):
        # On a board: pick the OTA image (trial, confirmed or factory) before
        # anything else of the firmware is imported (firmware/ota.py).
        try:
            ota = __import__(name + ".ota", None, None, ("boot",))
            info = ota.boot("")
            if info["slot"] or info["rolled_back"]:
                print("[info] firmware image %s" % info)
        except Exception as exc:  # a broken OTA state must not brick the board
            print("[error] ota boot: %r" % (exc,))
        sys.modules.pop(name + ".ota", None)

    def _package():
        if "lib" not in sys.path:
            sys.path.insert(0, "lib")  # a deployed board folder on the unix port
        for name in ("terrapin.firmware", "terrapin"):
            try:
                __import__(name + ".compat")
            except ImportError:
                continue
            if sys.platform not in ("linux", "darwin"):
                _ota_boot(name)
            return name
        _checkout()
        return "firmware"

    return _package()


_target = "unix" if sys.platform in ("linux", "darwin") else "esp32"
_board = _setup() + ".board." + _target
del _setup  # give its RAM back
gc.collect()
code = __import__(_board, None, None, ("main",)).main()
if code:
    sys.exit(code)
