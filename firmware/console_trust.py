# The TP1 console's commands about the board's identity and trust, loaded on
# first use (console.py dispatches here):
# - the config lock after `done` (OPEN_KEYS, check_open);
# - sign-bind: the owner binding's EIP-712 digest, built on the board
#   (firmware/bind.py); the board signs no digest a host hands it;
# - wipe: the full re-provision (key, config and marker go; a new key next).
# Each command is `command(console, args)` -> the answer dict, like Console's.

import binascii
import json

from .console import PROVISIONED_FILE, ConsoleError, _hex

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
    key = c.load_key()
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
            key = c.load_key()
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
    c._pub = c._known = None
    if c._provisioning is not None:
        c._provisioning = True
    # The running app still holds the old key: `handle` reboots after answering.
    return {"wiped": addr, "provisioning": True}
