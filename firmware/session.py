# Reconnect-only code of the uplink: open the socket, MQTT CONNECT (clean
# session, keepalive, last will, user/password) and wait for CONNACK,
# SUBSCRIBE to the ack topic.
#
# A session is set up at boot and after an outage, not per reading, so this
# module is imported when it is needed and unloaded right after (uplink.py:
# Uplink._connect; MQTTClient.connect for direct callers): the board keeps
# only publish / PUBACK / poll / ping resident. Same code on CPython (where
# it simply stays imported).

import select
import struct
import sys

from .compat import IS_MICROPYTHON, ticks_diff, ticks_ms
from .mqtt import MQTTConnectError, MQTTError, MQTTTimeout


def unload():
    # Forget this module (MicroPython only): its code goes back to the heap.
    if IS_MICROPYTHON:
        sys.modules.pop(__name__, None)
        pkg = sys.modules.get(__name__.rsplit(".", 1)[0])
        if pkg is not None and "session" in pkg.__dict__:
            delattr(pkg, "session")


def mqtt_connect(c, sock, timeout_ms):
    # MQTTClient.connect: CONNECT (clean session) over `sock`; waits for CONNACK.
    c.sock = sock
    c.n = c.skip = 0
    c.ping_at = None
    c.write = getattr(sock, "write", None) or sock.send
    c.readinto = getattr(sock, "readinto", None) or sock.recv_into
    sock.setblocking(False)
    c.poller = select.poll()
    c.poller.register(sock, select.POLLIN)
    parts = [c.client_id]
    flags = 2
    if c.will:
        topic, msg, retain = c.will
        flags |= 0x0C | (0x20 if retain else 0)  # will flag, will QoS 1
        parts += [topic, msg]
    if c.user is not None:
        flags |= 0x80
        parts.append(c.user)
        if c.password is not None:
            flags |= 0x40
            parts.append(c.password)
    size = 10
    for p in parts:
        size += 2 + len(p)
    i = c._head(0x10, size)
    c.txv[i : i + 7] = b"\x00\x04MQTT\x04"
    c.tx[i + 7] = flags
    struct.pack_into("!H", c.tx, i + 8, c.keepalive)
    i += 10
    for p in parts:
        i = c._str(i, p)
    c._send(i)
    t0 = ticks_ms()
    while True:
        got = c._packet()
        if got:
            kind, at, size = got
            if kind != 0x20 or size != 2:
                raise MQTTError("expected CONNACK")
            code = c.rx[at + 1]
            c._drop(at + size)
            if code:
                raise MQTTConnectError("broker refused the connection", code)
            c.connected = True
            return
        left = timeout_ms - ticks_diff(ticks_ms(), t0)
        if left <= 0:
            raise MQTTTimeout("no CONNACK")
        c.poller.poll(min(left, 100))
        c._fill()


def uplink_connect(up):
    # Uplink._connect: open the session and subscribe; reset the window so
    # that it is resent from a probe. Errors drop it (up._lost) as before.
    b = up.broker
    board = up.board
    board.led_state("connecting")
    try:
        if not board.network_up():
            raise OSError("network down")
        up.client.connect(board.open_socket(b["host"], b["port"], b["tls"], b["ca_file"]))
        up.client.subscribe(up.t_ack)
    except MemoryError:
        raise
    except Exception as exc:  # OSError, MQTTError, TLS/CA errors (ValueError)
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
