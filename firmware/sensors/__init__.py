# What every sensor driver shares.
#
# A driver is a small class built with a bus object from the board layer
# (machine.I2C, onewire.OneWire, machine.ADC, a DHT reader) or a fake bus in
# tests. `read()` returns a list of (quantity, unit, value) with SenML units
# and raises SensorError when the sensor cannot be read; the application logs
# that and keeps sampling the other sensors. Pure logic: no machine imports.


class SensorError(Exception):
    # The sensor is missing, did not answer, or sent data that fails its check.
    pass


def crc8(data, poly, init, reflected=False):
    # CRC-8 as used by Sensirion (0x31, init 0xFF) and Dallas 1-Wire (0x31 reflected).
    crc = init
    if reflected:
        rpoly = 0
        for i in range(8):
            if poly & (1 << i):
                rpoly |= 0x80 >> i
        for b in data:
            crc ^= b
            for _ in range(8):
                crc = (crc >> 1) ^ rpoly if crc & 1 else crc >> 1
        return crc
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def sleep_ms(ms):
    try:
        from time import sleep_ms as _sleep

        _sleep(ms)
    except ImportError:
        import time

        time.sleep(ms / 1000)
