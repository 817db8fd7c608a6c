# Socket errno values, taken from the platform the firmware runs on.
#
# MicroPython's ESP32 port reports lwIP errors with ESP-IDF newlib's numbers,
# which differ from Linux's: EINPROGRESS is 119 there (115 on Linux), ETIMEDOUT
# 116 (110), ECONNABORTED 113 (103), ENOTCONN 128 (107). A client that
# hard-codes Linux numbers takes a would-block on an ESP32 for a broken
# connection and drops the session. As mqtt_as does, the `errno` module's
# names are used where the port has them, with the platform's table beside
# them for the names a port leaves out.
#
# Pure logic: imports nothing from machine or network.

import sys

try:
    import errno
except ImportError:  # a MicroPython built without it: the tables alone
    errno = None

# name: (Linux / the unix port, ESP-IDF newlib)
_TABLE = {
    "EAGAIN": (11, 11),
    "EWOULDBLOCK": (11, 11),
    "EINPROGRESS": (115, 119),
    "EALREADY": (114, 120),
    "ETIMEDOUT": (110, 116),
    "ECONNRESET": (104, 104),
    "ECONNABORTED": (103, 113),
    "ECONNREFUSED": (111, 111),
    "ENOTCONN": (107, 128),
    "EHOSTUNREACH": (113, 118),
}
_NEWLIB_PLATFORMS = ("esp32", "esp8266")


class SocketErrors:
    # The errno values of one platform, grouped by what the client does with them.

    def __init__(self, platform=None, module=errno):
        self.platform = platform or sys.platform
        self._col = 1 if self.platform in _NEWLIB_PLATFORMS else 0
        self._module = module
        # Would-block: try again later, the connection is fine.
        self.busy = self.values("EAGAIN", "EWOULDBLOCK", "EINPROGRESS", "EALREADY", "ETIMEDOUT")
        # The peer or the network ended the connection.
        self.dropped = self.values("ECONNRESET", "ECONNABORTED", "ENOTCONN", "EHOSTUNREACH")

    def value(self, name):
        # The platform's number for `name`: the errno module's, else the table's.
        if self._module is not None and self._col == _native_col():
            v = getattr(self._module, name, None)
            if v is not None:
                return v
        return _TABLE[name][self._col]

    def values(self, *names):
        out = []
        for name in names:
            v = self.value(name)
            if v not in out:
                out.append(v)
        return tuple(out)

    def blocked(self, exc):
        # True when an OSError only means "not now" on this platform.
        args = getattr(exc, "args", ())
        return bool(args) and args[0] in self.busy


def _native_col():
    # Which table column this interpreter's own errno module follows.
    return 1 if sys.platform in _NEWLIB_PLATFORMS else 0


PLATFORM = SocketErrors()  # the values where this firmware runs
EAGAIN = PLATFORM.value("EAGAIN")
ETIMEDOUT = PLATFORM.value("ETIMEDOUT")
ECONNRESET = PLATFORM.value("ECONNRESET")
ECONNREFUSED = PLATFORM.value("ECONNREFUSED")
EINPROGRESS = PLATFORM.value("EINPROGRESS")
