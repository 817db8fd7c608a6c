# The ESP32 board layer: WiFi (or a serial uplink), NTP, I2C / 1-Wire / DHT /
# ADC sensors, watchdog, deep sleep, LED. The application core (app.py) is the same as on
# the unix port; this module is the only one that imports machine/network.
#
# Flash layout (littlefs, the VFS root):
#   /config.json   the config (see config.example.json and docs/FIRMWARE.md)
#   /key.bin       the board's private key (made on first boot, never shown)
#   /seq           the sequence reservation
#   /outbox/       the outbox segments
#
# LED (config "led_pin"): steady on = online; slow blink (toggles on every
# reconnect attempt) = connecting / offline; fast blink = config or flash
# error (the board then opens the TP1 console in console mode, consoleport.py,
# so the config can be fixed; Ctrl-C gives the REPL).

import gc
import sys
import time

import machine
import network

from ..sensors import SensorError

_EPOCH_2000 = 946684800  # MicroPython ports whose time() counts from 2000


def _unix_offset():
    return _EPOCH_2000 if time.gmtime(0)[0] == 2000 else 0


class RTCMemory:
    # Memory that survives deep sleep but not a power cut (for the sequence store).

    def load(self):
        return machine.RTC().memory()

    def save(self, data):
        machine.RTC().memory(data)


