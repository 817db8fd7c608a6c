# The OTA pointer state (firmware/ota.py), kept so that damage cannot lower it.
#
# The state names the confirmed image, the trial image and the releases seen;
# its release floor is what stops an old signed bundle from being installed
# again (a downgrade). A flipped bit or a torn file must never lower that
# floor, so the state is written twice, each copy with a CRC32:
#
#     ota/state.a, ota/state.b     <state JSON, one line> "\n" <crc32, 8 hex> "\n"
#
# Each save bumps "gen" and writes copy a, then copy b (each atomically:
# seqstore.write_atomic). Reading takes:
# - both valid, same gen and content: that state;
# - a valid with gen n+1, b valid with gen n: a (a power cut between the writes);
# - one valid, the other missing or failing its CRC: the valid one;
# - anything else (both damaged, one damaged and one missing, valid copies
#   that disagree): the state is DAMAGED. The board then boots its factory
#   image, refuses every update with the reason, and never writes the state
#   again, so nothing resets the floor to 0. Recovery is a person's act:
#   remove ota/state.* by hand (raw REPL) after checking the board.
# Both copies missing: a fresh board (release 0), or one written by older
# firmware as plain JSON in ota/state.json, read once and then replaced.
#
# The release floor (`floor()`) is the highest release ever accepted:
# confirmed, on trial, or rolled back. A bundle must be above it.
#
# Files only (no machine, network); imported by ota.py at boot, by
# ota_mqtt.py when an offer arrives, and by the app for `confirm()` at its
# first ACK (the running app needs only that, not ota.py's boot and install).

import json
from binascii import crc32

from . import jsonsafe
from .seqstore import StoreError, read_atomic, remove_quiet, write_atomic

_COPIES = ("/ota/state.a", "/ota/state.b")
_LEGACY = "/ota/state.json"
_DAMAGED = 0  # a copy that exists but fails its CRC or format


class StateDamaged(Exception):
    # Raised by save() for a damaged state: it is never overwritten.
    pass


def fresh():
    return {"active": None, "version": None, "release": 0, "trial": None}


def decode(data):
    # One copy's bytes -> the state dict, or None when damaged.
    data = bytes(data)
    if len(data) < 11 or data[-10:-9] != b"\n" or data[-1:] != b"\n":
        return None
    body = data[:-10]
    try:
        if int(data[-9:-1], 16) != crc32(body) & 0xFFFFFFFF:
            return None
        st = jsonsafe.loads(body)
    except ValueError:
        return None
    if not isinstance(st, dict) or not isinstance(st.get("gen"), int):
        return None
    return st


def _copy(path):
    try:
        return read_atomic(path, decode)  # None: missing
    except (OSError, StoreError):
        return _DAMAGED


def read(root):
    # The state dict; "damaged" holds the reason when it cannot be trusted.
    a = _copy(root + _COPIES[0])
    b = _copy(root + _COPIES[1])
    if isinstance(a, dict) and isinstance(b, dict):
        if a["gen"] == b["gen"] and a == b:
            return a
        if a["gen"] == b["gen"] + 1:
            return a  # cut after writing a, before b (a save never writes b first)
        return _damaged("the two copies of the OTA state disagree")
    # At most one copy is whole: the other failed its CRC, or is missing (the
    # first save was cut short).
    if isinstance(a, dict):
        return a
    if isinstance(b, dict):
        return b
    if a is None and b is None:
        return _legacy(root)
    return _damaged("the OTA state is damaged (checksum) and no whole copy is left")


def _legacy(root):
    try:
        f = open(root + _LEGACY)
    except OSError:
        return fresh()
    try:
        st = jsonsafe.loads(f.read())
    except ValueError:
        st = None
    finally:
        f.close()
    if not isinstance(st, dict):
        return _damaged("the OTA state (old format) is damaged")
    st["gen"] = 0
    return st


def _damaged(why):
    st = fresh()
    st["damaged"] = why
    return st


def save(root, st):
    # Write both copies; a damaged state is never written (its floor is unknown).
    if st.get("damaged"):
        raise StateDamaged(st["damaged"])
    st["gen"] = st.get("gen", 0) + 1
    body = json.dumps(st).encode()
    data = body + b"\n%08x\n" % (crc32(body) & 0xFFFFFFFF)
    for name in _COPIES:
        write_atomic(root + name, data)
    remove_quiet(root + _LEGACY)


def floor(st):
    # The highest release ever accepted: a bundle must be above it.
    high = st.get("release") or 0
    for k in ("trial", "rolled_back"):
        sub = st.get(k)
        if isinstance(sub, dict) and isinstance(sub.get("release"), int):
            high = max(high, sub["release"])
    f = st.get("floor")
    return max(high, f) if isinstance(f, int) else high


def confirm(root):
    # The app came up and reported: keep the trial image. False when there is
    # none (a factory or confirmed image) or the state is damaged.
    st = read(root)
    trial = st.get("trial")
    if not trial or st.get("damaged"):
        return False
    st["previous"] = {"slot": st.get("active"), "version": st.get("version")}
    st["active"] = trial["slot"]
    st["version"] = trial["version"]
    st["release"] = trial["release"]
    st["trial"] = None
    save(root, st)
    return True
