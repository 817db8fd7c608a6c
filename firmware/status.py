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

import json

FW_VERSION = "0.1.0"


def encode(
    state, addr, pub, seq, outbox, dropped, heap_free, time_synced, errors, readings, corrupt
):
    return json.dumps(
        {
            "state": state,
            "fw": FW_VERSION,
            "addr": addr,
            "pub": pub,
            "seq": seq,
            "outbox": outbox,
            "dropped": dropped,
            "heap_free": heap_free,
            "time_synced": bool(time_synced),
            "errors": errors,
            "readings": readings,
            "corrupt": corrupt,
        }
    ).encode()
