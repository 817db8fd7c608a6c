# A checkout run as a virtual board: compile the firmware to .mpy, once.
#
# firmware/main.py runs this file in a child interpreter when no deployed
# package (lib/terrapin/...) is found (`micropython firmware/checkout.py`,
# exit 0 once compiled): none of its code or names (qstrs, which are never
# freed) stay in the board's heap. Without sys.executable, or with
# TERRAPIN_SOURCE=1, main.py imports it and calls setup() instead, then
# unloads it. On a board it is never used.
#
# MicroPython needs about four bytes of RAM per byte of source while it
# compiles a module, which a 100 KB heap cannot spare once the firmware is
# loaded. So the checkout's firmware is first compiled to .mpy with
# mpy-cross (beside the micropython binary, or on PATH) into
# <repo>/.cache/mpy-<abi>/ (only files whose source or compile options
# changed), and run from there. TERRAPIN_SOURCE=1 runs the sources instead
# (fits the default -X heapsize=222k). Modules are compiled with -O3 like a deploy
# (tools/board/deploy.py): no line numbers in tracebacks, less RAM.
#
# MicroPython only (os.ilistdir, sys.implementation._mpy).

import os
import sys

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
        return "%d %d -s. -O3" % (st[6], st[8])  # the compile options: rebuilt when they change
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

    `rel` + module name is the source name in the .mpy (tracebacks): the
    dotted module name (firmware.outbox), a string the import interns
    anyway, so it costs no extra qstr (a deploy uses the file path)."""
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
                if not _compile(src + "/" + name, dst + "/" + name, cross, arch, rel + name + "."):
                    return False
        elif name.endswith(".py") and name != "main.py":
            out = dst + "/" + name[:-3] + ".mpy"
            stamp = _stamp(src + "/" + name)
            if _mtime(out) < 0 or _read(out + ".stamp") != stamp:
                tmp = out + ".%s.tmp" % _nonce()  # several boards may start at once
                cmd = "'%s' %s -O3 -s '%s%s' -o '%s' '%s/%s'" % (
                    cross, arch, rel, name[:-3], tmp, src, name
                )  # fmt: skip
                if os.system(cmd) != 0:
                    return False
                os.rename(tmp, out)
                with open(tmp, "w") as f:
                    f.write(stamp)
                os.rename(tmp, out + ".stamp")
    return True


def _paths():
    # (firmware folder, repo root) from the script's path: main.py, or this
    # file when it runs as a script; both sit in the firmware folder.
    script = sys.argv[0] if sys.argv and sys.argv[0] else "main.py"
    here = script.rsplit("/", 1)[0] if "/" in script else "."
    return here, here + "/.."


def build():
    # Compile the firmware folder into <repo>/.cache/mpy-<abi>/firmware/.
    # False (after saying so) when there is no mpy-cross or it failed.
    here, root = _paths()
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
    if cross and _compile(here, cache + "/firmware", cross, arch, "firmware."):
        return True
    print("[info] mpy-cross not found: running from source")
    return False


def setup():
    # In-process fallback of main.py: put the compiled firmware (or, failing
    # that, or with TERRAPIN_SOURCE=1, the sources) on sys.path.
    here, root = _paths()
    if not os.getenv("TERRAPIN_SOURCE") and build():
        sys.path.insert(0, root + "/.cache/mpy-%d" % sys.implementation._mpy)
    else:
        sys.path.append(root)  # the repo root, so `firmware` is a package


if __name__ == "__main__":
    # main.py runs this file in a child interpreter: exit 0 once compiled.
    sys.exit(0 if build() else 1)
