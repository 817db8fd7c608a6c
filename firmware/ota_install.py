"""Installer of firmware bundles: verify the signed manifest, stage the files.

The bundle format, the flash layout and the boot rules are in firmware/ota.py;
this part is imported only to install a bundle (a serial push through the
console, or at boot for a bundle fetched over MQTT, firmware/ota_mqtt.py), so
it costs no RAM the rest of the time.

Pure logic over a directory: imports no machine/network.
"""

import binascii
import hashlib
import os
import sys

from . import jsonsafe
from .compat import const
from .ota import (
    _SLOTS,
    MAGIC,
    MAX_FILES,
    MAX_MANIFEST,
    HashMismatch,
    ManifestError,
    OTAError,
    SignatureError,
    _exists,
    _isdir,
    _json_dict,
    _makedirs,
    _save,
    state,
)

_CHUNK = const(512)
_PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./"


def _rmtree(path):
    if not _exists(path):
        return
    if not _isdir(path):
        os.remove(path)
        return
    for entry in os.listdir(path):
        _rmtree(path + "/" + entry)
    os.rmdir(path)


# -- verify --------------------------------------------------------------
def _check_path(path):
    if not isinstance(path, str) or not path or len(path) > 96:
        raise ManifestError("bad file path")
    if path[0] == "/" or ".." in path.split("/") or "//" in path:
        raise ManifestError("file path escapes the slot: " + path)
    if path[-1] == "/" or "." in path.split("/"):  # fuzz: open() on a directory
        raise ManifestError("file path names a directory: " + path)
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
        man = jsonsafe.loads(raw)
    except ValueError as exc:  # bad, too deep or too big (jsonsafe.py)
        raise ManifestError("manifest is not JSON: %s" % exc.args[0])
    if not isinstance(man, dict) or man.get("format") != 1:
        raise ManifestError("unknown manifest format")
    files = man.get("files")
    if not isinstance(files, list) or not files or len(files) > MAX_FILES:
        raise ManifestError("bad file list")
    seen = []
    for ent in files:
        if not isinstance(ent, dict):
            raise ManifestError("bad file entry")
        _check_path(ent.get("path"))
        seen.append(ent["path"] + "/")
        if any(p.startswith(ent["path"] + "/") or ent["path"].startswith(p) for p in seen[:-1]):
            raise ManifestError("file path listed twice or as a directory too")  # fuzz
        if not isinstance(ent.get("size"), int) or ent["size"] < 0:
            raise ManifestError("bad file size")
        if not isinstance(ent.get("sha256"), str) or len(ent["sha256"]) != 64:
            raise ManifestError("bad file hash")
    mpy = man.get("mpy")
    if mpy is not None and not isinstance(mpy, int):  # install() computes mpy & 0x3FF
        raise ManifestError("mpy must be an integer or null")
    if not isinstance(man.get("release"), int) or not isinstance(man.get("version"), str):
        raise ManifestError("manifest needs an integer release and a version")
    return man


def install(root, bundle_path, trusted_pub, allow_same_release=False):
    """Verify `bundle_path` and stage it as the trial image. Returns the manifest.

    Raises OTAError (and leaves the current image untouched) on any problem.
    """
    from .ota_state import floor

    st = state(root)
    if st.get("damaged"):
        raise OTAError("OTA state damaged, updates refused: " + st["damaged"])
    with open(bundle_path, "rb") as f:
        man = read_manifest(f, trusted_pub)
        # The floor counts a trial not confirmed yet: a lower release must not
        # replace it (a downgrade by the back door).
        current = floor(st)
        if man["release"] < current or (man["release"] == current and not allow_same_release):
            raise ManifestError(
                "release %d is not newer than %d, the highest this board accepted"
                % (man["release"], current)
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
    st["floor"] = man["release"]
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


def install_pending(root):
    """Install a bundle fetched over MQTT (firmware/ota_mqtt.py), at boot.

    The app fetched `ota/incoming.bin`, checked its SHA-256 against the offer
    and wrote `ota/pending.json` ({"sha256", "version", "release", "pub"})
    before rebooting: here, before the app takes its heap, the bundle goes
    through install() like a serial push. Runs once per pending file (it is
    removed first, so a crash in here cannot loop). Returns None (nothing
    pending), the manifest (staged as the trial image) or the refusal text,
    which is also kept in `ota/refused` for the app to report.
    """
    path = root + "/ota/pending.json"
    try:
        with open(path) as f:
            pending = _json_dict(f.read())
    except OSError:
        return None
    os.remove(path)
    incoming = root + "/ota/incoming.bin"
    try:
        if pending is None:
            raise ManifestError("pending.json is broken")
        return install(root, incoming, binascii.unhexlify(pending["pub"]))
    except (OTAError, ValueError, KeyError, TypeError) as exc:
        why = "%s: %s" % (type(exc).__name__, exc)
        if pending is not None and isinstance(pending.get("sha256"), str):
            with open(root + "/ota/refused", "w") as f:
                f.write(pending["sha256"] + "\n" + why)
        return why
    except OSError as exc:  # flash trouble: not the bundle's fault, it may be offered again
        return "OSError: %s" % exc
    finally:
        if _exists(incoming):
            os.remove(incoming)
