# Firmware updates over MQTT, board side (docs/PROTOCOL.md, "Firmware
# updates over MQTT").
#
# The publisher (`terrapin device ota publish`) puts a small retained offer
# on terrapin/v1/<addr>/ota; the board pulls the bundle in chunks: it asks on
# .../ota/get for (offset, length) and the publisher answers on .../ota/chunk.
# Pull, one chunk in flight, because the board's MQTT receive buffer is 512
# bytes and its heap ~100 KB: a 65 KB bundle can never arrive in one message
# and must never be held in RAM. Each chunk goes straight from the MQTT
# receive buffer to the staging file <root>/ota/incoming.bin on flash. When
# the SHA-256 of the whole is the offer's, the board writes
# <root>/ota/pending.json and reboots; ota.boot() then, before the app takes
# its heap, verifies the manifest signature and the file hashes
# (ota_install.py, the same path as a serial push), stages the image and boots
# it on trial (marked good at the first application ACK and confirmed by the
# next boot, rolled back otherwise).
# A refusal is kept in <root>/ota/refused and reported when the offer is seen
# again.
#
# The uplink imports this module only when an offer arrives: most boards
# never see one.
#
# Wire (big-endian):
#   offer  (retained, QoS 1): JSON {"v":1,"version":str,"release":int,
#          "size":int,"sha256":"<64 hex>","chunk":int}; empty = withdrawn
#   get    (board, QoS 0): id(8) offset(u32) length(u16)
#   report (board, QoS 1): id(8) 0xFFFFFFFF code(u16) UTF-8 text
#   chunk  (publisher, QoS 0): id(8) offset(u32) bytes
# id = the first 8 bytes of the bundle's SHA-256.

import hashlib
import json
import os
import struct
from binascii import unhexlify

from . import jsonsafe
from .compat import IS_MICROPYTHON, const, ticks_diff, ticks_ms

MAX_CHUNK = const(384)  # + topic and headers stays under the 512-byte MQTT buffer
MAX_BUNDLE = const(524288)
_TIMEOUT_MS = const(2000)  # no chunk: ask again
_TRIES = const(6)  # asked this often for one offset without an answer: give up

# Report codes (board -> publisher); the same numbers in tools/board/ota_publish.py.
FETCHED = const(1)  # all here, SHA-256 is the offer's: rebooting to install
ROLLED_BACK = const(2)  # this release was booted on trial and rolled back
REFUSED_HASH = const(3)  # the bundle's SHA-256 is not the offer's
REFUSED_BUNDLE = const(4)  # signature, manifest, file hashes or mpy (at boot)
NOT_NEWER = const(5)  # release not newer than the installed one
GAVE_UP = const(6)  # no chunk came back
NO_UPDATES = const(7)  # no trusted key or no OTA slots on this board
FLASH_ERROR = const(8)  # staging failed (flash full?) or no heap for it


def parse_offer(payload):
    # The offer dict plus "digest" (32 bytes); raises ValueError.
    try:
        o = jsonsafe.loads(bytes(payload))
    except ValueError:  # bad, too deep or too big (jsonsafe.py)
        raise ValueError("offer is not JSON")
    if not isinstance(o, dict) or o.get("v") != 1:
        raise ValueError("offer format")
    for k in ("release", "size", "chunk"):
        v = o.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(k)
    v = o.get("version")
    if not isinstance(v, str) or not 0 < len(v) <= 32 or o["size"] > MAX_BUNDLE:
        raise ValueError("version or size")
    v = o.get("sha256")
    if not isinstance(v, str) or len(v) != 64:
        raise ValueError("sha256")
    o["digest"] = unhexlify(v)
    o["chunk"] = min(max(o["chunk"], 16), MAX_CHUNK)
    return o


class Assembler:
    # Puts chunks in order into a file-like staging slot (only write() is
    # used) and hashes them. One chunk in flight: anything but the chunk asked
    # for (late duplicate, other offer, wrong length) is ignored.

    def __init__(self, f, size, digest, chunk):
        self.f = f
        self.size = size
        self.digest = digest
        self.chunk = chunk
        self.offset = 0
        self.h = hashlib.sha256()

    def want(self):
        # (offset, length) of the next chunk, or None when all is here.
        left = self.size - self.offset
        if left <= 0:
            return None
        return self.offset, min(left, self.chunk)

    def feed(self, payload):
        # Take one chunk message; True if it was the one asked for.
        w = self.want()
        if w is None or len(payload) - 12 != w[1] or bytes(payload[:8]) != self.digest[:8]:
            return False
        if struct.unpack(">I", payload[8:12])[0] != w[0]:
            return False
        data = payload[12:]
        self.f.write(data)
        self.h.update(data)
        self.offset += w[1]
        return True

    def intact(self):
        # All here, and the SHA-256 is the offer's (call once).
        return self.offset >= self.size and self.h.digest() == self.digest


