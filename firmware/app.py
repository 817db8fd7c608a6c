# The application core: the same code on the ESP32 and on the unix port.
#
# boot: config (validated) -> key (made on first boot) -> outbox (scanned)
#       -> sequence store (never below the outbox) -> sensors -> uplink
# loop: when a reading is due: read every sensor (a failing sensor is logged
#       and skipped, the others still make the reading) -> encode the payload
#       -> sign it (COSE_Sign1) -> append to the outbox (flash) -> publish.
#       In between, the uplink drains the outbox, handles ACKs, republishes
#       and keeps the session and the retained status message up.
#
# The board layer (board/unix.py, board/esp32.py) gives the console, clocks,
# sleep, network and sockets, sensor drivers, watchdog, LED, retained memory
# and deep sleep. Nothing here imports machine, network or socket. Every
# module the app uses stays loaded once imported (the whole set fits the
# ESP32's heap: docs/FIRMWARE.md, "Memory"); status.py and ota_state.py are
# imported on first use only (ota.py, the image's boot, is main.py's).

import gc
from array import array
from binascii import hexlify

from . import config, keystore
from .compat import IS_MICROPYTHON, const, ticks_add, ticks_diff, ticks_ms
from .cose import encode_payload, sign1
from .outbox import Outbox, OutboxError
from .schedule import Schedule
from .seqstore import SeqStore, StoreError
from .uplink import Uplink

MAX_RECORDS = const(16)

_LEVELS = {"error": 0, "info": 1, "debug": 2}
_TIMES = const(64)  # reading durations kept for the median
_CONSOLE_MS = const(50)  # longest wait between two looks at the TP1 console
booted = None  # called once the board has booted (main.py: the flash cache's RAM back)
ota_trial = False  # main.py: this boot runs an OTA image on trial (ota.py)


_TOO_DEEP = "nested too deep or too large for the free memory"


def _load_config(board):
    try:
        return config.load(board.config_path, board.name)
    except MemoryError:  # json.loads on a deeply nested file (issue 14): refuse, carry on
        return {}, ["config is not valid JSON: " + _TOO_DEEP], [], []


