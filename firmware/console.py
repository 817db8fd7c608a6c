"""Board side of the Terrapin console protocol, version 1 (TP1).

A line-based request/answer protocol on the board's serial console, used by
`terrapin device provision` and friends. Pure logic: the caller gives bytes to
`feed()` and a `write(bytes)` callable for the answers, so the same code runs
on an ESP32 (UART REPL), on the unix port (a pty) and on CPython.

    host:  TP1 [#<id>] <command> [args...]\\n
    board: TP1 OK [#<id>] <json>\\n   |   TP1 ERR [#<id>] <CODE> <text>\\n
    board: TP1 EV <json>\\n   (unsolicited status line: consoleport.ConsolePort.event)

The request id (1-16 letters or digits) is echoed in the answer, so a host
matches each answer to its request: a late answer to an earlier request
(say, an `info` poll sent while the board was booting) is never taken as the
answer to a later one. Without an id the answer has none (TP1 as before).

Commands: info, keygen [force], config-set <b64>, config-begin,
config-chunk <b64>, config-end <sha256-hex>,
sign-bind <owner> <nonce> <chain-id> <contract>, done, wipe <addr>,
ota-begin <size>, ota-chunk <b64>, ota-end, reboot. docs/HOBBYIST.md has the
full description. The private key never leaves the board: no command answers
with it and no error text includes it; config values are never echoed (only
key names). The board signs only what it builds itself: readings, and the
owner binding's EIP-712 digest (firmware/bind.py); never a digest a host
hands it. After `done` the keys that decide whom the board trusts are locked
(console_trust.OPEN_KEYS).
"""

import binascii
import hashlib
import json
import os

from . import config, jsonsafe, keystore
from .compat import const, ticks_diff, ticks_ms
from .consoleport import request_id
from .seqstore import StoreError, read_atomic, write_atomic

PREFIX = b"TP1 "
_MAX_LINE = const(1536)
_HEAD = const(22)  # "TP1 #" + id + " ": what an over-long line keeps
VERSION = "0.1.0"
CONFIG_FILE = "config.json"
_OTA_INCOMING = "ota_incoming.bin"
PROVISIONED_FILE = "provisioned"  # also read by the running app (status.info)
_LEAVE_MS = const(300000)  # console mode: a host quiet this long has gone away
_EVENT_MS = const(10000)


class ConsoleError(Exception):
    """An answerable failure: `code` is the word after ERR."""

    def __init__(self, code, text):
        super().__init__(text)
        self.code = code
        self.text = text


def _json_dict(data):
    try:
        obj = jsonsafe.loads(data)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _hex(b):
    return binascii.hexlify(b).decode()


