# Sequence numbers that strictly increase across reboots and power cuts.
#
# A flash write per reading would wear the flash and cost time, so the store
# reserves a block of numbers ahead: it persists "every number below R may
# have been used" (R = next + block) and then hands out numbers from memory.
# When the block runs out it persists the next bound first, then continues.
# After a crash or power cut the board restarts at the persisted bound, so it
# skips the rest of the reserved block and never reuses a number (the
# gateway sees a gap, which is allowed).
#
# Deep sleep: the ESP32 keeps RTC memory across deep sleep but not across a
# power cut. When the board layer gives a `retained` store, the exact next
# number and the bound are kept there too; on wake the board continues from
# the exact number if the bound in RTC memory equals the one on flash.
#
# The bound is kept in a small checksummed file written atomically
# (`write_atomic`: write a temporary file, then rename it over the old one),
# so a power cut leaves the old or the new bound, never a torn one. This module
# also holds the helpers the keystore and outbox use for the same purpose.
#
# Files: only `open`/`os` (no machine, network or sockets).

import os
import struct
from binascii import crc32

from .compat import const

_MAGIC = b"TPSQ"
_VERSION = const(1)
_SIZE = const(20)  # magic 4, version 1, pad 3, bound u64, crc u32
_DEFAULT_BLOCK = const(64)
_FIRST_SEQ = const(1)


class StoreError(Exception):
    # A persisted state file is missing, unreadable or fails its checksum.
    pass


def remove_quiet(path):
    try:
        os.remove(path)
    except OSError:
        pass


def write_atomic(path, data):
    # Replace `path` with `data` so that a power cut leaves old or new content.
    #
    # Writes `path + ".tmp"`, then renames it over `path`. POSIX and littlefs
    # replace the target atomically; on FAT, where rename onto an existing file
    # fails, the old file is removed first and `read_atomic` falls back to the
    # complete temporary file.
    tmp = path + ".tmp"
    f = open(tmp, "wb")
    try:
        f.write(data)
        f.flush()
    finally:
        f.close()
    try:
        os.rename(tmp, path)
    except OSError:
        remove_quiet(path)
        os.rename(tmp, path)


def read_atomic(path, check):
    # Content of `path` (or its complete `.tmp` twin) that passes `check`.
    #
    # `check(data)` returns the decoded value or None. Returns None when
    # neither file exists; raises StoreError when files exist but none checks.
    found = False
    for name in (path, path + ".tmp"):
        try:
            f = open(name, "rb")
        except OSError:
            continue
        found = True
        try:
            data = f.read()
        finally:
            f.close()
        value = check(data)
        if value is not None:
            return value
    if found:
        raise StoreError(path + " is damaged (checksum or format)")
    return None


def _pack(bound):
    body = _MAGIC + bytes((_VERSION, 0, 0, 0)) + struct.pack("<Q", bound)
    return body + struct.pack("<I", crc32(body) & 0xFFFFFFFF)


def _unpack(data):
    if len(data) != _SIZE or data[:4] != _MAGIC or data[4] != _VERSION:
        return None
    if struct.unpack("<I", data[16:20])[0] != crc32(data[:16]) & 0xFFFFFFFF:
        return None
    return struct.unpack("<Q", data[8:16])[0]


class SeqStore:
    # Hands out strictly increasing sequence numbers, reserving blocks on flash.
    #
    # `floor`: a number known to be used already (e.g. the highest sequence
    # still in the outbox); the store never hands out a number at or below it.
    # `retained`: optional object with `load() -> bytes|None` and
    # `save(bytes)` backed by memory that survives deep sleep (ESP32 RTC).

    def __init__(self, path, block=_DEFAULT_BLOCK, floor=0, retained=None):
        if block < 1:
            raise ValueError("block must be >= 1")
        self.path = path
        self.block = block
        self.retained = retained
        self.writes = 0
        bound = read_atomic(path, _unpack)
        if bound is None:
            bound = _FIRST_SEQ
        nxt = bound
        if retained is not None:
            kept = retained.load()
            # Consume it: a reset before the next keep_for_sleep() (watchdog,
            # crash) must fall back to the bound, never reuse numbers.
            retained.save(b"")
            if kept and len(kept) == 16:
                r_next, r_bound = struct.unpack("<QQ", kept)
                if r_bound == bound and r_next <= bound:
                    nxt = r_next
        if nxt <= floor:
            nxt = floor + 1
        self._next = nxt
        self._bound = bound
        if nxt >= bound:
            self._reserve()

    def _reserve(self):
        bound = self._next + self.block
        write_atomic(self.path, _pack(bound))
        self.writes += 1
        self._bound = bound

    def peek(self):
        # The number the next `take()` returns.
        return self._next

    @property
    def bound(self):
        return self._bound

    def take(self):
        # Return a fresh sequence number (persisting a new block if needed).
        if self._next >= self._bound:
            self._reserve()
        seq = self._next
        self._next = seq + 1
        return seq

    def keep_for_sleep(self):
        # Save the exact position in retained memory before deep sleep.
        if self.retained is not None:
            self.retained.save(struct.pack("<QQ", self._next, self._bound))