class App:
    def __init__(self, board):
        self.board = board
        self.level = 1
        self.errors = []
        self.state = "booting"
        self.cfg = None
        self.addr = None
        self.outbox = None
        self.uplink = None
        self.sensors = []
        self.readings = 0
        self.last_seq = 0
        self.sensor_failures = 0
        self.peak_alloc = 0
        self.times = array("I", bytes(4 * _TIMES))
        self.time_n = 0
        self.mem_errors = 0
        self.live_100 = self.live_last = 0
        self.port = None  # the TP1 console on the REPL UART (board layers that want it)
        self.confirmed = False

    def log(self, level, msg):
        if _LEVELS[level] <= self.level:
            self.board.console(level, msg)

    def error(self, msg):
        # Log an error and list it in the status message.
        errors = self.errors
        msg = msg[:120]
        new = msg not in errors
        if not new:
            errors.remove(msg)
        errors.append(msg)
        if len(errors) > 8:
            errors.pop(0)
        self.log("error", msg)
        if new and self.uplink is not None:
            self.uplink.status_due = True  # a repeated error waits for the next status

    # -- readings ------------------------------------------------------------

    def sample(self):
        # Take, sign and store one reading. Returns its seq or None.
        records = []
        for prefix, drv, label in self.sensors:
            try:
                for quantity, unit, value in drv.read():
                    records.append((prefix + quantity, unit, value))
            except Exception as exc:  # a sensor must never stop the board
                self.sensor_failures += 1
                self.error("%s: %s" % (label, exc))
        if not records:
            return None
        board = self.board
        seq = self.seq.take()
        payload = encode_payload(
            seq, board.now() if board.time_synced else 0, records[:MAX_RECORDS]
        )
        envelope = sign1(self.priv, self.addr, payload)
        dropped = self.outbox.append(seq, envelope)
        self.readings += 1
        self.last_seq = seq
        if dropped:
            self.error(
                "outbox full: dropped the %d oldest readings (%d in total)"
                % (dropped, self.outbox.dropped)
            )
        if self.level > 1:
            self.log("debug", "stored seq %d (%d bytes)" % (seq, len(envelope)))
        return seq

    def status(self):
        # The status message (bytes); status.py is imported on first use.
        from . import status

        return status.encode(self)

    # -- main loop -------------------------------------------------------------

    def run(self, max_readings=-1, exit_when_drained=False):
        # Sample and drain forever, or until max_readings are taken (and, with
        # exit_when_drained, acknowledged). Returns the process exit code.
        board = self.board
        up = self.uplink
        deep_sleep = self.deep_sleep and board.can_deep_sleep
        awake_until = ticks_add(ticks_ms(), self.awake_ms)
        gc.collect()
        while True:
            try:
                code = self._once(max_readings, exit_when_drained, deep_sleep, awake_until)
            except MemoryError:
                # Never let a full heap stop the board: drop the session (its
                # state may be half-written), collect, and carry on.
                self.mem_errors += 1
                up.client.close()
                gc.collect()
                self.error("out of memory; session restarted")
                continue
            if code is not None:
                return code

    def _once(self, max_readings, exit_when_drained, deep_sleep, awake_until):
        # One pass of the main loop; returns an exit code to stop.
        board = self.board
        up = self.uplink
        board.feed()
        if self.port is not None:
            self.port.poll()
        now = ticks_ms()
        wanted = self.sensors and (max_readings < 0 or self.readings < max_readings)
        if wanted and self.schedule.ready(now):
            t0 = board.ticks_us()
            try:
                self.sample()
            except (OSError, OutboxError, StoreError, ValueError) as exc:
                self.error("storing a reading failed: %s" % exc)
            up.step()
            self.times[self.time_n % _TIMES] = ticks_diff(board.ticks_us(), t0)
            self.time_n += 1
            gc.collect()  # the known point: once per reading
            if IS_MICROPYTHON:
                alloc = gc.mem_alloc()
                if alloc > self.peak_alloc:
                    self.peak_alloc = alloc
                if self.readings == 100:
                    self.live_100 = alloc
                self.live_last = alloc
        up.step()
        if exit_when_drained and not wanted and not self.outbox.pending:
            up.close()
            return 0
        if deep_sleep and (not self.outbox.pending or ticks_diff(now, awake_until) > 0):
            up.close(False)
            self.outbox.seal_if_drained()
            self.seq.keep_for_sleep()
            board.deep_sleep(self.schedule.wait_ms(ticks_ms()))
        wait = self.schedule.wait_ms(ticks_ms()) if wanted else 1000
        w = up.wait_ms()
        if w < wait:
            wait = w
        if self.port is not None and wait > _CONSOLE_MS:
            wait = _CONSOLE_MS  # a host on the console is answered while the link backs off
        up.poll(wait)
        return None

    def status_published(self, payload):
        if self.port is not None:
            self.port.event(payload)

    def acked(self):
        # The first application ACK: the whole path works, so an OTA trial
        # image is kept: the marker ota.boot() confirms it by at the next boot
        # (ota.py; no OTA code in the running app).
        self.confirmed = True
        root = self.board.ota_root
        if root is None or not ota_trial:
            return
        try:
            with open(root + "/ota/confirm", "wb") as f:  # ota.CONFIRM_FILE
                f.write(b"1")
        except OSError as exc:  # never stop the board over this
            self.log("error", "ota confirm: %s" % exc)


