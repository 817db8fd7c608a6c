"""Board side of firmware updates: verify a signed bundle, stage it, switch, confirm or roll back.

Bundle (written by tools/ota.py), all integers big-endian:

    b"TPOTA1\\n"                   magic and format version (7 bytes)
    u32 manifest length            at most MAX_MANIFEST
    manifest                       UTF-8 JSON, see below
    64-byte signature              r||s (low-S) by the release key over
                                   SHA-256(magic || length || manifest)
    file bodies                    concatenated in manifest order

    manifest = {"format": 1, "version": "0.2.0", "release": 7,
                "mpy": 2822 or null,
                "files": [{"path": "terrapin/firmware/app.mpy",
                           "size": 1234, "sha256": "<64 hex>"}, ...]}

Flash layout under `root` (the board's file system root):

    lib/terrapin/...          factory image, written by `terrapin device deploy`
    ota/a/, ota/b/            two slots, each a full `terrapin/...` tree
    ota/state.json            the pointer file, replaced atomically

A new bundle goes into the slot that is not active and becomes the *trial*
slot. `boot()` (called first thing by main.py) counts trial boots; once the
app has come up and reported it calls `confirm()`, which makes the trial slot
the active one. A trial that is not confirmed within MAX_TRIAL_BOOTS boots
(crash at import, watchdog reset, power cut) is dropped: the board boots the
last confirmed image again (rollback). `release` must grow with every bundle,
so an old signed bundle cannot be replayed to downgrade a board.

Pure logic over a directory: imports no machine/network.
"""

import binascii
import hashlib
import json
import os
import sys

from .compat import const

MAGIC = b"TPOTA1\n"
MAX_MANIFEST = const(16384)
MAX_FILES = const(96)
MAX_TRIAL_BOOTS = const(2)
_CHUNK = const(512)
_SLOTS = ("a", "b")
_PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./"


class OTAError(Exception):
    """A bundle was refused; the board keeps running what it runs."""


class SignatureError(OTAError):
    pass


class ManifestError(OTAError):
    pass


class HashMismatch(OTAError):
    pass


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _isdir(path):
    try:
        return os.stat(path)[0] & 0x4000 != 0
    except OSError:
        return False


def _rmtree(path):
    if not _exists(path):
        return
    if not _isdir(path):
        os.remove(path)
        return
    for entry in os.listdir(path):
        _rmtree(path + "/" + entry)
    os.rmdir(path)


def _makedirs(path):
    cur = ""
    for part in path.split("/"):
        if not part:
            cur = "/" if not cur else cur
            continue
        cur = part if not cur else (cur + part if cur.endswith("/") else cur + "/" + part)
        if not _isdir(cur):
            os.mkdir(cur)


# -- state ---------------------------------------------------------------
def _json_dict(data):
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def state(root):
    """The pointer file as a dict; a missing or broken file means factory image."""
    from .seqstore import StoreError, read_atomic

    try:
        st = read_atomic(root + "/ota/state.json", _json_dict)
    except (OSError, StoreError):
        st = None
    if st is not None:
        return st
    return {"active": None, "version": None, "release": 0, "trial": None}


def _save(root, st):
    from .seqstore import write_atomic  # old or new content after a power cut, never neither

    _makedirs(root + "/ota")
    write_atomic(root + "/ota/state.json", json.dumps(st).encode())


def running_version(root):
    """Version of the image `boot()` picks now (trial first), or None for factory."""
    st = state(root)
    trial = st.get("trial")
    if trial:
        return trial.get("version")
    return st.get("version")


# -- verify --------------------------------------------------------------
def _check_path(path):
    if not isinstance(path, str) or not path or len(path) > 96:
        raise ManifestError("bad file path")
    if path[0] == "/" or ".." in path.split("/") or "//" in path:
        raise ManifestError("file path escapes the slot: " + path)
    for c in path:
        if c not in _PATH_CHARS:
            raise ManifestError("bad character in file path")


