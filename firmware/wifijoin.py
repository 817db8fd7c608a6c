# Joining WiFi in steps, so that the board's main loop never waits for an
# access point. MicroPython's wlan.connect() only starts a join; step() looks
# at it once per pass of the main loop:
#
#   connected                      -> True
#   not joining yet                -> wlan.connect(ssid, password), False
#   joining (STAT_CONNECTING, or   -> False, until `timeout_ms` since the
#   STAT_IDLE just after connect)     connect: then OSError(ETIMEDOUT)
#   any other status (no AP found, -> OSError naming the status
#   wrong password, ...)
#
# After an error the next step() starts a new join (the uplink's backoff
# spaces the tries). Pure logic: the WLAN object and its status numbers are
# given by the board layer (board/esp32.py), so the same code runs, and is
# tested, on CPython and the unix port.

from .compat import const, ticks_diff, ticks_ms
from .sockerr import ETIMEDOUT

_JOIN_MS = const(15000)  # an ESP32 joins in 1-5 s; a slow DHCP server takes longer


class WifiJoin:
    def __init__(self, wlan, ssid, password, idle, connecting, timeout_ms=_JOIN_MS):
        # idle, connecting: the port's network.STAT_IDLE and STAT_CONNECTING.
        self.wlan = wlan
        self.ssid = ssid
        self.password = password or ""
        self.waiting = (idle, connecting)
        self.connecting = connecting
        self.timeout_ms = timeout_ms
        self.started = None  # ticks_ms() of the join under way, or None

    def step(self):
        # One non-blocking look: True once connected, False while joining;
        # OSError when the join failed or took longer than timeout_ms.
        wlan = self.wlan
        if wlan.isconnected():
            self.started = None
            return True
        status = wlan.status()
        if self.started is None:
            if status != self.connecting:  # not already joining (a join left from before)
                try:
                    wlan.disconnect()
                except OSError:
                    pass
                wlan.connect(self.ssid, self.password)
            self.started = ticks_ms()
            return False
        if status not in self.waiting:
            self._stop()
            raise OSError("wifi join failed (status %d)" % status)
        if ticks_diff(ticks_ms(), self.started) >= self.timeout_ms:
            self._stop()
            raise OSError(ETIMEDOUT, "wifi: no connection within %d ms" % self.timeout_ms)
        return False

    def _stop(self):
        # Give up this join: the next step() starts a new one.
        self.started = None
        try:
            self.wlan.disconnect()
        except OSError:
            pass
