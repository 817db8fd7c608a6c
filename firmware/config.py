# The board's JSON configuration: its schema (defaults, drivers) and the checks
# that turn every problem into a message a person can act on ("broker.port
# must be a whole number from 1 to 65535"; "unknown key brokr ignored; did you
# mean broker?"), validated at boot by load().
#
# One schema for the board and the host: the board validates its file at boot
# with it, and `terrapin device provision` refuses a config with it before
# anything is written to a board (tools/board/hostconfig.py, which also treats
# unknown keys as errors; the board never needs that part). Errors are fatal
# (the board cannot run: no broker, no period) or sensor errors (that sensor
# is left out, the others run). `load()` returns plain values, (data, errors,
# sensor_errors, warnings); `errors` empty means the board can run. Pure logic
# apart from reading the file: no machine, network or sockets; runs on
# MicroPython and CPython alike. Secret values (passwords) are never echoed:
# messages name the key only.

import json

from . import jsonsafe

DEFAULTS = {
    "wifi": {"ssid": "", "password": ""},
    "broker": {
        "host": "",
        "port": 1883,
        "tls": False,
        "ca_file": None,
        "user": None,
        "password": None,
        "keepalive_s": 60,
    },
    "sample_period_s": 60,
    "sensors": [{"driver": "simulated"}],
    "ack_timeout_s": 30,
    "window": 8,
    "outbox": {"max_bytes": 65536, "segment_bytes": 4096},
    "seq_block": 64,
    "status_period_s": 300,
    "deep_sleep": False,
    "awake_s": 20,
    "backoff_max_s": 120,
    "led_pin": None,
    "watchdog_s": 0,
    "ntp_host": "pool.ntp.org",
    "log": "info",
}

_SECRET = ("password",)
_KNOWN_EXTRA = ("ota_pubkey", "name", "serial_uplink")
LOG_LEVELS = ("error", "info", "debug")

# Drivers and the keys they need ({} = optional keys with defaults).
DRIVERS = {
    "simulated": (),
    "bme280": ("sda", "scl"),
    "sht3x": ("sda", "scl"),
    "ds18b20": ("pin",),
    "dht22": ("pin",),
    "adc": ("pin",),
}
_SENSOR_KEYS = (
    "driver",
    "name",
    "sda",
    "scl",
    "addr",
    "pin",
    "freq",
    "divider",
    "seed",
    "fail_every",
    "quantities",
    "unit",
)


def _is_int(v):
    return type(v) is int


def _is_num(v):
    return type(v) in (int, float)


class _Checker:
    def __init__(self):
        self.errors = []

    def fail(self, msg):
        self.errors.append(msg)

    def int_range(self, obj, key, label, lo, hi):
        v = obj.get(key)
        if not _is_int(v) or not lo <= v <= hi:
            self.fail("%s must be a whole number from %d to %d%s" % (label, lo, hi, _got(v)))
            return False
        return True

    def num_range(self, obj, key, label, lo, hi):
        v = obj.get(key)
        if not _is_num(v) or not lo <= v <= hi:
            self.fail("%s must be a number from %s to %s%s" % (label, lo, hi, _got(v)))
            return False
        return True

    def text(self, obj, key, label, lo, hi, secret=False):
        v = obj.get(key)
        if not isinstance(v, str):
            self.fail("%s must be text%s" % (label, "" if secret else _got(v)))
            return False
        try:
            n = len(v.encode())
        except UnicodeError:  # a lone surrogate (\ud800) from JSON
            self.fail("%s must be valid Unicode text" % label)
            return False
        if n < lo:
            self.fail(
                "%s can't be empty" % label
                if lo == 1
                else "%s must be at least %d characters" % (label, lo)
            )
            return False
        if n > hi:
            self.fail("%s can't be longer than %d characters" % (label, hi))
            return False
        return True

    def boolean(self, obj, key, label):
        if type(obj.get(key)) is not bool:
            self.fail("%s must be true or false%s" % (label, _got(obj.get(key))))


def _got(v):
    text = json.dumps(v) if v is not None else "nothing"
    if len(text) > 24:
        text = text[:21] + "..."
    return " (got %s)" % text


def _distance(a, b):
    # Edit distance with adjacent transpositions ("hots" -> "host" is 1).
    rows = [list(range(len(b) + 1))]
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        prev = rows[-1]
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], rows[-2][j - 2] + 1)
        rows = [prev, cur]
    return rows[-1][len(b)]


