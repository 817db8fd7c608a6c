# The TP1 console's seldom-used commands, loaded on first use (console.py
# dispatches here): chunked config, the owner-binding signature, firmware
# updates.
# Each is `command(console, args)` -> the answer dict, like Console's own.

import binascii
import hashlib
import json
import os

from .compat import const
from .console import _OTA_INCOMING, PROVISIONED_FILE, ConsoleError, _b64, _hex

_MAX_CONFIG = const(8192)
_MAX_BUNDLE = const(512 * 1024)

# Config keys a finished board (after `done`) still takes over the console:
# they tune sampling, labels and the local network. Every other key decides
# whom the board trusts (ota_pubkey, broker TLS and CA, NTP) or where its
# readings go (broker host, port, user, password, serial uplink, outbox), so
# after `done` it changes only through a signed OTA or a re-provision, which
# makes a new key (docs/HOBBYIST.md, "A locked-down board").
OPEN_KEYS = (
    "name",
    "sensors",
    "sample_period_s",
    "status_period_s",
    "ack_timeout_s",
    "window",
    "awake_s",
    "deep_sleep",
    "backoff_max_s",
    "watchdog_s",
    "led_pin",
    "log",
    "seq_block",
    "wifi",
)


def check_open(new):
    # After `done`: refuse a config change that touches any key but OPEN_KEYS.
    locked = sorted(k for k in new if k not in OPEN_KEYS)
    if locked:
        # json.dumps: a key name cannot break the one-line answer.
        raise ConsoleError(
            "LOCKED",
            "provisioning is closed: %s only change by a signed OTA or by "
            "`wipe` and provisioning again (a new key); nothing written" % json.dumps(locked)[:200],
        )


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


def _hex_address(text):
    if text[:2] in ("0x", "0X"):
        text = text[2:]
    try:
        raw = binascii.unhexlify(text)
    except ValueError:
        raw = b""
    if len(raw) != 20:
        raise ConsoleError("BAD_ARGS", "an address is 40 hex digits")
    return raw


def _uint(text):
    if not text.isdigit() or len(text) > 78:
        raise ConsoleError("BAD_ARGS", "nonce and chain id are decimal whole numbers")
    return int(text)


def sign_bind(c, args):
    # The board builds the EIP-712 BindBoard digest itself (firmware/bind.py)
    # and signs nothing else: no host-supplied digest is ever signed.
    if len(args) != 4:
        raise ConsoleError("BAD_ARGS", "sign-bind <owner> <nonce> <chain id> <contract>")
    owner = _hex_address(args[0])
    nonce = _uint(args[1])
    chain_id = _uint(args[2])
    contract = _hex_address(args[3])
    if not c.provisioning:
        raise ConsoleError("DENIED", "bind signatures only in provisioning mode")
    key = c.keys().load()
    if key is None:
        raise ConsoleError("NO_KEY", "no key yet: keygen first")
    from . import bind, secp256k1

    try:
        digest = bind.digest(owner, nonce, chain_id, contract)
    except bind.BindError as e:
        raise ConsoleError("BAD_ARGS", str(e))
    sig, v = secp256k1.sign_recoverable(key, digest)
    _, addr = c._identity(key)
    # r || s || v with v = 27 + recovery id: what ecrecover takes.
    return {"sig": _hex(sig + bytes((27 + v,))), "addr": _hex(addr), "digest": _hex(digest)}


def wipe(c, args):
    # A full re-provision: the key, the config and the `provisioned` marker go,
    # so the board comes back in provisioning mode and `keygen` makes a NEW
    # identity. Whoever wipes a board never gets the old one's key or trust.
    # The OTA state stays: its release floor is not the owner's to lower.
    if c._known is not None:  # the app's identity: no key store beside the app
        key = True
    else:
        try:
            key = c.keys().load()
        except Exception:  # a damaged key file: nothing to confirm against, wipe it too
            key = None
    addr = _hex(c._identity(key)[1]) if key is not None else None
    if addr is not None and (len(args) != 1 or args[0].lower() != addr):
        raise ConsoleError("BAD_ARGS", "wipe <this board's address>: confirms which board")
    from .seqstore import remove_quiet

    for name in ("key.bin", PROVISIONED_FILE):
        remove_quiet(c.root + "/" + name)
        remove_quiet(c.root + "/" + name + ".tmp")
    remove_quiet(c.config_path)
    remove_quiet(c.config_path + ".tmp")
    c._pub = c._known = c._keystore = None
    if c._provisioning is not None:
        c._provisioning = True
    # The running app still holds the old key: `handle` reboots after answering.
    return {"wiped": addr, "provisioning": True}


def ota_begin(c, args):
    if len(args) != 1:
        raise ConsoleError("BAD_ARGS", "ota-begin <size>")
    size = int(args[0])
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