class Console:
    """One console session. `root` is the flash directory (config, key, OTA)."""

    def __init__(
        self,
        root,
        write,
        provisioning=None,
        reboot=None,
        status=None,
        fw_version=None,
        trusted_release=None,
        config_path=None,
        identity=None,
    ):
        self.root = root
        self.config_path = config_path or root + "/" + CONFIG_FILE
        self.write = write
        # provisioning: None -> until `done` writes the marker file.
        self._provisioning = provisioning
        self.reboot = reboot
        self.status = status  # callable -> dict merged into `info`
        self.fw_version = fw_version or VERSION
        self.trusted_release = trusted_release
        self._line = bytearray()
        self._overflow = False
        self._pub = None
        # (pub, addr) the running app already knows: `info` then needs neither
        # the key store nor secp256k1, which would not fit beside the app.
        self._known = identity
        self._config_buf = None
        self._ota = None  # [file, expected size, written, sha256]
        self._rid = b""  # " #<id>" of the request being answered, or empty

    # -- bytes in ---------------------------------------------------------
    def feed(self, data):
        """Take bytes from the serial line; answer each complete TP1 line."""
        for b in data:
            if b == 10:  # \n
                line = bytes(self._line)
                self._line = bytearray()
                self._rid = b""
                if self._overflow:
                    self._overflow = False
                    self._rid = _head_id(line)  # the line's head was kept for its id
                    self._err("TOO_LONG", "line longer than %d bytes" % _MAX_LINE)
                elif line.startswith(PREFIX):
                    try:
                        text = line[len(PREFIX) :].strip().decode()
                    except UnicodeError:  # found by `terrapin fuzz`: it escaped feed()
                        self._err("BAD_COMMAND", "line is not UTF-8")
                        continue
                    self.handle(text)
            elif b == 13:
                continue
            elif len(self._line) >= _MAX_LINE:
                self._overflow = self._line.startswith(PREFIX) or self._overflow
                # Keep "TP1 #<id> " so the TOO_LONG answer carries the request's id.
                self._line = self._line[:_HEAD] if self._overflow else bytearray()
            else:
                self._line.append(b)

    def handle(self, text):
        parts = text.split()
        self._rid = b""
        if parts and parts[0].startswith("#"):
            rid = parts.pop(0)[1:].encode()
            if not request_id(rid):
                return self._err("BAD_COMMAND", "request id must be 1-16 letters or digits")
            self._rid = b" #" + rid
        if not parts:
            return self._err("BAD_COMMAND", "empty command")
        name = parts[0]
        method = _COMMANDS.get(name)
        if method is None and name in _RARE:
            from . import console_ops

            method = getattr(console_ops, name.replace("-", "_"))
        elif method is None and name in _TRUST:
            from . import console_trust

            method = getattr(console_trust, name.replace("-", "_"))
        if method is None:
            return self._err("BAD_COMMAND", "unknown command " + name[:32])
        try:
            answer = method(self, parts[1:])
        except ConsoleError as e:
            return self._err(e.code, e.text)
        except Exception as e:  # never let a command kill the app
            return self._err("INTERNAL", type(e).__name__)
        self._ok(answer if answer is not None else {})
        if name in ("reboot", "wipe") and self.reboot is not None:
            self.reboot()

    def idle(self):
        """True when no line, chunked config or OTA transfer is half done."""
        return not self._line and self._config_buf is None and self._ota is None

    def abandon(self):
        """The host went away mid-transfer: close what it left open."""
        if self._ota is not None:
            self._ota[0].close()
            self._ota = None
        self._config_buf = None
        self._line = bytearray()

    # -- bytes out --------------------------------------------------------
    def _ok(self, obj):
        self.write(PREFIX + b"OK" + self._rid + b" " + json.dumps(obj).encode() + b"\n")

    def _err(self, code, text):
        self.write(
            PREFIX + b"ERR" + self._rid + b" " + code.encode() + b" " + text.encode() + b"\n"
        )

    # -- state ------------------------------------------------------------
    @property
    def provisioning(self):
        if self._provisioning is not None:
            return bool(self._provisioning)
        try:
            os.stat(self.root + "/" + PROVISIONED_FILE)
            return False
        except OSError:
            return True

    def load_key(self):
        # The board's key (firmware/keystore.py), None before `keygen`.
        return keystore.load_key(self.root)

    def _identity(self, key):
        if self._known is not None:
            return self._known
        from . import keccak, secp256k1

        if self._pub is None:
            self._pub = secp256k1.public_key(key)
        return self._pub, keccak.keccak256(self._pub[1:])[12:]

    def _config(self):
        try:
            return read_atomic(self.config_path, _json_dict)
        except (OSError, StoreError):
            return None

    # -- commands ---------------------------------------------------------
    def cmd_info(self, args):
        key = True if self._known is not None else self.load_key()
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
        key = True if self._known is not None and not force else self.load_key()
        if key is not None and not force:
            # Never overwrite: answer with the existing identity.
            pub, addr = self._identity(key)
            return {"pub": _hex(pub), "addr": _hex(addr), "created": False}
        if key is not None and not self.provisioning:
            raise ConsoleError("DENIED", "replacing a key needs provisioning mode")
        self._pub = self._known = None
        key = keystore.create_key(self.root)
        pub, addr = self._identity(key)
        return {"pub": _hex(pub), "addr": _hex(addr), "created": True}

    def _store_config(self, raw):
        try:
            new = jsonsafe.loads(raw)
        except ValueError as exc:  # bad, too deep or too big (jsonsafe.py)
            raise ConsoleError("BAD_CONFIG", "not JSON: %s" % exc.args[0])
        if not isinstance(new, dict):
            raise ConsoleError("BAD_CONFIG", "config must be a JSON object")
        if not self.provisioning:  # the trust config is locked (console_trust.OPEN_KEYS)
            from .console_trust import check_open

            check_open(new)
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
        write_atomic(self.config_path, json.dumps(cfg).encode())  # old or new after a power cut
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

    def cmd_done(self, args):
        with open(self.root + "/" + PROVISIONED_FILE, "w") as f:
            f.write("1")
        if self._provisioning is not None:
            self._provisioning = False
        return {"provisioning": False}

    def cmd_console(self, args):
        return {"mode": "console"}  # here already (the running app reboots into it)

    def cmd_reboot(self, args):
        if self.reboot is None:
            raise ConsoleError("UNSUPPORTED", "this board cannot reboot itself")
        return {"rebooting": True}


