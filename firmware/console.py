"""Board side of the Terrapin console protocol, version 1 (TP1).

A line-based request/answer protocol on the board's serial console, used by
`terrapin device provision` and friends. Pure logic: the caller gives bytes to
`feed()` and a `write(bytes)` callable for the answers, so the same code runs
on an ESP32 (UART REPL), on the unix port (a pty) and on CPython.

    host:  TP1 <command> [args...]\\n
    board: TP1 OK <json>\\n   |   TP1 ERR <CODE> <text>\\n
    board: TP1 EV <json>\\n   (unsolicited status line, see `event()`)

Commands: info, keygen [force], config-set <b64>, config-begin,
config-chunk <b64>, config-end <sha256-hex>, sign-digest <hex32> bind, done,
ota-begin <size>, ota-chunk <b64>, ota-end, reboot. docs/HOBBYIST.md has the
full description. The private key never leaves the board: no command answers
with it and no error text includes it; config values are never echoed (only
key names).
"""

import binascii
import hashlib
import json
import os

from .compat import const

PREFIX = b"TP1 "
_MAX_LINE = const(1536)
_MAX_CONFIG = const(8192)
_MAX_BUNDLE = const(512 * 1024)
VERSION = "0.1.0"
CONFIG_FILE = "config.json"
PROVISIONED_FILE = "provisioned"
_OTA_INCOMING = "ota_incoming.bin"
# Purposes the board signs a host-supplied digest for; see docs/HOBBYIST.md.
SIGN_PURPOSES = ("bind",)


class ConsoleError(Exception):
    """An answerable failure: `code` is the word after ERR."""

    def __init__(self, code, text):
        super().__init__(text)
        self.code = code
        self.text = text


def _json_dict(data):
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _hex(b):
    return binascii.hexlify(b).decode()


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _write_atomic(path, data):
    from .seqstore import write_atomic  # old or new content after a power cut

    write_atomic(path, data)


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


class _LazyKeys:
    """Imports the key store on first use: keystore pulls in secp256k1 and its
    tables, which a console that only writes config should not pay for."""

    def __init__(self, root):
        self.root = root
        self._keys = None

    def _get(self):
        if self._keys is None:
            try:
                from . import keystore
            except ImportError:
                keystore = None
            if keystore is not None and hasattr(keystore, "load_key"):
                self._keys = _KeystoreKeys(keystore, self.root)
            else:
                self._keys = FileKeys(self.root)
        return self._keys

    def load(self):
        return self._get().load()

    def create(self):
        return self._get().create()


def default_keys(root):
    return _LazyKeys(root)


