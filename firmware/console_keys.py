# Key stores for the TP1 console (console.py loads this on first use: the
# firmware's keystore pulls in secp256k1 and its tables, which a console that
# only writes config should not pay for).

from .console import ConsoleError, _write_atomic


class FileKeys:
    """The key store used when the firmware's keystore module is absent.

    The firmware keystore (firmware/keystore.py) is preferred: see `default_keys`.
    """

    def __init__(self, root):
        self.path = root + "/key.bin"

    def load(self):
        try:
            with open(self.path, "rb") as f:
                key = f.read()
        except OSError:
            return None
        return key if len(key) == 32 else None

    def create(self):
        from . import secp256k1

        key = secp256k1.generate_private_key()
        _write_atomic(self.path, key)
        return key


class _KeystoreKeys:
    """Adapter over firmware/keystore.py (load_key / ensure_key / create_key)."""

    def __init__(self, keystore, root):
        self.ks = keystore
        self.root = root

    def load(self):
        return self.ks.load_key(self.root)

    def create(self):
        make = getattr(self.ks, "create_key", None)
        if make is not None:
            return make(self.root)
        if self.ks.load_key(self.root) is not None:
            raise ConsoleError("UNSUPPORTED", "the keystore cannot replace a key")
        return self.ks.ensure_key(self.root)


def default_keys(root):
    """The firmware's keystore (firmware/keystore.py), else FileKeys."""
    try:
        from . import keystore
    except ImportError:
        keystore = None
    if keystore is not None and hasattr(keystore, "load_key"):
        return _KeystoreKeys(keystore, root)
    return FileKeys(root)