def suggest(word, choices):
    # The known key closest to a misspelt one, or None when none is close.
    best, best_d = None, 3
    if not isinstance(word, str) or len(word) > 40:
        return None
    for c in choices:
        d = _distance(word.lower(), c)
        if d < best_d or (d == best_d and best is not None and c < best):
            best, best_d = c, d
    return best if best is not None and best_d <= max(1, len(word) // 3) else None


def _unknown(label, key, choices):
    hint = suggest(key, choices)
    text = "unknown key %s%s ignored" % (label, key)
    return text + ("; did you mean %s%s?" % (label, hint) if hint else " (typo?)")


def _merge(defaults, given, label, warnings):
    out = {}
    for k in defaults:
        out[k] = defaults[k]
    for k in given:
        if k not in defaults and (label or k not in _KNOWN_EXTRA):
            choices = list(defaults) + ([] if label else list(_KNOWN_EXTRA))
            warnings.append(_unknown(label, k, choices))
        out[k] = given[k]
    return out


def parse(text, board="unix"):
    # Validate config JSON text: (data, errors, sensor_errors, warnings).
    try:
        given = jsonsafe.loads(text)  # nesting capped: never a MemoryError on the board
    except (ValueError, TypeError) as exc:
        return {}, ["config is not valid JSON: %s" % exc], [], []
    if not isinstance(given, dict):
        return {}, ["config must be a JSON object {...}"], [], []
    return validate(given, board)


def validate(given, board="unix"):
    warnings = []
    c = _Checker()
    data = _merge(DEFAULTS, given, "", warnings)
    for section in ("wifi", "broker", "outbox"):
        sub = data.get(section)
        if not isinstance(sub, dict):
            c.fail("%s must be an object {...}" % section)
            sub = {}
        data[section] = _merge(DEFAULTS[section], sub, section + ".", warnings)

    # A board with no WiFi: MQTT over a UART; seriallink.py checks the section
    # (imported only for such a board).
    serial = data.get("serial_uplink")
    if serial is not None:
        from . import seriallink

        data["serial_uplink"] = serial = seriallink.check_config(serial, c, warnings, _merge, board)

    wifi = data["wifi"]
    if board == "esp32" and serial is None:
        c.text(wifi, "ssid", "wifi.ssid", 1, 32)
        pw = wifi.get("password")
        if pw is None or pw == "":
            pass  # open network
        elif c.text(wifi, "password", "wifi.password", 8, 64, secret=True):
            pass

    broker = data["broker"]
    c.text(broker, "host", "broker.host", 1, 253)
    c.int_range(broker, "port", "broker.port", 1, 65535)
    c.boolean(broker, "tls", "broker.tls")
    c.int_range(broker, "keepalive_s", "broker.keepalive_s", 5, 3600)
    for key in ("user", "password", "ca_file"):
        v = broker.get(key)
        if v is not None:
            c.text(broker, key, "broker." + key, 1, 128, secret=key in _SECRET)
    if broker.get("password") is not None and broker.get("user") is None:
        c.fail("broker.password is set but broker.user is not")

    c.num_range(data, "sample_period_s", "sample_period_s", 0.001, 86400)
    c.num_range(data, "ack_timeout_s", "ack_timeout_s", 0.1, 3600)
    c.int_range(data, "window", "window", 1, 64)
    c.int_range(data, "seq_block", "seq_block", 1, 100000)
    c.num_range(data, "status_period_s", "status_period_s", 1, 86400)
    c.num_range(data, "awake_s", "awake_s", 1, 3600)
    c.num_range(data, "backoff_max_s", "backoff_max_s", 1, 3600)
    c.boolean(data, "deep_sleep", "deep_sleep")
    c.int_range(data, "watchdog_s", "watchdog_s", 0, 3600)
    if data.get("led_pin") is not None:
        c.int_range(data, "led_pin", "led_pin", 0, 48)
    if data.get("log") not in LOG_LEVELS:
        c.fail("log must be one of %s%s" % (", ".join(LOG_LEVELS), _got(data.get("log"))))

    ob = data["outbox"]
    if c.int_range(ob, "segment_bytes", "outbox.segment_bytes", 2048, 65536) and c.int_range(
        ob, "max_bytes", "outbox.max_bytes", 4096, 16 * 1024 * 1024
    ):
        if ob["max_bytes"] < 2 * ob["segment_bytes"]:
            c.fail("outbox.max_bytes must be at least twice outbox.segment_bytes")

    sensor_errors = []
    sensors = data.get("sensors")
    if not isinstance(sensors, list) or not sensors:
        c.fail('sensors must be a list with at least one sensor, e.g. [{"driver": "simulated"}]')
        data["sensors"] = []
    else:
        data["sensors"] = _sensors(sensors, sensor_errors, warnings)
    return data, c.errors, sensor_errors, warnings


def _sensors(sensors, errors, warnings):
    # The usable sensor entries; problems with one sensor go to `errors`.
    good = []
    names = []
    for i, s in enumerate(sensors):
        label = "sensors[%d]" % i
        if not isinstance(s, dict):
            errors.append('%s must be an object like {"driver": "bme280", ...}' % label)
            continue
        drv = s.get("driver")
        if not isinstance(drv, str) or drv not in DRIVERS:
            hint = suggest(drv, DRIVERS)
            errors.append(
                "%s: unknown driver%s; %suse one of %s"
                % (
                    label,
                    _got(drv),
                    "did you mean %s? " % hint if hint else "",
                    ", ".join(sorted(DRIVERS)),
                )
            )
            continue
        label = "%s (%s)" % (label, drv)
        c = _Checker()
        for key in s:
            if key not in _SENSOR_KEYS:
                hint = suggest(key, _SENSOR_KEYS)
                warnings.append(
                    "%s: unknown key %s ignored%s"
                    % (label, key, "; did you mean %s?" % hint if hint else "")
                )
        for key in DRIVERS[drv]:
            if key not in s:
                c.fail('%s needs "%s" (the GPIO number it is wired to)' % (label, key))
            else:
                c.int_range(s, key, label + "." + key, 0, 48)
        if "addr" in s:
            c.int_range(s, "addr", label + ".addr", 0x08, 0x77)
        if "name" in s:
            c.text(s, "name", label + ".name", 1, 12)
        if "divider" in s:
            c.num_range(s, "divider", label + ".divider", 0.01, 1000)
        name = s.get("name") or drv
        if name in names:
            c.fail(
                '%s: another sensor is also called "%s"; give each a distinct "name"'
                % (label, name)
            )
        if c.errors:
            errors.extend(c.errors)
            continue
        names.append(name)
        s = dict(s)  # never mark the caller's dict (or DEFAULTS') with _index
        s["_index"] = i
        good.append(s)
    return good


def load(path, board="unix"):
    # Read and validate the config file at `path`.
    try:
        f = open(path)
    except OSError:
        return (
            {},
            [
                "config file %s not found; copy config.example.json there and "
                "fill in wifi and broker" % path
            ],
            [],
            [],
        )
    try:
        text = f.read()
    finally:
        f.close()
    return parse(text, board)