def read_manifest(f, trusted_pub):
    """Read the header from an open bundle file and verify its signature.

    Returns the manifest dict; the file is left at the first file body.
    """
    from . import secp256k1

    head = f.read(len(MAGIC) + 4)
    if len(head) != len(MAGIC) + 4 or head[: len(MAGIC)] != MAGIC:
        raise ManifestError("not a Terrapin OTA bundle (bad magic)")
    size = int.from_bytes(head[len(MAGIC) :], "big")
    if size == 0 or size > MAX_MANIFEST:
        raise ManifestError("manifest size out of range")
    raw = f.read(size)
    sig = f.read(64)
    if len(raw) != size or len(sig) != 64:
        raise ManifestError("bundle truncated")
    h = hashlib.sha256(head)
    h.update(raw)
    if not secp256k1.verify_digest(trusted_pub, h.digest(), sig):
        raise SignatureError("manifest signature does not verify with the trusted release key")
    try:
        man = json.loads(raw)
    except ValueError:
        raise ManifestError("manifest is not JSON")
    if not isinstance(man, dict) or man.get("format") != 1:
        raise ManifestError("unknown manifest format")
    files = man.get("files")
    if not isinstance(files, list) or not files or len(files) > MAX_FILES:
        raise ManifestError("bad file list")
    for ent in files:
        if not isinstance(ent, dict):
            raise ManifestError("bad file entry")
        _check_path(ent.get("path"))
        if not isinstance(ent.get("size"), int) or ent["size"] < 0:
            raise ManifestError("bad file size")
        if not isinstance(ent.get("sha256"), str) or len(ent["sha256"]) != 64:
            raise ManifestError("bad file hash")
    if not isinstance(man.get("release"), int) or not isinstance(man.get("version"), str):
        raise ManifestError("manifest needs an integer release and a version")
    return man


def install(root, bundle_path, trusted_pub, allow_same_release=False):
    """Verify `bundle_path` and stage it as the trial image. Returns the manifest.

    Raises OTAError (and leaves the current image untouched) on any problem.
    """
    st = state(root)
    with open(bundle_path, "rb") as f:
        man = read_manifest(f, trusted_pub)
        current = st.get("release") or 0
        if man["release"] < current or (man["release"] == current and not allow_same_release):
            raise ManifestError(
                "release %d is not newer than the installed %d" % (man["release"], current)
            )
        mpy = man.get("mpy")
        here = getattr(sys.implementation, "_mpy", None)
        if mpy is not None and here is not None and (mpy & 0x3FF) != (here & 0x3FF):
            raise ManifestError("bundle built for mpy %d, board runs %d" % (mpy, here))
        slot = _SLOTS[1] if st.get("active") == _SLOTS[0] else _SLOTS[0]
        base = root + "/ota/" + slot
        _rmtree(base)
        _makedirs(base)
        try:
            _stage_files(f, base, man["files"])
            if f.read(1):
                raise ManifestError("trailing bytes after the last file")
        except Exception:
            _rmtree(base)
            raise
    st["trial"] = {"slot": slot, "boots": 0, "version": man["version"], "release": man["release"]}
    _save(root, st)
    return man


def _stage_files(f, base, files):
    buf = bytearray(_CHUNK)
    mv = memoryview(buf)
    for ent in files:
        path = base + "/" + ent["path"]
        d = path.rsplit("/", 1)[0]
        _makedirs(d)
        left = ent["size"]
        h = hashlib.sha256()
        with open(path, "wb") as out:
            while left > 0:
                n = f.readinto(mv[: min(left, _CHUNK)])
                if not n:
                    raise ManifestError("bundle truncated in " + ent["path"])
                h.update(mv[:n])
                out.write(mv[:n])
                left -= n
        if binascii.hexlify(h.digest()).decode() != ent["sha256"].lower():
            raise HashMismatch("sha256 mismatch for " + ent["path"])


# -- boot ----------------------------------------------------------------
def boot(root, max_trials=MAX_TRIAL_BOOTS):
    """Pick the image for this boot and put it first on sys.path.

    Call before importing anything else from terrapin. Returns a dict:
    {"slot": "a"|"b"|None, "version": ..., "trial": bool, "rolled_back": version|None}.
    """
    st = state(root)
    trial = st.get("trial")
    rolled_back = None
    slot = st.get("active")
    if trial:
        trial["boots"] = trial.get("boots", 0) + 1
        if trial["boots"] > max_trials:
            rolled_back = trial.get("version")
            st["trial"] = None
            st["rolled_back"] = {"version": rolled_back, "release": trial.get("release")}
            _save(root, st)
            trial = None
        else:
            _save(root, st)  # persisted before the new code runs
            slot = trial["slot"]
    if slot is not None:
        path = root + "/ota/" + slot
        if path not in sys.path:
            sys.path.insert(0, path)
        # Modules already imported from the factory image must not shadow the slot.
        for name in list(sys.modules):
            if name.startswith("terrapin") and not name.endswith(".ota"):
                del sys.modules[name]
    version = trial["version"] if trial else st.get("version")
    return {"slot": slot, "version": version, "trial": bool(trial), "rolled_back": rolled_back}


def confirm(root):
    """The app came up and reported: keep the trial image. No-op otherwise."""
    st = state(root)
    trial = st.get("trial")
    if not trial:
        return False
    st["previous"] = {"slot": st.get("active"), "version": st.get("version")}
    st["active"] = trial["slot"]
    st["version"] = trial["version"]
    st["release"] = trial["release"]
    st["trial"] = None
    _save(root, st)
    return True
