# The TP1 console's seldom-used commands, loaded on first use (console.py
# dispatches here): chunked config and firmware updates. The commands about
# the board's identity and trust (bind signature, wipe, the config lock) are
# in console_trust.py.
# Each is `command(console, args)` -> the answer dict, like Console's own.

import binascii
import hashlib
import os

from .compat import const
from .console import _OTA_INCOMING, ConsoleError, _b64, _hex

_MAX_CONFIG = const(8192)
_MAX_BUNDLE = const(512 * 1024)


def config_begin(c, args):
    c._config_buf = bytearray()
    return {}


def config_chunk(c, args):
    if c._config_buf is None:
        raise ConsoleError("BAD_STATE", "config-begin first")
    if len(args) != 1:
        raise ConsoleError("BAD_ARGS", "config-chunk <base64>")
    chunk = _b64(args[0])
    if len(c._config_buf) + len(chunk) > _MAX_CONFIG:
        c._config_buf = None
        raise ConsoleError("TOO_LONG", "config larger than %d bytes" % _MAX_CONFIG)
    c._config_buf.extend(chunk)
    return {"size": len(c._config_buf)}


def config_end(c, args):
    buf = c._config_buf
    c._config_buf = None
    if buf is None:
        raise ConsoleError("BAD_STATE", "config-begin first")
    raw = bytes(buf)
    if len(args) != 1 or _hex(hashlib.sha256(raw).digest()) != args[0].lower():
        raise ConsoleError("BAD_CHECKSUM", "config sha256 does not match; nothing written")
    return c._store_config(raw)


def ota_begin(c, args):
    if len(args) != 1:
        raise ConsoleError("BAD_ARGS", "ota-begin <size>")
    try:
        size = int(args[0])
    except ValueError:  # found by `terrapin fuzz`: it answered ERR INTERNAL
        raise ConsoleError("BAD_ARGS", "ota-begin <size>: size is not a number")
    if size <= 0 or size > _MAX_BUNDLE:
        raise ConsoleError("TOO_LONG", "bundle size out of range")
    ota_close(c)
    f = open(c.root + "/" + _OTA_INCOMING, "wb")
    c._ota = [f, size, 0]
    return {}


def ota_chunk(c, args):
    if c._ota is None:
        raise ConsoleError("BAD_STATE", "ota-begin first")
    chunk = _b64(args[0]) if len(args) == 1 else b""
    st = c._ota
    if st[2] + len(chunk) > st[1]:
        ota_close(c)
        raise ConsoleError("TOO_LONG", "more bytes than announced")
    st[0].write(chunk)
    st[2] += len(chunk)
    return {"size": st[2]}


def ota_end(c, args):
    st = c._ota
    if st is None:
        raise ConsoleError("BAD_STATE", "ota-begin first")
    ota_close(c)
    path = c.root + "/" + _OTA_INCOMING
    try:
        if st[2] != st[1]:
            raise ConsoleError("BAD_ARGS", "bundle truncated")
        trusted = c.trusted_release
        if trusted is None:
            cfg = c._config() or {}
            trusted = cfg.get("ota_pubkey")
        if not trusted:
            raise ConsoleError("NO_KEY", "no trusted release key (config ota_pubkey)")
        from . import ota

        try:
            manifest = ota.install(c.root, path, binascii.unhexlify(trusted))
        except ota.OTAError as e:
            raise ConsoleError("OTA_REJECTED", str(e))
    finally:
        try:
            os.remove(path)
        except OSError:
            pass
    return {"version": manifest["version"], "release": manifest["release"]}


def ota_close(c):
    if c._ota is not None:
        c._ota[0].close()
        c._ota = None