class Console:
    """One console session. `root` is the flash directory (config, key, OTA)."""

    def __init__(
        self,
        root,
        write,
        keys=None,
        provisioning=None,
        reboot=None,
        status=None,
        fw_version=None,
        trusted_release=None,
        config_path=None,
    ):
        self.root = root
        self.config_path = config_path or root + "/" + CONFIG_FILE
        self.write = write
        self.keys = keys if keys is not None else default_keys(root)
        # provisioning: None -> until `done` writes the marker file.
        self._provisioning = provisioning
        self.reboot = reboot
        self.status = status  # callable -> dict merged into `info`
        self.fw_version = fw_version or VERSION
        self.trusted_release = trusted_release
        self._line = bytearray()
        self._overflow = False
        self._pub = None
        self._config_buf = None
        self._ota = None  # [file, expected size, written, sha256]

    # -- bytes in ---------------------------------------------------------
    def feed(self, data):
        """Take bytes from the serial line; answer each complete TP1 line."""
        for b in data:
            if b == 10:  # \n
                line = bytes(self._line)
                self._line = bytearray()
                if self._overflow:
                    self._overflow = False
                    self._err("TOO_LONG", "line longer than %d bytes" % _MAX_LINE)
                elif line.startswith(PREFIX):
                    self.handle(line[len(PREFIX) :].strip().decode())
            elif b == 13:
                continue
            elif len(self._line) >= _MAX_LINE:
                self._overflow = self._line.startswith(PREFIX) or self._overflow
                self._line = bytearray(PREFIX) if self._overflow else bytearray()
            else:
                self._line.append(b)

    def handle(self, text):
        parts = text.split()
        if not parts:
            return self._err("BAD_COMMAND", "empty command")
        name = parts[0]
        method = _COMMANDS.get(name)
        if method is None:
            return self._err("BAD_COMMAND", "unknown command " + name[:32])
        try:
            answer = method(self, parts[1:])
        except ConsoleError as e:
            return self._err(e.code, e.text)
        except Exception as e:  # never let a command kill the app
            return self._err("INTERNAL", type(e).__name__)
        self._ok(answer if answer is not None else {})
        if name == "reboot" and self.reboot is not None:
            self.reboot()

    # -- bytes out --------------------------------------------------------
    def _ok(self, obj):
        self.write(PREFIX + b"OK " + json.dumps(obj).encode() + b"\n")

    def _err(self, code, text):
        self.write(PREFIX + b"ERR " + code.encode() + b" " + text.encode() + b"\n")

    def event(self, obj):
        """Write one unsolicited status line (same JSON as the MQTT status).

        `obj`: a dict, or the status payload already encoded as JSON bytes/str.
        """
        if isinstance(obj, str):
            obj = obj.encode()
        elif not isinstance(obj, (bytes, bytearray)):
            obj = json.dumps(obj).encode()
        self.write(PREFIX + b"EV " + bytes(obj) + b"\n")

    # -- state ------------------------------------------------------------
    @property
    def provisioning(self):
        if self._provisioning is not None:
            return bool(self._provisioning)
        return not _exists(self.root + "/" + PROVISIONED_FILE)

    def _identity(self, key):
        from . import keccak, secp256k1

        if self._pub is None:
            self._pub = secp256k1.public_key(key)
        return self._pub, keccak.keccak256(self._pub[1:])[12:]

    def _config(self):
        from .seqstore import StoreError, read_atomic

        try:
            return read_atomic(self.config_path, _json_dict)
        except (OSError, StoreError):
            return None

    # -- commands ---------------------------------------------------------
    def cmd_info(self, args):
        key = self.keys.load()
        out = {"proto": 1, "fw": self.fw_version, "provisioning": self.provisioning}
        if key is None:
            out["addr"] = None
            out["pub"] = None
        else:
            pub, addr = self._identity(key)
            out["addr"] = _hex(addr)
            out["pub"] = _hex(pub)
        cfg = self._config()
        out["config"] = sorted(cfg.keys()) if cfg is not None else None
        if self.status is not None:
            extra = self.status()
            if isinstance(extra, (bytes, bytearray, str)):
                extra = json.loads(extra)
            for k, v in extra.items():
                if k not in out:
                    out[k] = v
        return out

    def cmd_keygen(self, args):
        force = "force" in args
        key = self.keys.load()
        if key is not None and not force:
            # Never overwrite: answer with the existing identity.
            pub, addr = self._identity(key)
            return {"pub": _hex(pub), "addr": _hex(addr), "created": False}
        if key is not None and not self.provisioning:
            raise ConsoleError("DENIED", "replacing a key needs provisioning mode")
        self._pub = None
        key = self.keys.create()
        pub, addr = self._identity(key)
        return {"pub": _hex(pub), "addr": _hex(addr), "created": True}

    def _store_config(self, raw):
        try:
            new = json.loads(raw)
        except ValueError:
            raise ConsoleError("BAD_CONFIG", "not JSON")
        if not isinstance(new, dict):
            raise ConsoleError("BAD_CONFIG", "config must be a JSON object")
        cfg = self._config() or {}
        for k, v in new.items():
            old = cfg.get(k)
            if v is None:
                cfg.pop(k, None)
            elif isinstance(v, dict) and isinstance(old, dict):
                for k2, v2 in v.items():  # {"wifi": {"password": ...}} keeps wifi.ssid
                    old[k2] = v2
            else:
                cfg[k] = v
        _write_atomic(self.config_path, json.dumps(cfg).encode())
        # Only key names and the firmware's own messages (which never quote
        # secrets) go back: values may be secrets.
        return {
            "keys": sorted(cfg.keys()),
            "sha256": _hex(hashlib.sha256(raw).digest()),
            "problems": _config_problems(cfg),
        }

    def cmd_config_set(self, args):
        if len(args) != 1:
            raise ConsoleError("BAD_ARGS", "config-set <base64 json>")
        return self._store_config(_b64(args[0]))

    def cmd_config_begin(self, args):
        self._config_buf = bytearray()
        return {}

    def cmd_config_chunk(self, args):
        if self._config_buf is None:
            raise ConsoleError("BAD_STATE", "config-begin first")
        if len(args) != 1:
            raise ConsoleError("BAD_ARGS", "config-chunk <base64>")
        chunk = _b64(args[0])
        if len(self._config_buf) + len(chunk) > _MAX_CONFIG:
            self._config_buf = None
            raise ConsoleError("TOO_LONG", "config larger than %d bytes" % _MAX_CONFIG)
        self._config_buf.extend(chunk)
        return {"size": len(self._config_buf)}

    def cmd_config_end(self, args):
        buf = self._config_buf
        self._config_buf = None
        if buf is None:
            raise ConsoleError("BAD_STATE", "config-begin first")
        raw = bytes(buf)
        if len(args) != 1 or _hex(hashlib.sha256(raw).digest()) != args[0].lower():
            raise ConsoleError("BAD_CHECKSUM", "config sha256 does not match; nothing written")
        return self._store_config(raw)

    def cmd_sign_digest(self, args):
        if len(args) != 2:
            raise ConsoleError("BAD_ARGS", "sign-digest <hex32> <purpose>")
        purpose = args[1]
        if purpose not in SIGN_PURPOSES:
            raise ConsoleError("DENIED", "the board signs digests only for: bind")
        if not self.provisioning:
            raise ConsoleError("DENIED", "bind signatures only in provisioning mode")
        try:
            digest = binascii.unhexlify(args[0])
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise ConsoleError("BAD_ARGS", "digest must be 32 bytes of hex")
        key = self.keys.load()
        if key is None:
            raise ConsoleError("NO_KEY", "no key yet: keygen first")
        from . import secp256k1

        sig, v = secp256k1.sign_recoverable(key, digest)
        _, addr = self._identity(key)
        # r || s || v with v = 27 + recovery id: what ecrecover takes.
        return {"sig": _hex(sig + bytes((27 + v,))), "addr": _hex(addr), "purpose": purpose}

    def cmd_done(self, args):
        with open(self.root + "/" + PROVISIONED_FILE, "w") as f:
            f.write("1")
        if self._provisioning is not None:
            self._provisioning = False
        return {"provisioning": False}

    def cmd_ota_begin(self, args):
        if len(args) != 1:
            raise ConsoleError("BAD_ARGS", "ota-begin <size>")
        size = int(args[0])
        if size <= 0 or size > _MAX_BUNDLE:
            raise ConsoleError("TOO_LONG", "bundle size out of range")
        self._ota_close()
        f = open(self.root + "/" + _OTA_INCOMING, "wb")
        self._ota = [f, size, 0]
        return {}

    def cmd_ota_chunk(self, args):
        if self._ota is None:
            raise ConsoleError("BAD_STATE", "ota-begin first")
        chunk = _b64(args[0]) if len(args) == 1 else b""
        st = self._ota
        if st[2] + len(chunk) > st[1]:
            self._ota_close()
            raise ConsoleError("TOO_LONG", "more bytes than announced")
        st[0].write(chunk)
        st[2] += len(chunk)
        return {"size": st[2]}

    def cmd_ota_end(self, args):
        st = self._ota
        if st is None:
            raise ConsoleError("BAD_STATE", "ota-begin first")
        self._ota_close()
        path = self.root + "/" + _OTA_INCOMING
        try:
            if st[2] != st[1]:
                raise ConsoleError("BAD_ARGS", "bundle truncated")
            trusted = self.trusted_release
            if trusted is None:
                cfg = self._config() or {}
                trusted = cfg.get("ota_pubkey")
            if not trusted:
                raise ConsoleError("NO_KEY", "no trusted release key (config ota_pubkey)")
            from . import ota

            try:
                manifest = ota.install(self.root, path, binascii.unhexlify(trusted))
            except ota.OTAError as e:
                raise ConsoleError("OTA_REJECTED", str(e))
        finally:
            try:
                os.remove(path)
            except OSError:
                pass
        return {"version": manifest["version"], "release": manifest["release"]}

    def _ota_close(self):
        if self._ota is not None:
            self._ota[0].close()
            self._ota = None

    def cmd_reboot(self, args):
        if self.reboot is None:
            raise ConsoleError("UNSUPPORTED", "this board cannot reboot itself")
        return {"rebooting": True}


def _config_problems(cfg):
    """The firmware's own messages about this config (they never quote secrets)."""
    try:
        from . import config

        checked = config.validate(cfg)
    except Exception:
        return []
    if isinstance(checked, tuple):  # (data, errors, sensor_errors, warnings)
        return list(checked[1]) + list(checked[2])
    return list(getattr(checked, "errors", [])) + list(getattr(checked, "sensor_errors", []))


def _b64(text):
    try:
        return binascii.a2b_base64(text)
    except ValueError:
        raise ConsoleError("BAD_ARGS", "not base64")


_COMMANDS = {
    "info": Console.cmd_info,
    "keygen": Console.cmd_keygen,
    "config-set": Console.cmd_config_set,
    "config-begin": Console.cmd_config_begin,
    "config-chunk": Console.cmd_config_chunk,
    "config-end": Console.cmd_config_end,
    "sign-digest": Console.cmd_sign_digest,
    "done": Console.cmd_done,
    "ota-begin": Console.cmd_ota_begin,
    "ota-chunk": Console.cmd_ota_chunk,
    "ota-end": Console.cmd_ota_end,
    "reboot": Console.cmd_reboot,
}