class Board:
    name = "esp32"
    can_deep_sleep = True
    period_ms = None
    console_port = True  # TP1 console on the REPL UART (terrapin device ...)
    console_stream = None  # the console's stream when the line is shared (else stdin/stdout)
    ota_root = ""  # OTA slots live under the flash root

    def __init__(self, config_path="/config.json", root=""):
        self.config_path = config_path
        self.root = root
        self.retained = RTCMemory()
        self.time_synced = False
        self.wlan = None
        self.join = None  # the WiFi join, stepped by network_up()
        self.wifi = None
        self.uart = None  # the serial uplink's UART (config serial_uplink), else WiFi
        self.ntp_host = "pool.ntp.org"
        self.ntp_at = None
        self.wdt = None
        self.led = None
        self.led_on = False
        self.buses = {}
        self.offset = _unix_offset()
        # An RTC still set from before deep sleep counts as synced.
        if machine.reset_cause() == machine.DEEPSLEEP_RESET and time.time() > 600000000:
            self.time_synced = True

    def configure(self, cfg):
        # Called by the app once the config is valid.
        self.wifi = cfg["wifi"]
        self.ntp_host = cfg["ntp_host"]
        serial = cfg.get("serial_uplink")
        if serial and serial["uart"] == 0:
            # The REPL UART, beside the console (sharedline.py): read through
            # sys.stdin; a machine.UART(0) would take the line from the REPL.
            from ..sharedline import LineShare

            share = LineShare(sys.stdin.buffer, sys.stdout.buffer)
            self.uart = share.uplink
            self.console_stream = share.console  # the TP1 console reads through it too
        elif serial:
            pins = {}
            if serial["tx"] is not None:
                pins["tx"] = serial["tx"]
            if serial["rx"] is not None:
                pins["rx"] = serial["rx"]
            # timeout: how long readline waits for the rest of a line.
            self.uart = machine.UART(
                serial["uart"], serial["baud"], rxbuf=serial["rxbuf"], timeout=50, **pins
            )
        if cfg["led_pin"] is not None:
            self.led = machine.Pin(cfg["led_pin"], machine.Pin.OUT)
        if cfg["watchdog_s"]:
            self.wdt = machine.WDT(timeout=cfg["watchdog_s"] * 1000)

    def flash_ready(self):
        pass

    # -- console, clocks, power ---------------------------------------------

    def console(self, level, msg):
        print("[%s] %s" % (level, msg))

    def now(self):
        return time.time() + self.offset

    def ticks_us(self):
        return time.ticks_us()

    def sleep_ms(self, ms):
        # Sleep in slices so the watchdog is fed.
        while ms > 0:
            step = ms if ms < 1000 else 1000
            time.sleep_ms(step)
            self.feed()
            ms -= step

    def heap_free(self):
        return gc.mem_free()

    def feed(self):
        if self.wdt is not None:
            self.wdt.feed()

    def led_state(self, state):
        if self.led is None:
            return
        if state == "online":
            self.led_on = True
        else:
            self.led_on = not self.led_on
        self.led.value(1 if self.led_on else 0)

    def error_blink(self, seconds=10):
        if self.led is None:
            return
        for _ in range(seconds * 5):
            self.led.value(not self.led.value())
            time.sleep_ms(100)
            self.feed()

    def deep_sleep(self, ms):
        if self.led is not None:
            self.led.value(0)
        if self.wlan is not None:
            self.wlan.active(False)
        if self.uart is not None:
            self.uart.flush()  # the uplink's last frames (DISCONNECT, TPX C)
            time.sleep_ms(15)  # UART0's 128-byte TX FIFO at 115200 baud (sharedline)
        machine.deepsleep(max(1, ms))

    # -- network -------------------------------------------------------------

    def network_up(self):
        # One non-blocking look (the uplink steps it): True once WiFi is up,
        # False while it joins; OSError when a join fails or times out
        # (wifijoin.py; the next call starts a new join).
        if self.uart is not None:
            return True  # the serial uplink: the host bridge answers the open
        if self.join is None:
            if not self.wifi:
                raise OSError("wifi not configured")  # a config with errors: no configure()
            from ..wifijoin import WifiJoin  # a WiFi board's only (not a serial uplink's)

            wlan = network.WLAN(network.STA_IF)
            wlan.active(True)
            self.wlan = wlan
            self.join = WifiJoin(
                wlan,
                self.wifi["ssid"],
                self.wifi["password"],
                network.STAT_IDLE,
                network.STAT_CONNECTING,
            )
        if not self.join.step():
            return False
        self._sync_time()
        return True

    def _sync_time(self):
        # NTP at first connect, then every 6 hours.
        now = time.ticks_ms()
        if self.ntp_at is not None and time.ticks_diff(now, self.ntp_at) < 6 * 3600 * 1000:
            return
        self.ntp_at = now
        try:
            import ntptime

            ntptime.host = self.ntp_host
            ntptime.settime()
            self.time_synced = True
        except (OSError, OverflowError, ImportError):
            pass  # readings carry time 0 until the clock is set

    def _serial_socket(self, host, port, wait):
        from ..seriallink import SerialLink

        # wait=False: the uplink steps the opening from the main loop (opened()).
        return SerialLink(
            self.uart, self.uart, host, port, feed=self.feed, wait=wait, on_open=self._host_clock
        )

    def _host_clock(self, link):
        # No NTP without a network: the bridge's clock, sent with every open,
        # also corrects the RTC's drift over deep sleep. A host whose own clock
        # is plainly unset (before 2023-11) is not believed.
        if link.host_time > 1700000000:
            try:
                t = time.gmtime(link.host_time - self.offset)
                machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))
                self.time_synced = True
            except (OverflowError, ValueError, OSError):
                pass  # readings keep the time they had; the uplink is fine

    def open_socket(self, host, port, tls=False, ca_file=None):
        # The broker's link, opened in steps: the uplink calls its opened()
        # from the main loop (board/tcpopen.py; seriallink.py).
        if self.uart is None:
            from .tcpopen import TcpOpen

            return TcpOpen(host, port, tls, ca_file)
        link = self._serial_socket(host, port, wait=tls)  # TLS needs it open
        if not tls:
            return link
        try:
            from .tlsclient import tls_client

            # ssl wraps any stream, the serial link included (a blocking
            # handshake, bounded by the link's read timeout).
            return Ready(tls_client(link, host, ca_file))
        except Exception:
            link.close()
            raise

    # -- sensors -------------------------------------------------------------

    def _i2c(self, spec):
        key = (spec["sda"], spec["scl"])
        bus = self.buses.get(key)
        if bus is None:
            bus = machine.SoftI2C(
                sda=machine.Pin(spec["sda"]),
                scl=machine.Pin(spec["scl"]),
                freq=spec.get("freq", 100000),
            )
            self.buses[key] = bus
        return bus

    def make_sensor(self, spec):
        driver = spec["driver"]
        if driver == "bme280":
            from ..sensors.bme280 import BME280

            return BME280(self._i2c(spec), spec.get("addr", 0x76))
        if driver == "sht3x":
            from ..sensors.sht3x import SHT3x

            return SHT3x(self._i2c(spec), spec.get("addr", 0x44))
        if driver == "ds18b20":
            import onewire

            from ..sensors.ds18b20 import DS18B20

            return DS18B20(onewire.OneWire(machine.Pin(spec["pin"])))
        if driver == "dht22":
            import dht

            from ..sensors.dht22 import DHT22

            dev = dht.DHT22(machine.Pin(spec["pin"]))

            def read_raw():
                dev.measure()
                return dev.buf

            return DHT22(read_raw)
        if driver == "adc":
            from ..sensors.adc import ADCVoltage

            adc = machine.ADC(machine.Pin(spec["pin"]), atten=machine.ADC.ATTN_11DB)
            return ADCVoltage(adc, spec.get("divider", 2.0))
        if driver == "simulated":
            from ..sensors.simulated import Simulated

            return Simulated(
                spec.get("seed", 1), self.now, spec.get("fail_every", 0), spec.get("quantities")
            )
        raise SensorError("unknown driver %s" % driver)

    def reset(self):
        time.sleep_ms(50)  # the answer before it out of the UART (~10 ms per 100 bytes)
        machine.reset()

    def report_stats(self, stats):
        pass


class Ready:
    # A link that is open already (TLS over the serial link, opened blocking).

    def __init__(self, stream):
        self.stream = stream

    def opened(self):
        return True

    def close(self):
        self.stream.close()


def main():
    from ..consoleport import asked

    board = Board()
    if asked(board.root):  # the running app was asked for console mode (`console`)
        from .. import console

        return console.main(board, False)
    from .. import app

    code = app.main(board)
    if code:
        board.console(
            "error", "stopped: the TP1 console is open in console mode to fix /config.json"
        )
        board.error_blink()
        from .. import console

        console.main(board, True)  # `terrapin device provision` reaches a fresh board
    return code
