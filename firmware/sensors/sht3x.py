# Sensirion SHT3x (SHT30/31/35) over I2C: temperature (Cel), humidity (%RH).
#
# Single shot, high repeatability, no clock stretching (command 0x2400);
# each 16-bit word comes with a CRC-8 (poly 0x31, init 0xFF; the datasheet's
# example: 0xBEEF -> 0x92) which is checked. Conversions from datasheet
# section 4.13: T = -45 + 175 * S_T / 65535, RH = 100 * S_RH / 65535.

from . import SensorError, crc8, sleep_ms

_MEASURE = b"\x24\x00"


def crc(data):
    return crc8(data, 0x31, 0xFF)


def convert(raw):
    # (temperature, humidity) from the 6 bytes the sensor returns.
    if len(raw) != 6:
        raise SensorError("sht3x: short read")
    if crc(raw[0:2]) != raw[2] or crc(raw[3:5]) != raw[5]:
        raise SensorError("sht3x: CRC mismatch (noise on the I2C lines?)")
    st = (raw[0] << 8) | raw[1]
    srh = (raw[3] << 8) | raw[4]
    return -45 + 175 * st / 65535, 100 * srh / 65535


class SHT3x:
    QUANTITIES = (("temperature", "Cel"), ("humidity", "%RH"))

    def __init__(self, bus, addr=0x44):
        self.bus = bus
        self.addr = addr

    def read(self):
        try:
            self.bus.writeto(self.addr, _MEASURE)
            sleep_ms(16)
            raw = self.bus.readfrom(self.addr, 6)
        except OSError:
            raise SensorError("sht3x: no answer at I2C address 0x%02x (check wiring)" % self.addr)
        t, h = convert(raw)
        return [("temperature", "Cel", t), ("humidity", "%RH", h)]
