# Socket errno values, taken from the platform the firmware runs on.
#
# MicroPython's ESP32 port reports lwIP errors with ESP-IDF newlib's numbers,
# which differ from Linux's: EINPROGRESS is 119 there (115 on Linux), ETIMEDOUT
# 116 (110), EALREADY 120 (114). A client that hard-codes Linux numbers takes a
# would-block on an ESP32 for a broken connection and drops the session. As
# mqtt_as does, the `errno` module's names are used where the port has them,
# with the platform's table for the names a port leaves out.
#
# Pure logic: imports nothing from machine or network. Kept small: mqtt.py
# holds BUSY for as long as the board runs.

import sys

_NAMES = (
    "EAGAIN", "EINPROGRESS", "EALREADY", "ETIMEDOUT", "ECONNRESET", "ECONNREFUSED", "EISCONN",
)  # fmt: skip
_LINUX = (11, 115, 114, 110, 104, 111, 106)  # also the unix port's (its errno lacks EISCONN)
_NEWLIB = (11, 119, 120, 116, 104, 111, 127)  # ESP-IDF (esp32, esp8266)


def _newlib(platform):
    return platform in ("esp32", "esp8266")


def value(name, platform=None):
    # `name`'s number on `platform` (default: here); the errno module's where
    # it has the name and runs on that platform, else the table's.
    here = sys.platform
    platform = platform or here
    if _newlib(platform) == _newlib(here):
        try:
            import errno

            v = getattr(errno, name, None)
            if v is not None:
                return v
        except ImportError:
            pass
    return (_NEWLIB if _newlib(platform) else _LINUX)[_NAMES.index(name)]


def busy(platform=None):
    # The numbers that only mean "not now": EAGAIN, EINPROGRESS, EALREADY, ETIMEDOUT.
    return tuple(value(n, platform) for n in _NAMES[:4])


def blocked(exc, busy_values):
    # True when an OSError only means "not now" (busy_values: busy(platform)).
    args = getattr(exc, "args", ())
    return bool(args) and args[0] in busy_values


BUSY = busy()
ETIMEDOUT = value("ETIMEDOUT")
ECONNRESET = value("ECONNRESET")
ECONNREFUSED = value("ECONNREFUSED")
EISCONN = value("EISCONN")  # a stepped TCP connect has completed (board/tcpopen.py)
