# Flash outbox: every signed envelope is kept here until the gateway acks it.
#
# Format (version 1). The outbox is a folder of segment files named
# `%08d.seg` (segment number, increasing). Each segment starts with an 8-byte
# header, then records appended one after another:
#
#     header  b"TPOB" | version u8 (=1) | 3 zero bytes
#     record  length u16 | crc32 u32 | seq u64 | envelope (length bytes)
#
# All integers little-endian. `length` is the envelope length (1..1024);
# `crc32` covers the length field, the seq and the envelope. Overhead: 14
# bytes per entry (+8 per segment). Sequence numbers strictly increase
# through a segment and from one segment to the next.
#
# Power cuts. A new segment is written as a temporary file and renamed into
# place, so a segment never exists without its header and first record.
# Records are appended with one write each. The reader is strict:
# - a truncated record at the end of a segment is a torn write: ignored, and
#   the segment is cut back to its last complete record (copy + rename);
# - a bad checksum, bad length or a sequence that does not increase is
#   corruption: reading that segment stops there, the segment is sealed and
#   `corrupt` is counted;
# - a bad header (magic, version, reserved bytes) makes the whole segment
#   unreadable: it is renamed to `.bad` and counted.
#
# Acknowledgement. Entries leave the outbox only through `release()`, which
# the uplink calls when the gateway's application ACK lists the sequence as
# stored or rejected. Releases are counted in RAM per segment; a sealed
# segment whose entries are all released is deleted (one atomic remove). The
# head segment keeps receiving appends until it holds `segment_bytes`. Acks
# are not written to flash: after a reboot, already-acked entries of a
# segment that still exists are sent again and the gateway acks them again as
# duplicates (at least once; never lost).
#
# Full policy: the folder never exceeds `max_bytes`. When an append would
# exceed it, the OLDEST segment is deleted with its entries (drop oldest,
# keep newest); the number of entries dropped is added to `dropped`, which is
# persisted in `meta` and reported in the status message.
#
# Files only through `open`/`os`; no machine, network or sockets.

import os
import struct
from binascii import crc32

from .compat import const
from .seqstore import read_atomic, remove_quiet, write_atomic

HEADER_SIZE = const(8)
RECORD_HEAD = const(14)
MAX_ENVELOPE = const(1024)
_HEADER = b"TPOB\x01\x00\x00\x00"  # magic, version 1, reserved


class OutboxError(Exception):
    # An entry cannot be stored (bad size or sequence).
    pass


def _crc(mv, n):
    return crc32(mv[6 : RECORD_HEAD + n], crc32(mv[0:2])) & 0xFFFFFFFF


def _meta(data):
    if len(data) == 12 and data[:4] == b"TPOM":
        if struct.unpack("<I", data[8:])[0] == crc32(data[:8]) & 0xFFFFFFFF:
            return struct.unpack("<I", data[4:8])[0]
    return None


