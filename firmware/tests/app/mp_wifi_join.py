# Joining WiFi in steps (firmware/wifijoin.py), on CPython and the unix port:
# a stand-in for MicroPython's ESP32 WLAN (connect() only starts a join; its
# status() goes STAT_IDLE -> STAT_CONNECTING -> STAT_GOT_IP, or to a failure
# reason such as 202 wrong password), stepped the way the uplink steps it.
#
#     micropython mp_wifi_join.py [esp32 PORT]     (repo root on the path)
#
# Prints one line per scenario: what each step returned, and how many
# connect() / disconnect() calls the stand-in saw. With `esp32` (unix port
# only), board/esp32.py's own network_up() is stepped instead, over stand-ins
# for the `machine` and `network` modules an ESP32 has, and the longest
# single call is printed too; then its open_socket() to 127.0.0.1:PORT.

import sys
import time

IDLE = 1000
CONNECTING = 1001
GOT_IP = 1010


def ms():
    return time.ticks_ms() if hasattr(time, "ticks_ms") else int(time.monotonic() * 1000)


class StandInWLAN:
    # join_ms: how long a join takes (None: the AP never answers);
    # fail: the status a join ends in instead (e.g. 202, wrong password).
    def __init__(self, join_ms=None, fail=None, status=IDLE):
        self.join_ms = join_ms
        self.fail = fail
        self.started = None
        self.initial = status
        self.connects = 0
        self.disconnects = 0

    def active(self, flag=None):
        return True

    def connect(self, ssid, password):
        self.connects += 1
        self.started = ms()

    def disconnect(self):
        self.disconnects += 1
        self.started = None
        self.initial = IDLE

    def status(self):
        if self.started is None:
            return self.initial
        took = ms() - self.started
        if self.fail is not None and took >= 50:
            return self.fail
        if self.join_ms is not None and took >= self.join_ms:
            return GOT_IP
        return CONNECTING

    def isconnected(self):
        return self.status() == GOT_IP


def run(step, limit_ms):
    # Step until True or an error or limit_ms: what it returned, the longest call.
    out = []
    slowest = 0
    t0 = ms()
    while ms() - t0 < limit_ms:
        t = ms()
        try:
            got = step()
        except OSError as exc:
            got = "error %s" % (exc.args[0],)
        slowest = max(slowest, ms() - t)
        if not out or out[-1] != got:
            out.append(got)
        if got is not False:
            break
        time.sleep(0.01)
    return out, slowest


def pure():
    from firmware.wifijoin import WifiJoin

    cases = (
        ("joins", StandInWLAN(join_ms=300), 150000),
        ("wrong-password", StandInWLAN(fail=202), 150000),
        ("silent-ap", StandInWLAN(), 400),
        ("already-joining", StandInWLAN(join_ms=200, status=CONNECTING), 150000),
    )
    for name, wlan, timeout in cases:
        if name == "already-joining":
            wlan.started = ms()  # a join left from before this boot's first step
        join = WifiJoin(wlan, "ssid", "secret", IDLE, CONNECTING, timeout)
        out, _ = run(join.step, 3000)
        again = join.step() if name == "wrong-password" else None  # a new join starts
        print(name, out, wlan.connects, wlan.disconnects, again)


def esp32():
    class machine:  # noqa: N801 - stands in for the module
        DEEPSLEEP_RESET = 4

        @staticmethod
        def reset_cause():
            return 1

    class network:  # noqa: N801 - stands in for the module
        STA_IF = 0
        STAT_IDLE = IDLE
        STAT_CONNECTING = CONNECTING
        STAT_GOT_IP = GOT_IP
        wlan = StandInWLAN(join_ms=1500)

        @staticmethod
        def WLAN(interface):  # noqa: N802 - the module's spelling
            return network.wlan

    class ntptime:  # noqa: N801 - stands in for the module
        host = None

        @staticmethod
        def settime():
            raise OSError(110)  # no NTP server here: readings keep time 0

    sys.modules["machine"] = machine
    sys.modules["network"] = network
    sys.modules["ntptime"] = ntptime
    from firmware.board import esp32

    board = esp32.Board()
    board.wifi = {"ssid": "ssid", "password": "secret"}
    out, slowest = run(board.network_up, 5000)
    print("esp32", out, network.wlan.connects, "slowest_ms", slowest)
    # Then the broker's TCP connection, opened in steps (board/tcpopen.py).
    link = board.open_socket("127.0.0.1", int(sys.argv[2]))
    out, _ = run(link.opened, 5000)
    print("tcp", out[-1], link.stream is link.sock)
    link.close()


if "esp32" in sys.argv[1:]:
    esp32()
else:
    pure()