def _boot(self):
    # Set everything up. Returns True when the board can take readings.
    board = self.board
    cfg, errors, sensor_errors, warnings = _load_config(board)
    gc.collect()
    self.cfg = cfg
    self.config_errors = errors
    if not errors:
        self.level = _LEVELS[cfg["log"]]
        board.configure(cfg)
    for msg in warnings:
        self.log("info", "config: " + msg)
    for msg in errors + sensor_errors:
        self.error("config: " + msg)
    if not cfg:
        return False  # no config at all: do not touch the flash (no key made)
    board.flash_ready()
    try:
        self.priv, pub, self.addr, created = keystore.identity(board.root)
    except Exception as exc:
        self.error("key: %s" % exc)
        self.state = "flash_error"
        return False
    gc.collect()
    self.addr_hex = hexlify(self.addr).decode()
    self.pub_hex = hexlify(pub).decode()
    self.log(
        "info",
        "board address %s%s" % (self.addr_hex, " (new key made on this board)" if created else ""),
    )
    self.log("info", "public key %s" % self.pub_hex)
    if errors:
        self.state = "config_error"
        return False
    try:
        ob = cfg["outbox"]
        self.outbox = Outbox(board.root + "/outbox", ob["max_bytes"], ob["segment_bytes"])
        self.seq = SeqStore(
            board.root + "/seq", cfg["seq_block"], self.outbox.max_seq, board.retained
        )
    except (OSError, OutboxError, StoreError) as exc:
        self.error("flash: %s" % exc)
        self.state = "flash_error"
        return False
    ob = self.outbox
    self.last_seq = ob.max_seq
    if ob.corrupt or ob.torn:
        self.error("outbox: %d corrupt and %d torn records at boot" % (ob.corrupt, ob.torn))
    self.log(
        "info",
        "outbox: %d pending, %d dropped so far; next seq %d"
        % (ob.pending, ob.dropped, self.seq.peek()),
    )
    for i, spec in enumerate(cfg["sensors"]):
        name = spec.get("name") or spec["driver"]
        label = "sensors[%d] (%s)" % (spec.get("_index", i), name)
        try:
            self.sensors.append((name + ".", board.make_sensor(spec), label))
        except Exception as exc:  # missing hardware must not stop the board
            self.error("%s: %s" % (label, exc))
    if not self.sensors:
        self.error("no sensor could be set up; only the status is published")
    self.uplink = Uplink(board, cfg, self.addr_hex, ob, self)
    period = board.period_ms or max(1, int(cfg["sample_period_s"] * 1000))
    self.schedule = Schedule(period, ticks_ms())
    self.deep_sleep = cfg["deep_sleep"]
    self.awake_ms = int(cfg["awake_s"] * 1000)
    if board.console_port:
        from . import status
        from .consoleport import ConsolePort

        stream = board.console_stream  # a line shared with the uplink (sharedline.py)
        self.port = ConsolePort(lambda: status.info(self), board.reset, board.root, stream, stream)
    self.cfg = None  # the rest of the config is not needed any more
    self.state = "online"
    return True


def _report_fatal(self):
    # The config is unusable: publish its errors on the status topic if the
    # broker settings themselves are fine.
    cfg = self.cfg
    if self.addr is None or not cfg:
        return
    for msg in self.config_errors:
        if msg.startswith("broker.") or msg.startswith("wifi."):
            return
    quiet = {
        "broker": cfg["broker"],
        "window": 0,
        "ack_timeout_s": 30,
        "status_period_s": 300,
        "backoff_max_s": 120,
    }
    up = Uplink(self.board, quiet, self.addr_hex, None, self)
    if up.wait_open(20000):
        up.publish_status()
        up.close(False)


def main(board, max_readings=-1, exit_when_drained=False):
    # Boot and run; returns an exit code (2: config or flash error).
    app = App(board)
    if not _boot(app):
        try:
            _report_fatal(app)
        except Exception as exc:
            app.log("error", "could not publish the errors: %s" % exc)
        return 2
    if booted is not None:
        booted()
    code = app.run(max_readings, exit_when_drained)
    from .runstats import stats  # once, after the run: not part of a running board

    board.report_stats(stats(app, min(app.time_n, _TIMES)))
    return code