class Update:
    # One update in progress, driven by the uplink: step() asks for the next
    # chunk when nothing waits to be published, on_chunk() takes the answer.

    def __init__(self, up, offer, root, raw, pub):
        self.up = up
        self.offer = offer
        self.root = root
        self.raw = raw  # the offer's bytes: the same offer again resumes
        self.pub = pub  # the trusted release key (hex), for ota.boot()
        self.path = root + "/ota/incoming.bin"
        try:
            os.mkdir(root + "/ota")
        except OSError:
            pass  # exists
        self.f = open(self.path, "wb")
        self.asm = Assembler(self.f, offer["size"], offer["digest"], offer["chunk"])
        self.sent = None
        self.tries = 0
        self.t0 = ticks_ms()

    def step(self, now):
        try:
            self._step(now)
        except MemoryError:
            self.end(FLASH_ERROR, "out of memory")

    def _step(self, now):
        up = self.up
        asm = self.asm
        w = asm.want()
        if w is None:
            self.finish()
            return
        if self.sent is not None:
            if ticks_diff(now, self.sent) < _TIMEOUT_MS:
                return
            if self.tries >= _TRIES:
                self.end(GAVE_UP, "no chunk at offset %d" % w[0])
                return
        ob = up.outbox
        if ob is not None and ob.pending > len(up.window):
            return  # readings first
        up.client.publish(up.t_ack[:-3] + b"ota/get", struct.pack(">8sIH", asm.digest, w[0], w[1]))
        self.sent = now
        self.tries += 1

    def wait_ms(self, now):
        if self.sent is None:
            return 0
        return max(0, _TIMEOUT_MS - ticks_diff(now, self.sent))

    def on_chunk(self, payload):
        try:
            if self.asm.feed(payload):
                self.sent = None
                self.tries = 0
        except OSError as exc:
            self.end(FLASH_ERROR, str(exc))

    def finish(self):
        self.f.close()
        o = self.offer
        if not self.asm.intact():
            self.end(REFUSED_HASH, "sha256 is not the offer's", True)
            return
        try:
            with open(self.root + "/ota/pending.json", "w") as f:
                json.dump({"sha256": o["sha256"], "version": o["version"], "pub": self.pub}, f)
        except OSError as exc:
            self.end(FLASH_ERROR, str(exc))
            return
        up = self.up
        up.ota = None
        report(
            up,
            o,
            FETCHED,
            "%d bytes in %d ms, heap free %d"
            % (o["size"], ticks_diff(ticks_ms(), self.t0), _free()),
        )
        up.close(True)
        up.board.reset()  # ota.boot() installs it

    def end(self, code, text, refuse=False):
        try:
            self.f.close()
        except OSError:
            pass
        _rm(self.path)
        if refuse:
            _refuse(self.root, self.offer["sha256"], text)
        self.up.ota = None
        report(self.up, self.offer, code, text)


def _free():
    if IS_MICROPYTHON:
        import gc

        gc.collect()
        return gc.mem_free()
    return 0


def _rm(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _refuse(root, sha, why):
    # ota_install.install_pending() writes the same: sha256 hex, newline, reason.
    try:
        with open(root + "/ota/refused", "w") as f:
            f.write(sha + "\n" + why)
    except OSError:
        pass


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def report(up, offer, code, text):
    # To the publisher (QoS 1 on .../ota/get), and to the log; failures also
    # go into the status message's errors.
    msg = "ota %s: %s" % (offer["version"], text)
    if code in (FETCHED, NOT_NEWER):
        up.app.log("info", msg)
    else:
        up.app.error(msg)
    if up.client.connected:
        head = struct.pack(">8sIH", offer["digest"], 0xFFFFFFFF, code)
        up.client.publish(up.t_ack[:-3] + b"ota/get", head + text.encode()[:200], 1)


def on_offer(up, payload):
    cur = up.ota
    if cur is not None:
        if len(payload) and bytes(payload) == cur.raw:
            cur.sent = None  # the session came back: ask again from where it stopped
            cur.tries = 0
            return
        cur.f.close()
        _rm(cur.path)
        up.ota = None
    if not len(payload):
        return  # withdrawn
    try:
        o = parse_offer(payload)
    except ValueError as exc:
        up.app.error("ota: bad offer: %s" % exc)
        return
    root = up.board.ota_root
    # firmware/ota.py's pointer state, read without importing ota.py.
    from . import ota_state

    st = ota_state.read(root) if root is not None else ota_state.fresh()
    high = ota_state.floor(st)
    if st.get("trial") and _read(root + "/ota/confirm") is None:
        return  # a trial image runs: it is marked good (ota.py) or rolls back first
    rel = o["release"]
    why = _read(root + "/ota/refused") if root is not None else None
    try:
        with open(up.board.config_path) as f:
            key = jsonsafe.loads(f.read()).get("ota_pubkey")  # checked by config.py at boot
    except (OSError, ValueError, AttributeError):
        key = None
    if st.get("damaged"):
        report(up, o, NO_UPDATES, st["damaged"])
    elif (st.get("rolled_back") or {}).get("release") == rel:
        report(up, o, ROLLED_BACK, "release %d was rolled back" % rel)
    elif rel <= high:
        report(up, o, NOT_NEWER, "not newer than release %d" % high)
    elif why and why[:64] == o["sha256"]:
        report(up, o, REFUSED_BUNDLE, why[65:])
    elif root is None or not key:
        report(up, o, NO_UPDATES, "no ota_pubkey or no OTA slots")
    else:
        up.ota = Update(up, o, root, bytes(payload), key)
        up.app.log(
            "info", "ota: fetching %s (%d bytes, heap free %d)" % (o["version"], o["size"], _free())
        )


def on_message(up, topic, payload):
    # Entry point from the uplink for .../ota and .../ota/chunk.
    try:
        if topic[-4:] == b"/ota":
            on_offer(up, payload)
        elif up.ota is not None:
            up.ota.on_chunk(payload)
    except (OSError, MemoryError) as exc:
        if up.ota is not None:
            up.ota.end(FLASH_ERROR, "%s: %s" % (type(exc).__name__, exc))
