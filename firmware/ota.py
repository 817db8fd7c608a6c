"""Board side of firmware updates: verify a signed bundle, stage it, switch, confirm or roll back.

Bundle (written by tools/board/ota.py), all integers big-endian:

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
    ota/state.a, ota/state.b  the pointer state, two copies with a CRC32
                              (firmware/ota_state.py)

A new bundle goes into the slot that is not active and becomes the *trial*
slot. `boot()` (called first thing by main.py) counts trial boots. Once the
app on trial has come up and reported (its first application ACK), it writes
the marker `ota/confirm` (CONFIRM_FILE, one small file: no OTA code in the
running app); the next `boot()`, before anything else, calls `confirm()` for
it, which makes the trial slot the active one, and drops the marker (a stale
one too), so a marker confirms only the trial that wrote it. A trial that
is not confirmed within MAX_TRIAL_BOOTS boots (crash at import, watchdog
reset, power cut) is dropped: the board boots the last confirmed image again
(rollback). `release` must grow with every bundle:
it must be above the highest release the board ever accepted (confirmed, on
trial or rolled back), so an old signed bundle cannot be replayed to
downgrade a board, not even over a trial that is not confirmed yet. A damaged
pointer state boots the factory image and refuses every update (ota_state.py).

Pure logic over a directory: imports no machine/network. This module is
what every boot needs (main.py runs it before the app); the state and its
confirmation are ota_state.py; the installer (verify, stage) is
firmware/ota_install.py, imported only to install a bundle.
"""

import os
import sys

from .compat import const

MAGIC = b"TPOTA1\n"
MAX_MANIFEST = const(16384)
MAX_FILES = const(96)
MAX_TRIAL_BOOTS = const(2)
CONFIRM_FILE = "/ota/confirm"  # written by the app on trial at its first ACK (app.py)
_SLOTS = ("a", "b")


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


def _makedirs(path):
    cur = ""
    for part in path.split("/"):
        if not part:
            cur = "/" if not cur else cur
            continue
        cur = part if not cur else (cur + part if cur.endswith("/") else cur + "/" + part)
        if not _isdir(cur):
            os.mkdir(cur)


# -- state (firmware/ota_state.py: two checksummed copies) --------------
def _json_dict(data):
    from .jsonsafe import loads

    try:
        obj = loads(data)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def state(root):
    """The pointer state as a dict: factory image when nothing is installed.

    A damaged state carries "damaged" (the reason): the factory image boots,
    updates are refused and the state is never written again.
    """
    from .ota_state import read

    return read(root)


def _save(root, st):
    from .ota_state import StateDamaged, save

    _makedirs(root + "/ota")
    try:
        save(root, st)
    except StateDamaged as e:
        raise OTAError("OTA state damaged, updates refused: %s" % e)


def running_version(root):
    """Version of the image `boot()` picks now (trial first), or None for factory."""
    st = state(root)
    trial = st.get("trial")
    if trial:
        return trial.get("version")
    return st.get("version")


# -- install (firmware/ota_install.py, imported only for this) ------------
def install(root, bundle_path, trusted_pub, allow_same_release=False):
    """Verify `bundle_path` and stage it as the trial image. Returns the manifest.

    Raises OTAError (and leaves the current image untouched) on any problem.
    """
    from .ota_install import install

    return install(root, bundle_path, trusted_pub, allow_same_release)


# -- boot ----------------------------------------------------------------
def boot(root, max_trials=MAX_TRIAL_BOOTS, reset=None):
    """Pick the image for this boot and put it first on sys.path.

    Call before importing anything else from terrapin. A bundle fetched over
    MQTT is installed first (ota_install.install_pending), then `reset()` is
    called if given (machine.reset on a board), so that the image starts on a
    clean heap. Returns a dict:
    {"slot": "a"|"b"|None, "version": ..., "trial": bool, "rolled_back": version|None,
     "pending": None | installed version | refusal text}.
    """
    if _exists(root + CONFIRM_FILE):
        # The trial's app reported in the boot before: keep it (before an
        # install could replace the trial), then drop the marker.
        confirm(root)
        os.remove(root + CONFIRM_FILE)
    pending = None
    if _exists(root + "/ota/pending.json"):
        from .ota_install import install_pending

        pending = install_pending(root)
        if isinstance(pending, dict):
            pending = pending["version"]
        if reset is not None:
            # Start the new (or the same) image on a clean heap: the install
            # leaves interned names and holes behind.
            print("[info] ota: %s; reset" % pending)
            reset()
    st = state(root)
    if st.get("damaged"):
        # Never rewritten, never reset: the factory image runs and every
        # update is refused until a person looks at the board.
        print("[error] ota: %s; factory image, updates refused" % st["damaged"])
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
    if slot is not None or pending is not None:
        # Modules already imported from the factory image must not shadow the
        # slot, nor stay where install_pending() put them in the heap.
        for name in list(sys.modules):
            if name.startswith("terrapin") and not name.endswith(".ota"):
                del sys.modules[name]
    version = trial["version"] if trial else st.get("version")
    return {
        "slot": slot,
        "version": version,
        "trial": bool(trial),
        "rolled_back": rolled_back,
        "pending": pending,
        "damaged": st.get("damaged"),
    }


def confirm(root):
    """The app came up and reported: keep the trial image. No-op otherwise."""
    from .ota_state import confirm

    return confirm(root)
