# Aosong DHT22 / AM2302: temperature (Cel), relative humidity (%RH).
#
# `read_raw()` returns the 5 bytes of one transfer (the board layer gets them
# from MicroPython's `dht` driver). Decoding follows the AM2302 datasheet:
# humidity and temperature in tenths, temperature sign in bit 15, checksum =
# low byte of the sum of the first four bytes (example: 02 8C 01 5F EE ->
# 65.2 %RH, 35.1 Cel).

from . import SensorError


def convert(raw):
    if len(raw) != 5:
        raise SensorError("dht22: short read")
    if (raw[0] + raw[1] + raw[2] + raw[3]) & 0xFF != raw[4]:
        raise SensorError("dht22: checksum mismatch")
    rh = ((raw[0] << 8) | raw[1]) / 10
    t = (((raw[2] & 0x7F) << 8) | raw[3]) / 10
    if raw[2] & 0x80:
        t = -t
    if rh > 100:
        raise SensorError("dht22: humidity %.1f out of range" % rh)
    return t, rh


class DHT22:
    QUANTITIES = (("temperature", "Cel"), ("humidity", "%RH"))

    def __init__(self, read_raw):
        self.read_raw = read_raw

    def read(self):
        try:
            raw = self.read_raw()
        except OSError:
            raise SensorError("dht22: no answer (check wiring and the pull-up)")
        t, h = convert(raw)
        return [("temperature", "Cel", t), ("humidity", "%RH", h)]
