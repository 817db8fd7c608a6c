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
from binascii import unhexlify

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


def console_maker(app):
    # For the TP1 console (--console, board layers that want it): a function
    # that builds the Console when the first console line arrives. Kept here,
    # not in App, because most boards never call it.
    def make(write):
        from .console import Console

        b = app.board
        return Console(
            b.root,
            write,
            reboot=b.reset,
            status=lambda: json.loads(encode(app)),
            fw_version=FW_VERSION,
            config_path=b.config_path,
            identity=(unhexlify(app.pub_hex), app.addr),
        )

    return make