class Outbox:
    # A size-bounded, append-only, checksummed log of signed envelopes.
    #
    # `segs`: one [segno, size, live, sealed] per segment file, oldest first.

    def __init__(self, path, max_bytes=65536, segment_bytes=4096):
        if (
            segment_bytes < HEADER_SIZE + RECORD_HEAD + MAX_ENVELOPE
            or max_bytes < 2 * segment_bytes
        ):
            raise OutboxError("segment_bytes too small or max_bytes < 2 * segment_bytes")
        self.path = path
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.segs = []
        self.pending = 0
        self.size = 0
        self.corrupt = 0
        self.torn = 0
        self.max_seq = 0
        self.bytes_written = 0
        self.envelope_bytes = 0
        self.top = 0  # next segment number; never goes down
        self.buf = bytearray(RECORD_HEAD + MAX_ENVELOPE)
        self.mv = memoryview(self.buf)
        _recover(self)

    def _name(self, segno):
        return "%s/%08d.seg" % (self.path, segno)

    def _delete(self, seg):
        remove_quiet(self._name(seg[0]))
        self.segs.remove(seg)
        self.pending -= seg[2]
        self.size -= seg[1]

    def append(self, seq, envelope):
        # Store one entry (before it is published). Returns entries dropped.
        n = len(envelope)
        if n < 1 or n > MAX_ENVELOPE or seq <= self.max_seq:
            raise OutboxError("bad entry: seq %d, %d bytes" % (seq, n))
        mv = self.mv
        struct.pack_into("<HIQ", self.buf, 0, n, 0, seq)
        mv[RECORD_HEAD : RECORD_HEAD + n] = envelope
        struct.pack_into("<I", self.buf, 2, _crc(mv, n))
        rec = RECORD_HEAD + n
        head = self.segs[-1] if self.segs else None
        if head and not head[3] and head[1] + rec > self.segment_bytes:
            self._seal(head)
            head = self.segs[-1] if self.segs else None
        new = not head or head[3]
        dropped = 0
        while self.segs and self.size + rec + HEADER_SIZE > self.max_bytes:
            oldest = self.segs[0]
            new = new or oldest is head
            dropped += oldest[2]
            self._delete(oldest)
        if dropped:
            self.dropped += dropped
            meta = b"TPOM" + struct.pack("<I", self.dropped)
            write_atomic(self.path + "/meta", meta + struct.pack("<I", crc32(meta) & 0xFFFFFFFF))
        if new:
            head = [self.top, HEADER_SIZE, 0, False]
            self.top += 1
            name = self._name(head[0])
            with open(name + ".tmp", "wb") as f:
                f.write(_HEADER)
                f.write(mv[:rec])
            os.rename(name + ".tmp", name)
            self.segs.append(head)
            self.size += HEADER_SIZE
            self.bytes_written += HEADER_SIZE
        else:
            with open(self._name(head[0]), "ab") as f:
                f.write(mv[:rec])
        head[1] += rec
        head[2] += 1
        self.size += rec
        self.pending += 1
        self.bytes_written += rec
        self.envelope_bytes += n
        self.max_seq = seq
        return dropped

    def _seal(self, seg):
        seg[3] = True
        if not seg[2]:
            self._delete(seg)

    def seal_if_drained(self):
        # Before deep sleep: delete the head segment when it is fully acked.
        if self.segs and not self.segs[-1][2]:
            self._seal(self.segs[-1])

    def release(self, segno):
        # One entry of segment `segno` was acked (stored or rejected).
        for seg in self.segs:
            if seg[0] == segno and seg[2]:
                seg[2] -= 1
                self.pending -= 1
                if not seg[2] and seg[3]:
                    self._delete(seg)
                return True
        return False

    def next_entry(self, segno, off):
        # The first entry at or after (segno, off): (segno, off, seq, length) or None.
        #
        # The envelope is then in envelope(length) until the next read.
        for seg in self.segs:
            if seg[0] < segno:
                continue
            if seg[0] > segno or off < HEADER_SIZE:
                off = HEADER_SIZE
            if off < seg[1]:
                seq = self.read(seg[0], off)
                if seq is not None:
                    return seg[0], off, seq[0], seq[1]
                self.corrupt += 1  # changed under us: stop using this segment
                seg[1] = off
                seg[3] = True
        return None

    def read(self, segno, off):
        # (seq, length) of the entry at (segno, off), loaded into the buffer, or None.
        for seg in self.segs:
            if seg[0] == segno and off < seg[1]:
                break
        else:
            return None
        mv = self.mv
        with open(self._name(segno), "rb") as f:
            f.seek(off)
            if f.readinto(mv[:RECORD_HEAD]) != RECORD_HEAD:
                return None
            n, crc, seq = struct.unpack_from("<HIQ", self.buf, 0)
            if n < 1 or n > MAX_ENVELOPE or f.readinto(mv[RECORD_HEAD : RECORD_HEAD + n]) != n:
                return None
        if _crc(mv, n) != crc:
            return None
        return seq, n

    def envelope(self, n):
        # The envelope of the entry last read (valid until the next read).
        return self.mv[RECORD_HEAD : RECORD_HEAD + n]


# -- the recovery scan at boot ------------------------------------------------


def _recover(ob):
    # The recovery scan at boot: fill `ob` (an Outbox with its path, buffers and
    # counters set) from flash. Lists the folder (leftover .tmp files removed),
    # reads every segment strictly, cuts a torn tail, seals a corrupt segment,
    # sets aside a bad header as `.bad`, and deletes sealed segments with
    # nothing pending.
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
