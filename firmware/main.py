# Entry point: /main.py on a board, firmware/main.py on the unix port.
# Short on purpose: read before FlashCache exists (docs/FIRMWARE.md, "First boot").

import gc
import sys

# Else every `import os` searches the flash first.
for _n in ("os", "struct", "binascii", "json", "hashlib", "time", "select", "random",
           "errno", "array", "socket", "io", "ssl", "re"):  # fmt: skip
    try:
        sys.modules[_n] = __import__("u" + _n)
    except ImportError:
        pass  # not in this port

import os  # noqa: E402 - after the built-ins are registered: no filesystem search


# FlashCache (docs/FIRMWARE.md, "First boot"): a block device keeping `slots`
# whole 4 KB blocks of the ESP32's flash in RAM (least recently used out
# first) while the board boots; writes go through, and a block written or
# erased is dropped (nothing stale is read back, a power cut loses nothing).
# booted() lets the blocks go at the next write: the first reading's, which
# still finds what it loads cached (5.6 s instead of 0.8 s in QEMU without).
# cached_mount remounts `point` through it with 512-byte reads (None: left as
# it was). Used on the ESP32 only; hil_tests/test_flash_reads.py runs it on
# the unix port against a QEMU image's littlefs.
class FlashCache:
    def __init__(self, dev, slots):
        self.dev = dev
        self.done = False
        self.slots = [[-1, bytearray(4096)] for _ in range(slots)]

    def readblocks(self, n, buf, off=0):
        slots = self.slots
        for i in range(len(slots)):
            if slots[i][0] == n:
                s = slots.pop(i)
                break
        else:
            if not slots:
                return self.dev.readblocks(n, buf, off)
            s = slots.pop(0)
            s[0] = -1
            self.dev.readblocks(n, s[1])
            s[0] = n
        slots.append(s)
        buf[:] = memoryview(s[1])[off : off + len(buf)]

    def _drop(self, n, size=0):
        for s in self.slots:
            if n <= s[0] <= n + size // 4096:
                s[0] = -1

    def writeblocks(self, n, buf, off=None):
        if self.done:
            self.slots = []
        self._drop(n, len(buf))
        if off is None:
            return self.dev.writeblocks(n, buf)
        return self.dev.writeblocks(n, buf, off)

    def ioctl(self, op, arg):
        if op == 6:
            self._drop(arg)
        return self.dev.ioctl(op, arg)

    def booted(self):
        self.done = True


def cached_mount(dev, point="/", slots=12):
    import vfs

    try:
        cache = FlashCache(dev, slots)
        fs = vfs.VfsLfs2(cache, readsize=512)  # type: ignore[abstract]  # a stub quirk
    except (OSError, MemoryError):
        return None
    vfs.umount(point)
    vfs.mount(fs, point)
    os.chdir(point)
    return cache


def _ota_boot(name, reset):
    # The OTA image (ota.py), before anything else is imported. True when it
    # is on trial (the app then marks it good at its first ACK).
    trial = False
    try:
        ota = __import__(name + ".ota", None, None, ("boot",))
        info = ota.boot("", reset=reset)
        trial = info["trial"]
        if info["slot"] or info["rolled_back"] or info["pending"]:
            print("[info] firmware image %s" % info)
    except Exception as exc:  # a broken OTA state must not brick the board
        print("[error] ota boot: %r" % (exc,))
    pkg = sys.modules.get(name)
    for mod in ("ota", "ota_state"):
        sys.modules.pop(name + "." + mod, None)
        if pkg is not None and mod in pkg.__dict__:
            delattr(pkg, mod)  # its RAM back
    return trial


def _package():
    # The deployed package's import name and whether its image is on trial;
    # (None, False) for a checkout.
    if "lib" not in sys.path:
        sys.path.insert(0, "lib")
    for name in ("terrapin.firmware", "terrapin"):
        try:
            __import__(name + ".compat")
        except ImportError:
            continue
        trial = False
        if sys.platform not in ("linux", "darwin"):
            import machine

            trial = _ota_boot(name, machine.reset)
        return name, trial
    return None, False


def _checkout():
    # A checkout: compiled by checkout.py in a child (nothing stays here).
    here = sys.argv[0].rsplit("/", 1)[0] if "/" in sys.argv[0] else "."
    if getattr(sys, "executable", "") and not os.getenv("TERRAPIN_SOURCE"):
        root = here + "/../"
        if here in ("firmware", os.getcwd() + "/firmware"):
            root = ""  # shorter module paths (qstrs)
        exe = sys.executable  # type: ignore[attr-defined]  # the unix port has it
        if os.system("'%s' '%s/checkout.py'" % (exe, here)) == 0:
            sys.path.insert(0, root + ".cache/mpy-%d" % sys.implementation._mpy)
        else:
            sys.path.append(root or ".")
    else:
        import checkout  # type: ignore[import-not-found]  # firmware/checkout.py, sys.path[0]

        checkout.setup()
        del checkout
        sys.modules.pop("checkout", None)  # give its RAM back
    return "firmware"


def start(cache=None):
    name, trial = _package()
    name = name or _checkout()
    if cache is not None or trial:
        app = __import__(name + ".app", None, None, ("main",))
        app.ota_trial = trial  # type: ignore[attr-defined]
        if cache is not None:
            app.booted = cache.booted  # type: ignore[attr-defined]
    gc.collect()
    target = "unix" if sys.platform in ("linux", "darwin") else "esp32"
    return __import__(name + ".board." + target, None, None, ("main",)).main()


if __name__ == "__main__":
    _cache = None
    if sys.platform not in ("linux", "darwin"):
        import esp32

        _part = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="vfs")
        _cache = cached_mount(_part[0]) if _part else None
    _code = start(_cache)
    if _code:
        sys.exit(_code)
