# The outbox's recovery scan at boot (format and rules: outbox.py).
#
# Lists the folder (leftover .tmp files removed), reads every segment
# strictly, cuts a torn tail, seals a corrupt segment, sets aside a bad
# header as `.bad`, and deletes sealed segments with nothing pending.
# Outbox() imports this module for the scan at boot.

import os
import struct

from .outbox import _HEADER, HEADER_SIZE, MAX_ENVELOPE, RECORD_HEAD, _crc, _meta
from .seqstore import read_atomic, remove_quiet


def scan(ob):
    # Fill `ob` (an Outbox with its path, buffers and counters set) from flash.
    try:
        os.mkdir(ob.path)
    except OSError:
        pass
    found = []
    for name in os.listdir(ob.path):
        if name[:8].isdigit():
            n = int(name[:8])
            if n >= ob.top:
                ob.top = n + 1
            if name.endswith(".tmp"):
                remove_quiet(ob.path + "/" + name)
            elif len(name) == 12 and name.endswith(".seg"):
                found.append(n)
    found.sort()
    ob.dropped = read_atomic(ob.path + "/meta", _meta) or 0
    for segno in found:
        _scan(ob, segno)
    for seg in ob.segs[:-1]:
        seg[3] = True
    for seg in list(ob.segs):
        if seg[3] and not seg[2]:
            ob._delete(seg)


def _scan(ob, segno):
    # Read one segment strictly and add it to `segs`.
    name = ob._name(segno)
    mv = ob.mv
    with open(name, "rb") as f:
        head = f.read(HEADER_SIZE)
        off = HEADER_SIZE
        live = 0
        bad = torn = False
        prev = ob.max_seq
        while head == _HEADER:
            got = f.readinto(mv[:RECORD_HEAD])
            if not got:
                break
            n, crc, seq = struct.unpack_from("<HIQ", ob.buf, 0)
            if got < RECORD_HEAD:
                torn = True
            elif n < 1 or n > MAX_ENVELOPE:
                bad = True
            elif (f.readinto(mv[RECORD_HEAD : RECORD_HEAD + n]) or 0) < n:
                torn = True
            elif _crc(mv, n) != crc or seq <= prev:
                bad = True
            if bad or torn:
                break
            prev = seq
            live += 1
            off += RECORD_HEAD + n
    if head != _HEADER:
        # Torn creation (cannot happen with rename) or unknown format.
        ob.corrupt += len(head) == HEADER_SIZE
        os.rename(name, name + ".bad")
        return
    if torn:
        ob.torn += 1
        _cut(ob, name, off)
    ob.corrupt += bad
    ob.max_seq = prev
    ob.pending += live
    ob.size += off
    ob.segs.append([segno, off, live, bad or torn or off >= ob.segment_bytes])


def _cut(ob, name, size):
    # Replace `name` by its first `size` bytes (copy + rename).
    with open(name, "rb") as src, open(name + ".tmp", "wb") as dst:
        while size:
            n = src.readinto(ob.mv[: min(size, len(ob.buf))])
            dst.write(ob.mv[:n])
            size -= n
    os.rename(name + ".tmp", name)
