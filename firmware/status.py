# The retained status message (board -> gateway), wire protocol v1.
#
# UTF-8 JSON on `terrapin/v1/<addr>/status`, retained, QoS 1, e.g.
# {"state":"online","fw":"0.1.0","addr":"<40 hex>","pub":"<130 hex>","seq":N,
#  "outbox":N,"dropped":N,"heap_free":N,"time_synced":true,"errors":[...]}
# plus "readings" (this boot) and "corrupt" (outbox records found damaged).
# Not signed; nothing secret ever goes in it. The broker replaces it with the
# 7 bytes `offline` (the last will) when the board drops off unannounced, and
# the board publishes `offline` itself when it stops cleanly.
#
# States: booting, online, config_error, flash_error.
#
# The app imports this module the first time it builds a message (on
# connect, then every status_period_s); it stays loaded.

import json
import os

from . import jsonsafe
from .seqstore import read_atomic

FW_VERSION = "0.1.0"


def encode(app):
    # The status message of `app` (firmware/app.py) as bytes.
    ob = app.outbox
    return json.dumps(
        {
            "state": app.state,
            "fw": FW_VERSION,
            "addr": app.addr_hex,
            "pub": app.pub_hex,
            "seq": app.last_seq,
            "outbox": ob.pending if ob else 0,
            "dropped": ob.dropped if ob else 0,
            "heap_free": app.board.heap_free(),
            "time_synced": bool(app.board.time_synced),
            "errors": app.errors,
            "readings": app.readings,
            "corrupt": ob.corrupt if ob else 0,
        }
    ).encode()


def info(app):
    # The running app's answer to TP1 `info` (consoleport.py): the status
    # plus what console.py's `info` gives in console mode.
    b = app.board
    out = json.loads(encode(app))
    out["proto"] = 1
    out["mode"] = "app"
    try:
        os.stat(b.root + "/provisioned")  # console.PROVISIONED_FILE, written by `done`
        out["provisioning"] = False
    except OSError:
        out["provisioning"] = True
    try:
        cfg = read_atomic(b.config_path, jsonsafe.loads)
        out["config"] = sorted(cfg) if isinstance(cfg, dict) else None
    except Exception:  # unreadable now: the key names are not worth an error
        out["config"] = None
    return out