def _config_problems(cfg):
    """The firmware's own messages about this config (they never quote secrets)."""
    try:
        _data, errors, sensor_errors, _warnings = config.validate(cfg)
    except Exception:  # the config is stored either way; a check that fails says nothing
        return []
    return errors + sensor_errors


def _head_id(line):
    # b" #<id>" from the head of a TP1 line, or b"" when it has no valid id.
    word = line[len(PREFIX) :].split(b" ", 1)[0]
    if word[:1] == b"#" and request_id(word[1:]):
        return b" " + word
    return b""


def _b64(text):
    try:
        return binascii.a2b_base64(text)
    except ValueError:
        raise ConsoleError("BAD_ARGS", "not base64")


_COMMANDS = {
    "info": Console.cmd_info,
    "keygen": Console.cmd_keygen,
    "config-set": Console.cmd_config_set,
    "done": Console.cmd_done,
    "reboot": Console.cmd_reboot,
    "console": Console.cmd_console,
}
# Commands a session seldom needs live in console_ops.py, loaded on first use:
# beside the running app the heap has no room for the whole console.
_RARE = (
    "config-begin",
    "config-chunk",
    "config-end",
    "ota-begin",
    "ota-chunk",
    "ota-end",
)
# The identity and trust commands: console_trust.py, loaded the same way.
_TRUST = ("sign-bind", "wipe")


def main(board, stay, leave_ms=_LEAVE_MS):
    """A boot with the whole TP1 console and no app (console mode, consoleport.py).
    `stay`: the app cannot run (no usable config), so a quiet host does not end
    it; else `leave_ms` of quiet with nothing half sent resets the board into
    the app. Returns 0 when the console's input ends (the unix port)."""
    import gc
    import select
    import sys

    from .status import FW_VERSION

    board.flash_ready()
    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else sys.stdout
    con = Console(
        board.root,
        out.write,
        reboot=board.reset,
        status=lambda: {"mode": "console", "heap_free": board.heap_free()},
        fw_version=FW_VERSION,
        config_path=board.config_path,
    )
    event = b'TP1 EV {"state": "console", "fw": "' + FW_VERSION.encode() + b'"}\n'
    poll = select.poll()
    poll.register(sys.stdin, select.POLLIN)
    inp = getattr(sys.stdin, "buffer", sys.stdin)
    gc.collect()
    out.write(event)
    heard = shown = ticks_ms()
    while True:
        board.feed()
        if poll.poll(100):
            b = inp.read(1)
            if not b:
                return 0
            heard = ticks_ms()
            con.feed(b)
        now = ticks_ms()
        if not stay and ticks_diff(now, heard) > leave_ms and con.idle():
            board.reset()  # the host went away: back to the app
        if ticks_diff(now, shown) > _EVENT_MS:
            shown = now
            out.write(event)
