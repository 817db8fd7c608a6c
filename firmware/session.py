# Set-up and reconnect-only code of the uplink: Uplink.__init__ (topics,
# MQTT client, settings), open the socket (a serial link in steps), the MQTT
# session (MQTTClient.connect: the client owns its packets, CONNECT included),
# SUBSCRIBE to the ack topic; and the clean close (exit, deep sleep).
#
# None of this runs per reading, so the uplink imports this module when it
# is needed and unloads it right after. Same code on CPython (where it stays
# imported).

from . import mqtt
from .compat import const, ticks_add, ticks_diff, ticks_ms
from .mqtt import MQTTError

_OPEN_STEP_MS = const(20)  # how soon the main loop looks at a link being opened again


def init_uplink(up, board, cfg, addr_hex, outbox, app):
    # Uplink.__init__: topics, the MQTT client (last will), the settings.
    up.board = board
    up.outbox = outbox
    up.app = app
    broker = cfg["broker"]
    up.broker = broker
    base = "terrapin/v1/" + addr_hex + "/"
    up.t_reading = (base + "reading").encode()
    up.t_status = (base + "status").encode()
    up.t_ack = (base + "ack").encode()
    up.client = c = mqtt.MQTTClient(
        "tp-" + addr_hex,
        broker["keepalive_s"],
        broker["user"],
        broker["password"],
        up._on_message,
        up._on_puback,
    )
    c.will = (up.t_status, b"offline", True)
    up.window_size = cfg["window"]
    up.ack_timeout = int(cfg["ack_timeout_s"] * 1000)
    up.status_period = int(cfg["status_period_s"] * 1000)
    up.backoff_max = int(cfg["backoff_max_s"] * 1000)
    up.backoff = 1000
    up.window = []
    up.probe = True  # only the oldest entry in flight (see the top)
    up.cursor = (0, 0)
    up.next_try = ticks_ms()
    up.status_at = 0
    up.status_due = True
    up.last_error = None
    up.last_pid = 0
    up.published = up.republished = up.acked = up.rejected = 0
    up.connects = up.bad_acks = 0
    up.opening = None  # a link being opened in steps (uplink_connect)


def uplink_connect(up):
    # Uplink._connect: open the session and subscribe; reset the window so
    # that it is resent from a probe. Errors drop it (up._lost) as before.
    b = up.broker
    board = up.board
    board.led_state("connecting")
    try:
        sock = up.opening
        if sock is None:
            if not board.network_up():
                raise OSError("network down")
            sock = board.open_socket(b["host"], b["port"], b["tls"], b["ca_file"])
        # A link that opens in steps (seriallink, wait=False): look again on the
        # next pass of the main loop instead of blocking it until the host answers.
        if getattr(sock, "opening", False) and not sock.opened():
            up.opening = sock
            up.next_try = ticks_add(ticks_ms(), _OPEN_STEP_MS)
            return
        up.opening = None
        up.client.connect(sock)
        up.client.subscribe(up.t_ack)
        # Firmware updates over MQTT (ota_mqtt.py): offers and chunks for this board.
        up.client.subscribe(up.t_ack[:-3] + b"ota")
        up.client.subscribe(up.t_ack[:-3] + b"ota/chunk")
    except MemoryError:
        raise
    except Exception as exc:  # OSError, MQTTError, TLS/CA errors (ValueError)
        if up.opening is not None:
            up.opening.close()
            up.opening = None
        up._lost("broker %s:%d unreachable" % (b["host"], b["port"]), exc)
        return
    up.connects += 1
    up.backoff = 1000
    up.last_error = None
    for slot in up.window:
        slot[5] = None  # _SENT: send again
        slot[4] = 0  # _PID: as a new publish
    up.probe = True  # the gateway may not be subscribed yet
    up.app.log("info", "connected to %s:%d" % (b["host"], b["port"]))
    board.led_state("online")
    up.status_due = True


def close_uplink(up, offline):
    # Disconnect cleanly (DISCONNECT: the broker drops the last will); with
    # offline, set the retained status to `offline` first. Waits (up to 2 s)
    # for the PUBACK of the last publish, so nothing is cut off by the close.
    c = up.client
    try:
        if c.connected and offline:
            up.last_pid = c.publish(up.t_status, b"offline", 1, True)
        t0 = ticks_ms()
        while c.connected and up.last_pid and ticks_diff(ticks_ms(), t0) < 2000:
            c.poll(20)
    except (MQTTError, OSError):
        pass
    c.close(True)
